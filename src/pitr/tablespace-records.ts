import { readdir } from 'node:fs/promises';
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

/** The records of resource manager `rmgr` in `dir`'s segments, from its first to its last (or where its WAL ends). */
async function records(binDir: string | undefined, dir: string, rmgr: string, signal: AbortSignal): Promise<string[]> {
  const segments = (await readdir(dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
  if (segments.length === 0) return [];
  const run = await execa(
    toolPath('pg_waldump', binDir),
    [`--path=${dir}`, `--rmgr=${rmgr}`, segments[0]!, segments.at(-1)!],
    { cancelSignal: signal, reject: false, env: { TZ: 'UTC', LANG: 'C' }, extendEnv: false },
  );
  if (run.isCanceled) signal.throwIfAborted();
  // The last segment may be one still being written, zeros after its last record: the WAL ends there.
  if (run.exitCode !== 0 && !END_OF_WAL.test(run.stderr))
    throw new PermanentError(`pg_waldump could not read the WAL to replay: ${run.stderr.trim().split('\n').at(-1)}`);
  return run.stdout.split('\n').filter((line) => LSN_FIELD.test(line));
}

const lsnOf = (line: string) => parseLsn(LSN_FIELD.exec(line)![1]!);

/**
 * The CREATE TABLESPACE records recovery from `from` (the base backup's start) to `target` would replay
 * from the segments in `dirs`. Recovery to a position stops at it; to a time, before the first
 * transaction that ended after it.
 */
export async function tablespacesCreated(
  binDir: string | undefined,
  dirs: string[],
  from: string,
  target: RecoveryTarget,
  signal: AbortSignal,
): Promise<TablespaceCreation[]> {
  // One resource manager per run: pg_waldump before PostgreSQL 15 takes only one.
  const [creations, ends] = await Promise.all([
    Promise.all(dirs.map((dir) => records(binDir, dir, 'Tablespace', signal))),
    'time' in target ? Promise.all(dirs.map((dir) => records(binDir, dir, 'Transaction', signal))) : [],
  ]);
  let stop: bigint | undefined = 'lsn' in target ? parseLsn(target.lsn) + 1n : undefined;
  if ('time' in target) {
    const limit = BigInt(Date.parse(target.time)) * 1000n;
    for (const line of ends.flat()) {
      const ended = END.exec(line);
      if (ended && micros(ended[1]!, ended[2]) > limit && (stop === undefined || lsnOf(line) < stop))
        stop = lsnOf(line);
    }
  }
  const found = new Map<bigint, TablespaceCreation>();
  for (const line of creations.flat()) {
    const created = CREATE.exec(line);
    const lsn = lsnOf(line);
    if (created && lsn >= parseLsn(from) && (stop === undefined || lsn < stop))
      found.set(lsn, { oid: Number(created[1]), location: created[2]!, lsn: formatLsn(lsn) });
  }
  return [...found.values()].sort((a, b) => (parseLsn(a.lsn) < parseLsn(b.lsn) ? -1 : 1));
}
