import { PermanentError } from '../errors.js';
import type { BaseManifest, ServerStatus, WalEntry } from './wal-archive.js';
import {
  SEGMENT_NAME,
  formatLsn,
  parseLsn,
  parseSegmentName,
  segmentEnd,
  segmentName,
  segmentOf,
} from './wal-names.js';

/*
 * What a server's archive can recover: from the oldest base backup whose WAL runs unbroken to the
 * newest archived WAL. Gaps (a missing segment) and WAL of another timeline are errors, said by name.
 */

export interface RecoveryWindow {
  server: string;
  envs: Record<string, string>;
  timeline?: number;
  /** The earliest moment a restore can reach (the oldest usable base backup's end), and the latest. */
  from?: string;
  to?: string;
  fromLsn?: string;
  toLsn?: string;
  baseBackups: { id: string; completedAt: string; startLsn: string; stopLsn: string; sizeBytes: number }[];
  segments: number;
  errors: string[];
  /** Seconds since the store last held everything the server had written (the recovery point objective). */
  rpoSeconds?: number;
}

export type RecoveryTarget = { time: string } | { lsn: string } | { latest: true };

interface Chain {
  timeline: number;
  segmentBytes: number;
  complete: Map<bigint, WalEntry>;
  partial?: { number: bigint; entry: WalEntry };
  last: bigint;
  missing: bigint[];
}

function chainOf(entries: WalEntry[], timeline: number, segmentBytes: number, first: bigint): Chain {
  const complete = new Map<bigint, WalEntry>();
  let partial: Chain['partial'];
  for (const entry of entries) {
    if (!SEGMENT_NAME.test(entry.name)) continue;
    const segment = parseSegmentName(entry.name, segmentBytes);
    if (segment.timeline !== timeline) continue;
    if (entry.partial) {
      const further =
        !partial ||
        segment.number > partial.number ||
        (segment.number === partial.number &&
          parseLsn(entry.flushLsn ?? '0/0') > parseLsn(partial.entry.flushLsn ?? '0/0'));
      if (further) partial = { number: segment.number, entry };
    } else complete.set(segment.number, entry);
  }
  let last = first - 1n;
  for (const number of complete.keys()) if (number > last) last = number;
  const missing: bigint[] = [];
  for (let number = first; number <= last; number += 1n) if (!complete.has(number)) missing.push(number);
  // A partial segment counts only where it continues the complete ones.
  if (partial && partial.number !== last + 1n) partial = undefined;
  return { timeline, segmentBytes, complete, partial, last, missing };
}

function gapText(chain: Chain, number: bigint): string {
  const start = number * BigInt(chain.segmentBytes);
  return `missing WAL segment ${segmentName({ timeline: chain.timeline, number }, chain.segmentBytes)} (${formatLsn(start)} to ${formatLsn(start + BigInt(chain.segmentBytes))})`;
}

/** The archive's end: the last complete segment's end, or as far as the partial one was received. */
function chainEnd(chain: Chain): { lsn: bigint; at?: string } {
  if (chain.partial?.entry.flushLsn)
    return { lsn: parseLsn(chain.partial.entry.flushLsn), at: chain.partial.entry.archivedAt };
  const last = chain.complete.get(chain.last);
  return {
    lsn: segmentEnd({ timeline: chain.timeline, number: chain.last }, chain.segmentBytes),
    at: last?.archivedAt,
  };
}

export function recoveryWindow(
  server: string,
  bases: BaseManifest[],
  entries: WalEntry[],
  status: ServerStatus | undefined,
  now = new Date(),
): RecoveryWindow {
  const newest = bases.at(-1);
  const envs = status?.envs ?? newest?.envs ?? {};
  const window: RecoveryWindow = {
    server,
    envs,
    baseBackups: bases.map((base) => ({
      id: base.id,
      completedAt: base.completedAt,
      startLsn: base.startLsn,
      stopLsn: base.stopLsn,
      sizeBytes: base.sizeBytes,
    })),
    segments: entries.filter((entry) => !entry.partial && SEGMENT_NAME.test(entry.name)).length,
    errors: [],
  };
  if (status) window.rpoSeconds = Math.max(0, Math.round((now.getTime() - Date.parse(status.caughtUpAt)) / 1000));
  if (!newest) {
    window.errors.push('no base backup: nothing can be recovered yet (run backup --physical)');
    return window;
  }
  const segmentBytes = newest.walSegmentBytes;
  const timeline = newest.timeline;
  window.timeline = timeline;
  for (const entry of entries) {
    if (!SEGMENT_NAME.test(entry.name)) continue;
    const other = parseSegmentName(entry.name, segmentBytes).timeline;
    if (other !== timeline) {
      window.errors.push(
        `WAL of timeline ${other} beside timeline ${timeline} (a timeline switch): restores follow timeline ${timeline} only`,
      );
      break;
    }
  }
  const onTimeline = bases.filter((base) => base.timeline === timeline);
  // A base backup holds the WAL up to its own end (pg_basebackup -X stream): the archive is needed from there on.
  const first = segmentOf(parseLsn(onTimeline[0]!.stopLsn), timeline, segmentBytes).number;
  const chain = chainOf(entries, timeline, segmentBytes, first);
  for (const number of chain.missing) window.errors.push(gapText(chain, number));
  // Each base backup reaches as far as the first gap after its end: the window is the one that reaches
  // furthest (the newest base backup's), from the oldest base backup that reaches as far.
  const reach = (base: BaseManifest) =>
    chain.missing.find((number) => number > segmentOf(parseLsn(base.stopLsn), timeline, segmentBytes).number);
  const furthest = reach(onTimeline.at(-1)!);
  const usable = onTimeline.find((base) => reach(base) === furthest)!;
  window.from = usable.completedAt;
  window.fromLsn = usable.stopLsn;
  let end: { lsn: bigint; at?: string };
  let caughtUp: string | undefined;
  if (furthest === undefined) {
    end = chainEnd(chain);
    // The archiver's recovery point says up to when everything is archived; without it, the newest file's time.
    caughtUp = status && status.timeline === timeline ? status.caughtUpAt : end.at;
  } else {
    end = { lsn: furthest * BigInt(segmentBytes), at: chain.complete.get(furthest - 1n)?.archivedAt };
    caughtUp = end.at;
  }
  window.toLsn = formatLsn(end.lsn > parseLsn(usable.stopLsn) ? end.lsn : parseLsn(usable.stopLsn));
  window.to = [caughtUp, usable.completedAt]
    .filter((at): at is string => at !== undefined)
    .sort()
    .at(-1);
  return window;
}

