import { readdir } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { PermanentError } from '../errors.js';
import { toolPath } from '../postgres/tools.js';
import { SEGMENT_NAME, formatLsn, parseLsn } from './wal-names.js';
import type { RecoveryTarget } from './window.js';

/*
 * Replaying CREATE TABLESPACE makes the recovering server link pg_tblspc/<oid> to the tablespace's
 * directory as the source server named it, and write there: on the source's own host, as its OS user,
 * that is the live server's directory. A recovery instance must never replay one. Tablespaces that
 * exist when a base backup is taken are inside it (base-backup.ts) and linked into the instance's own
 * directory; one created after it would be created where the source has it. pg_waldump reads the WAL
 * a restore would replay for such records before the instance starts.
 */

export interface TablespaceCreation {
  oid: number;
  location: string;
  lsn: string;
}

const LSN_FIELD = /lsn: ([0-9A-F]+\/[0-9A-F]+),/;
const CREATE = /desc: CREATE (\d+) "(.*)"$/;
// pg_waldump prints a transaction's end time in its own time zone (TZ=UTC here), to the microsecond.
const END = /desc: (?:COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,6}))? UTC/;
const END_OF_WAL = /error in WAL record at/;

function micros(time: string, fraction = ''): bigint {
  return BigInt(Date.parse(`${time.replace(' ', 'T')}Z`)) * 1000n + BigInt(fraction.padEnd(6, '0'));
}

/**
 * Runs pg_waldump over `dir`'s segments, first to last, for the records of resource manager `rmgr`, and
 * hands `onRecord` each record line, with its position, until it returns true (pg_waldump is then
 * stopped): the output of a busy day's WAL is never held whole.
 */
async function scan(
  binDir: string | undefined,
  dir: string,
  rmgr: string,
  signal: AbortSignal,
  onRecord: (line: string, lsn: bigint) => boolean,
): Promise<void> {
  const segments = (await readdir(dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
  if (segments.length === 0) return;
  const child = execa(
    toolPath('pg_waldump', binDir),
    [`--path=${dir}`, `--rmgr=${rmgr}`, segments[0]!, segments.at(-1)!],
    { cancelSignal: signal, reject: false, buffer: { stdout: false }, env: { TZ: 'UTC', LANG: 'C' }, extendEnv: false },
  );
  let done = false;
  for await (const line of createInterface({ input: child.stdout })) {
    const position = LSN_FIELD.exec(line)?.[1];
    if (position !== undefined && onRecord(line, parseLsn(position))) {
      done = true;
      child.kill();
      break;
    }
  }
  const run = await child;
  if (run.isCanceled) signal.throwIfAborted();
  if (run.exitCode === undefined && !done)
    throw new PermanentError(`pg_waldump could not run: ${run.originalMessage ?? run.shortMessage}`);
  // The last segment may be one still being written, zeros after its last record: the WAL ends there.
  if (!done && run.exitCode !== 0 && !END_OF_WAL.test(run.stderr))
    throw new PermanentError(`pg_waldump could not read the WAL to replay: ${run.stderr.trim().split('\n').at(-1)}`);
}

/**
 * The CREATE TABLESPACE records recovery from `from` (the base backup's start) to `target` would replay
 * from the segments in `dirs` (in the order recovery reads them). Recovery to a position stops at it;
 * to a time, before the first transaction that ended after it.
 */
export async function tablespacesCreated(
  binDir: string | undefined,
  dirs: string[],
  from: string,
  target: RecoveryTarget,
  signal: AbortSignal,
): Promise<TablespaceCreation[]> {
  const start = parseLsn(from);
  const end = 'lsn' in target ? parseLsn(target.lsn) : undefined;
  // By position: the base backup's WAL and the archive's overlap, and a record is counted once.
  const found = new Map<bigint, TablespaceCreation>();
  for (const dir of dirs)
    await scan(binDir, dir, 'Tablespace', signal, (line, lsn) => {
      const created = CREATE.exec(line);
      if (created && lsn >= start && !(end !== undefined && lsn > end))
        found.set(lsn, { oid: Number(created[1]), location: created[2]!, lsn: formatLsn(lsn) });
      return false;
    });
  const positions = [...found.keys()].sort((a, b) => (a < b ? -1 : 1));
  if (positions.length === 0 || !('time' in target)) return positions.map((lsn) => found.get(lsn)!);
  // To a time: only the creations before the first transaction that ended after it are replayed. The
  // transactions are read only this far, and only when there is a creation at all.
  const limit = BigInt(Date.parse(target.time)) * 1000n;
  const last = positions.at(-1)!;
  let stop: bigint | undefined;
  let past = false;
  for (const dir of dirs) {
    await scan(binDir, dir, 'Transaction', signal, (line, lsn) => {
      past = lsn > last;
      const ended = END.exec(line);
      if (!past && ended && lsn >= start && micros(ended[1]!, ended[2]) > limit) stop = lsn;
      return past || stop !== undefined;
    });
    if (past || stop !== undefined) break;
  }
  return positions.filter((lsn) => stop === undefined || lsn < stop).map((lsn) => found.get(lsn)!);
}
