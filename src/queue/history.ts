import type { Config } from '../config.js';
import type { RedisConnection } from './connection.js';
import {
  GENESIS,
  INDEX_BLOCK,
  chainKeyFrom,
  chainName,
  entryHash,
  facetLine,
  facetsMatch,
  filtersFacets,
  matchesEntry,
  parseFacetLine,
  searchedText,
  textLine,
  type ChainKey,
  type HistoryDraft,
  type HistoryEntry,
  type HistoryFilter,
} from './history-entry.js';

/*
 * The job history in Redis, under the queue prefix (so it lives as long as Redis' persistence keeps
 * it, and beyond BullMQ's retention of jobs):
 *   history:entries   hash, seq -> entry JSON           history:head    "seq hash" of the newest
 *   history:facets:N  history:text:N  block N's index    history:first   the oldest seq kept
 *   history:anchor    "seq hash" of the last entry removed by retention (the chain goes on from it)
 * dbops only appends, and removes whole blocks past HISTORY_RETENTION_DAYS or HISTORY_MAX_ENTRIES.
 */

/** Adds an entry when the head is still the one its hash was made on; else answers the head. */
const APPEND = `
local head = redis.call('GET', KEYS[1]) or ''
if head ~= ARGV[1] then return {0, head} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('APPEND', KEYS[3], ARGV[5])
redis.call('APPEND', KEYS[4], ARGV[6])
redis.call('SET', KEYS[1], ARGV[4])
return {1, ''}`;

/** Removes block ARGV[2] (entries ARGV[1]..ARGV[3]) when it is still the oldest, and anchors the chain on its last entry. */
const TRIM = `
local first = tonumber(redis.call('GET', KEYS[1]) or '1')
if first ~= tonumber(ARGV[1]) then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[3])
if not last then return 0 end
for seq = first, tonumber(ARGV[3]) do redis.call('HDEL', KEYS[2], tostring(seq)) end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. cjson.decode(last).hash)
redis.call('SET', KEYS[1], tostring(tonumber(ARGV[3]) + 1))
return 1`;

export interface ChainReport {
  ok: boolean;
  entries: number;
  first: number | null;
  last: number | null;
  /** How the chain was checked: with the key derived from the signing key, or by plain hashes only. */
  keyed: boolean;
  /** What does not hold, at most 20, each naming the entry. */
  problems: string[];
}

const headOf = (text: string | null | undefined) => {
  const [seq, hash] = (text ?? '').split(' ');
  return { seq: Number(seq) || 0, hash: hash || GENESIS };
};

const blockOf = (seq: number) => Math.floor((seq - 1) / INDEX_BLOCK);

/** Checks entries in order: numbering, links, hashes. Shared by the store's check and an export's. */
export class ChainCheck {
  private expectedSeq: number | undefined;
  private previousHash: string | undefined;
  readonly problems: string[] = [];
  count = 0;
  firstSeq: number | null = null;
  lastSeq: number | null = null;

  constructor(
    private readonly key: ChainKey | undefined,
    anchor?: { seq: number; hash: string },
  ) {
    if (anchor) {
      this.expectedSeq = anchor.seq + 1;
      this.previousHash = anchor.hash;
    }
  }

  problem(text: string): void {
    if (this.problems.length < 20) this.problems.push(text);
    else if (this.problems.length === 20) this.problems.push('… (more problems not listed)');
  }

  add(entry: HistoryEntry | undefined, seq?: number): void {
    if (!entry) {
      this.problem(`entry ${seq ?? this.expectedSeq ?? '?'} is missing`);
      this.expectedSeq = undefined;
      this.previousHash = undefined;
      return;
    }
    this.count += 1;
    this.firstSeq ??= entry.seq;
    this.lastSeq = entry.seq;
    if (this.expectedSeq !== undefined && entry.seq !== this.expectedSeq)
      this.problem(`entry ${entry.seq} comes where entry ${this.expectedSeq} should`);
    if (this.previousHash !== undefined && entry.prev !== this.previousHash)
      this.problem(`entry ${entry.seq} does not follow the entry before it (its link was changed, or that entry was)`);
    if (entry.chain !== 'sha256' && (!this.key || entry.chain !== chainName(this.key)))
      this.problem(`entry ${entry.seq} was made with another key (${entry.chain}): cannot check it here`);
    else if (entryHash(entry, this.key) !== entry.hash)
      this.problem(`entry ${entry.seq} was changed after it was written`);
    this.expectedSeq = entry.seq + 1;
    this.previousHash = entry.hash;
  }

  /** The newest entry must be the head the store recorded (a removed newest entry shows here). */
  end(head?: { seq: number; hash: string }): void {
    if (head && (head.seq !== (this.lastSeq ?? 0) || (head.seq > 0 && head.hash !== this.previousHash)))
      this.problem(`the history's head is entry ${head.seq}, its newest entry is ${this.lastSeq ?? 'none'}`);
  }

  report(): ChainReport {
    return {
      ok: this.problems.length === 0,
      entries: this.count,
      first: this.firstSeq,
      last: this.lastSeq,
      keyed: Boolean(this.key),
      problems: this.problems,
    };
  }
}

