import { createHash, createHmac, hkdfSync } from 'node:crypto';
import { canonicalJson } from '../backups/signing.js';
import { keyId } from '../backups/encryption.js';
import { ValidationError } from '../errors.js';
import type { JobFilter } from './job-filter.js';
import type { Requester } from './requester.js';

/*
 * One entry of the job history: what a finished job was, who asked, what it did. Entries form a chain:
 * each carries the hash of the one before, and its own hash over everything it says (an HMAC with a
 * key derived from the signing key when dbops has one), so a changed, removed or inserted entry breaks
 * the chain at that point.
 */

export const HISTORY_STATES = ['completed', 'failed', 'cancelled'] as const;
export type HistoryState = (typeof HISTORY_STATES)[number];

/** An entry before the store numbers and chains it. */
export interface HistoryDraft {
  /** When the job ended (the entry's time, what --since and --until compare). */
  at: string;
  id: string;
  /** `<type>/<id>`. */
  reference: string;
  type: string;
  /** The environment the job changed or worked on (a copy's target); null for none. */
  env: string | null;
  /** Every environment the payload names (a copy's source and target). */
  envs: string[];
  state: HistoryState;
  /** In words, e.g. `alice@db1 (CLI)`. */
  requestedBy: string;
  requester: Requester;
  requestedAt: string | null;
  startedAt: string | null;
  durationMs: number | null;
  attempts: number;
  /** The payload's plain fields, secrets scrubbed, `confirm` left out. */
  payload: Record<string, string | number | boolean | null>;
  /** One line: what the job did, or why it failed. */
  outcome: string;
  /** The result's plain facts: the backup and its size, the database replaced and where the previous one went. */
  facts: Record<string, string | number | boolean>;
  /** Who cancelled it, for a job cancelled before it started. */
  cancelledBy?: string;
}

export interface HistoryEntry extends HistoryDraft {
  seq: number;
  /** `sha256`, or `hmac-sha256:<key id>` when dbops had a signing key. */
  chain: string;
  prev: string;
  hash: string;
}

export const GENESIS = '0'.repeat(64);

/** The key a history chain is made with: derived from the signing key, never the key itself. */
export interface ChainKey {
  key: Buffer;
  id: string;
}

export function chainKeyFrom(signingKey: Buffer | undefined): ChainKey | undefined {
  if (!signingKey) return undefined;
  const key = Buffer.from(hkdfSync('sha256', signingKey, Buffer.alloc(0), 'dbops history chain', 32));
  return { key, id: keyId(key) };
}

export function chainName(key: ChainKey | undefined): string {
  return key ? `hmac-sha256:${key.id}` : 'sha256';
}

/** The hash an entry must carry: over every field but `hash`, made as its `chain` says. */
export function entryHash(entry: Omit<HistoryEntry, 'hash'>, key: ChainKey | undefined): string {
  const text = canonicalJson({ ...entry, hash: undefined });
  return entry.chain === 'sha256' || !key
    ? createHash('sha256').update(text).digest('hex')
    : createHmac('sha256', key.key).update(text).digest('hex');
}

/*
 * The search index, kept 1,000 entries to a string so that a search reads a whole history in a few
 * round trips instead of one per entry (the entries themselves are read only for the page found):
 *   facets:  one line per entry, `seq \t at(ms) \t type \t state \t envs`     (small: filters by field)
 *   text:    one line per entry, `seq \t what it says, lowercase`           (searched as bytes, undecoded)
 */
export const INDEX_BLOCK = 1_000;

const oneLine = (text: string) => text.replace(/[\t\n\r]+/g, ' ');

export function facetLine(entry: HistoryEntry): string {
  return `${entry.seq}\t${Date.parse(entry.at)}\t${oneLine(entry.type)}\t${entry.state}\t${oneLine(entry.envs.join(','))}\n`;
}

/** What --search looks in: the job, who asked and cancelled, the payload's values, the outcome, the result's facts. */
export function textLine(entry: HistoryEntry): string {
  const text = [
    entry.reference,
    entry.requestedBy,
    entry.cancelledBy ?? '',
    ...Object.values(entry.payload).map(String),
    entry.outcome,
    ...Object.values(entry.facts).map(String),
  ].join(' ');
  return `${entry.seq}\t${oneLine(text.toLowerCase())}\n`;
}

export interface FacetLine {
  seq: number;
  atMs: number;
  type: string;
  state: string;
  envs: string[];
}

export function parseFacetLine(line: string): FacetLine | undefined {
  const [seq, at, type, state, envs] = line.split('\t');
  if (envs === undefined) return undefined;
  return { seq: Number(seq), atMs: Number(at), type: type!, state: state!, envs: envs ? envs.split(',') : [] };
}

export type HistoryFilter = Omit<JobFilter, 'states'> & { states?: HistoryState[] };

/** A history filter from a job filter: the states are those an entry can have. */
export function historyFilterOf(filter: JobFilter): HistoryFilter {
  for (const state of filter.states ?? [])
    if (!(HISTORY_STATES as readonly string[]).includes(state))
      throw new ValidationError(`state: the history holds finished jobs only (one of ${HISTORY_STATES.join(', ')})`);
  return filter as HistoryFilter;
}

/** The text a filter searches for, on one line as the index holds every entry's text. */
export function searchedText(filter: Pick<HistoryFilter, 'text'>): string | undefined {
  return filter.text ? oneLine(filter.text) : undefined;
}

/** Whether the filter asks anything of an entry's fields (beside its text). */
export function filtersFacets(filter: HistoryFilter): boolean {
  return Boolean(filter.types || filter.states || filter.env || filter.since || filter.until);
}

/** Whether a facet line matches the filter's fields (the text is checked apart). */
export function facetsMatch(line: FacetLine, filter: HistoryFilter): boolean {
  if (filter.types && !filter.types.includes(line.type as never)) return false;
  if (filter.states && !filter.states.includes(line.state as HistoryState)) return false;
  if (filter.env && !line.envs.includes(filter.env)) return false;
  if (filter.since && !(line.atMs >= filter.since.getTime())) return false;
  if (filter.until && !(line.atMs < filter.until.getTime())) return false;
  return true;
}

/** The exact test, on the entry itself: its index lines, made afresh, must match. */
export function matchesEntry(entry: HistoryEntry, filter: HistoryFilter): boolean {
  const facets = parseFacetLine(facetLine(entry).slice(0, -1));
  if (!facets || !facetsMatch(facets, filter)) return false;
  const text = searchedText(filter);
  return (
    !text ||
    textLine(entry)
      .slice(String(entry.seq).length + 1)
      .includes(text)
  );
}