export interface RecoveryPlan {
  base: BaseManifest;
  /** The WAL to fetch, in order; a partial segment last (it is fetched under its segment's name). */
  wal: WalEntry[];
  history: WalEntry[];
  window: RecoveryWindow;
}

/**
 * The base backup and WAL that reach `target`, or a refusal naming the range that is available or the
 * gap in the way: decided before anything is fetched or touched.
 */
export function planRecovery(
  server: string,
  bases: BaseManifest[],
  entries: WalEntry[],
  status: ServerStatus | undefined,
  target: RecoveryTarget,
): RecoveryPlan {
  const window = recoveryWindow(server, bases, entries, status);
  const range = () =>
    window.from
      ? `recoverable from ${window.from} (${window.fromLsn}) to ${window.to} (${window.toLsn})`
      : 'nothing is recoverable';
  if (!window.from || !window.timeline)
    throw new PermanentError(`no point-in-time recovery possible: ${window.errors.join('; ')}`);
  const timeline = window.timeline;
  const segmentBytes = bases.at(-1)!.walSegmentBytes;
  const candidates = bases.filter((base) => base.timeline === timeline);
  let base: BaseManifest | undefined;
  if ('time' in target) {
    const at = Date.parse(target.time);
    if (Number.isNaN(at)) throw new PermanentError(`not a time: "${target.time}"`);
    if (at < Date.parse(window.from) || at > Date.parse(window.to!))
      throw new PermanentError(`${target.time} is outside the archived range: ${range()}`);
    base = candidates.filter((candidate) => Date.parse(candidate.completedAt) <= at).at(-1);
  } else if ('lsn' in target) {
    const lsn = parseLsn(target.lsn);
    if (lsn < parseLsn(window.fromLsn!) || lsn > parseLsn(window.toLsn!))
      throw new PermanentError(`${target.lsn} is outside the archived range: ${range()}`);
    base = candidates.filter((candidate) => parseLsn(candidate.stopLsn) <= lsn).at(-1);
  } else {
    base = candidates.at(-1);
  }
  if (!base) throw new PermanentError(`no base backup ends before the target: ${range()}`);
  const first = segmentOf(parseLsn(base.stopLsn), timeline, segmentBytes).number;
  const chain = chainOf(entries, timeline, segmentBytes, first);
  // The last segment the target needs: the one holding the position; for a time, the first archived at
  // or after it (every record written before then is in it or before it).
  let needed = chain.partial ? chain.partial.number : chain.last;
  if ('lsn' in target) needed = segmentOf(parseLsn(target.lsn), timeline, segmentBytes).number;
  if ('time' in target) {
    const at = Date.parse(target.time);
    for (let number = first; number <= chain.last; number += 1n) {
      const entry = chain.complete.get(number);
      if (entry && Date.parse(entry.archivedAt) >= at) {
        needed = number;
        break;
      }
    }
  }
  if (needed < first) needed = first;
  const wal: WalEntry[] = [];
  // Up to its end the base backup has its own WAL: nothing archived past it is then needed.
  const ownEnd = needed === first && !chain.complete.has(first) && chain.partial?.number !== first;
  for (let number = first; number <= needed && !ownEnd; number += 1n) {
    const entry = chain.complete.get(number) ?? (chain.partial?.number === number ? chain.partial.entry : undefined);
    if (!entry)
      throw new PermanentError(
        `the WAL from base backup ${base.id} to the target has a gap: ${gapText(chain, number)}; nothing was changed`,
      );
    wal.push(entry);
  }
  const history = entries.filter((entry) => !SEGMENT_NAME.test(entry.name));
  return { base, wal, history, window };
}