export function parseEntry(text: string | null | undefined): HistoryEntry | undefined {
  if (!text) return undefined;
  try {
    const entry = JSON.parse(text) as HistoryEntry;
    return typeof entry.seq === 'number' && typeof entry.hash === 'string' ? entry : undefined;
  } catch {
    return undefined;
  }
}

export class History {
  private readonly key: ChainKey | undefined;
  private readonly prefix: string;

  constructor(
    private readonly connection: RedisConnection,
    private readonly config: Pick<
      Config,
      'QUEUE_PREFIX' | 'signingKey' | 'HISTORY_RETENTION_DAYS' | 'HISTORY_MAX_ENTRIES'
    >,
  ) {
    this.key = chainKeyFrom(config.signingKey?.key);
    this.prefix = `${config.QUEUE_PREFIX}:dbops:history`;
  }

  private keyOf(part: string): string {
    return `${this.prefix}:${part}`;
  }

  private facetsKey(block: number): string {
    return this.keyOf(`facets:${block}`);
  }

  private textKey(block: number): string {
    return this.keyOf(`text:${block}`);
  }

  /** Adds an entry at the end of the chain; concurrent writers (every worker) take turns by retrying. */
  async append(draft: HistoryDraft): Promise<HistoryEntry> {
    for (;;) {
      const headText = (await this.connection.get(this.keyOf('head'))) ?? '';
      const head = headOf(headText);
      const unhashed: Omit<HistoryEntry, 'hash'> = {
        ...draft,
        seq: head.seq + 1,
        chain: chainName(this.key),
        prev: head.hash,
      };
      const entry: HistoryEntry = { ...unhashed, hash: entryHash(unhashed, this.key) };
      const [added] = (await this.connection.eval(
        APPEND,
        4,
        this.keyOf('head'),
        this.keyOf('entries'),
        this.facetsKey(blockOf(entry.seq)),
        this.textKey(blockOf(entry.seq)),
        headText,
        String(entry.seq),
        JSON.stringify(entry),
        `${entry.seq} ${entry.hash}`,
        facetLine(entry),
        textLine(entry),
      )) as [number, string];
      if (added === 1) {
        if (entry.seq % INDEX_BLOCK === 0) await this.trim();
        return entry;
      }
    }
  }

  /** Removes the oldest blocks past retention (by age of their newest entry, or by count). */
  async trim(now = Date.now()): Promise<number> {
    let removed = 0;
    for (;;) {
      const first = Number(await this.connection.get(this.keyOf('first'))) || 1;
      const head = headOf(await this.connection.get(this.keyOf('head')));
      const block = blockOf(first);
      const blockEnd = (block + 1) * INDEX_BLOCK;
      if (blockEnd >= head.seq) return removed; // never the block being written
      const lines = ((await this.connection.get(this.facetsKey(block))) ?? '').trimEnd().split('\n');
      const newest = parseFacetLine(lines.at(-1) ?? '');
      const tooOld = newest !== undefined && newest.atMs < now - this.config.HISTORY_RETENTION_DAYS * 86_400_000;
      const tooMany = head.seq - first + 1 > this.config.HISTORY_MAX_ENTRIES;
      if (!tooOld && !tooMany) return removed;
      const done = await this.connection.eval(
        TRIM,
        5,
        this.keyOf('first'),
        this.keyOf('entries'),
        this.keyOf('anchor'),
        this.facetsKey(block),
        this.textKey(block),
        String(first),
        String(block),
        String(blockEnd),
      );
      if (done !== 1) return removed;
      removed += blockEnd - first + 1;
    }
  }

  /** Entries in seq order from `from` to `to`, read 1,000 at a time; a missing one is undefined. */
  private async *range(from: number, to: number): AsyncGenerator<[number, HistoryEntry | undefined]> {
    for (let start = from; start <= to; start += INDEX_BLOCK) {
      const seqs = Array.from({ length: Math.min(INDEX_BLOCK, to - start + 1) }, (_, i) => String(start + i));
      const texts = await this.connection.hmget(this.keyOf('entries'), ...seqs);
      for (let i = 0; i < seqs.length; i += 1) yield [start + i, parseEntry(texts[i])];
    }
  }

  /** Every entry kept, oldest first (the export). */
  async *entries(): AsyncGenerator<HistoryEntry> {
    const [first, head] = await this.bounds();
    for await (const [, entry] of this.range(first, head.seq)) if (entry) yield entry;
  }

  private async bounds(): Promise<[number, { seq: number; hash: string }]> {
    const [first, head] = await this.connection.mget(this.keyOf('first'), this.keyOf('head'));
    return [Number(first) || 1, headOf(head)];
  }

  /**
   * The newest entries that match, newest first. With no filter, the newest seqs are the answer; else
   * blocks are read newest first, a few per round trip and the next batch asked for while one is
   * looked at: the facet lines when a field is filtered, the text as bytes when text is searched (a
   * block without the text anywhere is passed over undecoded).
   */
  async search(filter: HistoryFilter): Promise<HistoryEntry[]> {
    const [first, head] = await this.bounds();
    if (head.seq < first) return [];
    const text = searchedText(filter);
    const needle = text ? Buffer.from(text) : undefined;
    const facets = filtersFacets(filter);
    if (!facets && !needle) {
      const seqs = Array.from({ length: Math.min(filter.limit, head.seq - first + 1) }, (_, i) => head.seq - i);
      return this.entriesMatching(seqs, filter);
    }
    const BATCH = 10;
    const oldest = blockOf(first);
    type Batch = { blocks: number[]; facetTexts?: (string | null)[]; textBuffers?: (Buffer | null)[] };
    const read = (newest: number): Promise<Batch> => {
      const blocks = Array.from({ length: Math.min(BATCH, newest - oldest + 1) }, (_, i) => newest - i);
      return Promise.all([
        facets ? this.connection.mget(...blocks.map((block) => this.facetsKey(block))) : undefined,
        needle ? this.connection.mgetBuffer(...blocks.map((block) => this.textKey(block))) : undefined,
      ]).then(([facetTexts, textBuffers]) => ({ blocks, facetTexts, textBuffers }));
    };
    // Entries are in the order they were written, near enough that of their times (hosts' clocks differ
    // a little): a block that begins well before --since is the last one read.
    const stopBefore = filter.since ? filter.since.getTime() - 10 * 60_000 : undefined;
    const found: HistoryEntry[] = [];
    let next = read(blockOf(head.seq)) as Promise<Batch> | undefined;
    while (next && found.length < filter.limit) {
      const { blocks, facetTexts, textBuffers }: Batch = await next;
      const after: number = blocks.at(-1)! - 1;
      next = after >= oldest ? read(after) : undefined;
      for (let b = 0; b < blocks.length && found.length < filter.limit; b += 1) {
        const facetLines = facetTexts?.[b]?.split('\n');
        const oldestLine = facetLines ? parseFacetLine(facetLines[0] ?? '') : undefined;
        const passedSince = stopBefore !== undefined && oldestLine !== undefined && oldestLine.atMs < stopBefore;
        let candidates: number[] | undefined;
        if (facetLines) {
          candidates = [];
          for (let i = facetLines.length - 1; i >= 0; i -= 1) {
            const line = parseFacetLine(facetLines[i]!);
            if (line && facetsMatch(line, filter)) candidates.push(line.seq);
          }
        }
        if (needle && candidates?.length !== 0) {
          const buffer = textBuffers?.[b];
          const texts = new Map<number, string>();
          if (buffer && buffer.indexOf(needle) !== -1) {
            for (const line of buffer.toString('utf8').split('\n')) {
              const tab = line.indexOf('\t');
              if (tab > 0 && line.includes(text!, tab + 1)) texts.set(Number(line.slice(0, tab)), line);
            }
          }
          candidates = candidates
            ? candidates.filter((seq) => texts.has(seq))
            : [...texts.keys()].sort((x, y) => y - x);
        }
        if (candidates?.length)
          found.push(...(await this.entriesMatching(candidates.slice(0, filter.limit - found.length), filter)));
        if (passedSince && next) {
          next.catch(() => undefined); // the batch already asked for is not needed
          next = undefined;
        }
      }
    }
    await next?.catch(() => undefined);
    return found.slice(0, filter.limit);
  }

  /** The entries of these seqs that match the filter, checked on the entries themselves. */
  private async entriesMatching(seqs: number[], filter: HistoryFilter): Promise<HistoryEntry[]> {
    if (seqs.length === 0) return [];
    const texts = await this.connection.hmget(this.keyOf('entries'), ...seqs.map(String));
    return texts
      .map(parseEntry)
      .filter((entry): entry is HistoryEntry => Boolean(entry && matchesEntry(entry, filter)));
  }

  /** Checks the whole chain kept, from the anchor retention left to the head, and the index beside it. */
  async verify(): Promise<ChainReport> {
    const [first, head] = await this.bounds();
    const anchorText = await this.connection.get(this.keyOf('anchor'));
    const check = new ChainCheck(this.key, anchorText ? headOf(anchorText) : { seq: first - 1, hash: GENESIS });
    let facets = new Map<number, string>();
    let texts = new Map<number, string>();
    for await (const [seq, entry] of this.range(first, head.seq)) {
      check.add(entry, seq);
      if ((seq - 1) % INDEX_BLOCK === 0 || seq === first) {
        const [facetText, text] = await this.connection.mget(this.facetsKey(blockOf(seq)), this.textKey(blockOf(seq)));
        [facets, texts] = [linesBySeq(facetText), linesBySeq(text)];
      }
      if (entry && (facets.get(seq) !== facetLine(entry) || texts.get(seq) !== textLine(entry)))
        check.problem(`entry ${seq}'s search index does not match it`);
    }
    check.end(head);
    return check.report();
  }
}

function linesBySeq(text: string | null | undefined): Map<number, string> {
  return new Map(
    (text ?? '')
      .split('\n')
      .filter(Boolean)
      .map((line) => [Number(line.slice(0, line.indexOf('\t'))), `${line}\n`]),
  );
}
