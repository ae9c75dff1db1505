import { rm } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { copyColumnList, tablesBySize, type SizedTable } from './catalog.js';
import { TEXT_FORMAT_SETTINGS } from './client.js';
import { makeFifo, pipeTools } from './pipe.js';
import { StderrTail, finishTool, startTool } from './tools.js';

const PSQL = ['--no-psqlrc', '--quiet', '--no-password', '--set=ON_ERROR_STOP=1'];

export interface ParallelCopyOptions {
  sourceUrl: string;
  targetUrl: string;
  /** The source's exported snapshot, held open by the caller for the whole copy. */
  snapshot: string;
  /** The caller's session in that snapshot: which tables there are, and how big. */
  snapshotClient: pg.ClientBase;
  jobs: number;
  /** A table at least this big gets a COPY stream of its own; smaller ones share one pg_dump stream (COPY_OWN_STREAM_BYTES). */
  ownStreamBytes: number;
  /** The job's own directory, for the schema's archive. */
  workDir: string;
  /** A directory of the job's where FIFOs can be made (workDir, unless its file system has none). */
  fifoDir: string;
  signal: AbortSignal;
  binDir: string | undefined;
  /** Each line the tools print on stderr. */
  onLine: (line: string) => void;
  /** A big table copied by a stream of its own. */
  onTableCopied: (table: SizedTable) => void;
}

export interface SchemaCopyOptions {
  sourceUrl: string;
  targetUrl: string;
  snapshot: string;
  /** Where the schema's archive is written. */
  workDir: string;
  signal: AbortSignal;
  binDir: string | undefined;
  onLine: (line: string) => void;
  /** Parallel jobs for indexes and constraints. */
  jobs: number;
}

/**
 * The source's schema around the data: its definitions (pre-data) restored into the target, then
 * `fillData`, then its indexes and constraints (post-data, `jobs` at a time), all read in `snapshot`.
 * A foreign key added at the end is validated: rows that break it fail the copy.
 */
export async function copyAroundSchema(options: SchemaCopyOptions, fillData: () => Promise<void>): Promise<void> {
  const { sourceUrl, targetUrl, snapshot, workDir, signal, binDir, onLine } = options;
  if (!/^[0-9A-F-]+$/i.test(snapshot)) throw new Error(`not a snapshot id: ${snapshot}`);
  const schemaFile = path.join(workDir, 'schema.dump');
  const tail = new StderrTail();
  const track = { signal, binDir, onStderrLine: (line: string) => (tail.push(line), onLine(line)) };
  await finishTool(
    'pg_dump',
    startTool(
      'pg_dump',
      [
        '--format=custom',
        '--section=pre-data',
        '--section=post-data',
        '--verbose',
        '--no-password',
        `--snapshot=${snapshot}`,
        `--file=${schemaFile}`,
      ],
      { ...track, url: sourceUrl },
    ),
    tail,
  );
  await finishTool(
    'pg_restore',
    startTool('pg_restore', ['--section=pre-data', '--verbose', '--no-password', '--exit-on-error', schemaFile], {
      ...track,
      url: targetUrl,
    }),
    tail,
  );
  await fillData();
  await finishTool(
    'pg_restore',
    startTool(
      'pg_restore',
      ['--section=post-data', '--verbose', '--no-password', '--exit-on-error', `--jobs=${options.jobs}`, schemaFile],
      { ...track, url: targetUrl },
    ),
    tail,
  );
  await rm(schemaFile, { force: true });
}

/**
 * The data section without the rows of `excluded` tables (quoted names; `*.*` for every table): sequence
 * values, large objects and the other tables' rows, pg_dump streamed into pg_restore through `fifo`.
 */
export async function copyDataSection(
  options: Pick<SchemaCopyOptions, 'sourceUrl' | 'targetUrl' | 'snapshot' | 'binDir' | 'onLine'>,
  excluded: string[],
  fifo: string,
  signal: AbortSignal,
): Promise<void> {
  const tool = { signal, binDir: options.binDir, onStderrLine: options.onLine };
  await pipeTools(
    {
      tool: 'pg_dump',
      args: [
        '--format=custom',
        '--compress=0',
        '--section=data',
        '--verbose',
        '--no-password',
        '--no-sync',
        `--snapshot=${options.snapshot}`,
        // Quoted as an identifier, a pg_dump pattern matches that one table: no character is special in quotes.
        ...excluded.map((table) => `--exclude-table-data=${table}`),
        `--file=${fifo}`,
      ],
      options: { ...tool, url: options.sourceUrl },
    },
    {
      // --format: pg_restore must read the FIFO once; finding out the format itself, it would reopen it and miss the start.
      tool: 'pg_restore',
      args: ['--section=data', '--format=custom', '--verbose', '--no-password', '--exit-on-error', fifo],
      options: { ...tool, url: options.targetUrl },
    },
  );
}

/**
 * A copy in the way pgcopydb makes one, with no temporary copy of the data: the schema's definitions
 * (pre-data), then the data in `jobs` parallel streams, all in one exported snapshot, then indexes and
 * constraints (post-data) with `jobs` parallel jobs. Each big table streams `COPY … TO STDOUT` from one
 * psql into `COPY … FROM` in another through a FIFO; the small tables, sequence values and large
 * objects go together as one pg_dump --section=data piped into pg_restore.
 */
export async function copyInParallel(options: ParallelCopyOptions): Promise<void> {
  const { sourceUrl, targetUrl, snapshot, workDir, signal, binDir, onLine } = options;
  if (/['\\]/.test(options.fifoDir))
    throw new Error(`psql cannot name a FIFO in ${options.fifoDir}: the path has a quote or backslash`);
  const tool = { signal, binDir, onStderrLine: onLine };
  await copyAroundSchema({ sourceUrl, targetUrl, snapshot, workDir, signal, binDir, onLine, jobs: options.jobs }, () =>
    copyData(options, tool),
  );
}

async function copyData(
  options: ParallelCopyOptions,
  tool: { signal: AbortSignal; binDir: string | undefined; onStderrLine: (line: string) => void },
): Promise<void> {
  const { sourceUrl, targetUrl, snapshot, signal } = options;
  const tables = await tablesBySize(options.snapshotClient);
  const big = tables.filter((table) => table.bytes >= options.ownStreamBytes);
  const restBytes = tables
    .filter((table) => table.bytes < options.ownStreamBytes)
    .reduce((sum, table) => sum + table.bytes, 0);
  // Read in the snapshot: the columns as the source has them, named on both sides of each lane.
  const columns = new Map<SizedTable, string>();
  for (const table of big) columns.set(table, await copyColumnList(options.snapshotClient, table));
  // COPY in text, read and written by sessions that agree on every setting that shapes it, as pg_dump's do.
  const encoding = (
    await options.snapshotClient.query<{ encoding: string }>(
      'SELECT pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = current_database()',
    )
  ).rows[0]!.encoding;
  if (!/^\w+$/.test(encoding)) throw new Error(`not an encoding name: ${encoding}`);
  // Sent as SQL, not PGOPTIONS: an `options` in an environment's URL would take precedence over that.
  const session = `--command=${TEXT_FORMAT_SETTINGS}; SET row_security = off; SET synchronize_seqscans = off; SET client_encoding = '${encoding}'`;

  type Stream = { bytes: number; run: (fifo: string, lane: AbortSignal) => Promise<void> };
  const rest: Stream = {
    bytes: restBytes,
    run: (fifo, lane) =>
      copyDataSection(
        options,
        big.map((table) => table.sql),
        fifo,
        lane,
      ),
  };
  const streams: Stream[] = [
    ...big.map((table): Stream => ({
      bytes: table.bytes,
      run: async (fifo, lane) => {
        await pipeTools(
          {
            tool: 'psql',
            args: [
              ...PSQL,
              `--output=${fifo}`,
              session,
              '--command=BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
              `--command=SET TRANSACTION SNAPSHOT '${snapshot}'`,
              `--command=COPY ${table.sql} ${columns.get(table)} TO STDOUT`,
              '--command=COMMIT',
            ],
            options: { ...tool, signal: lane, url: sourceUrl },
          },
          {
            tool: 'psql',
            args: [...PSQL, session, `--command=\\copy ${table.sql} ${columns.get(table)} FROM '${fifo}'`],
            options: { ...tool, signal: lane, url: targetUrl },
          },
        );
        options.onTableCopied(table);
      },
    })),
    rest,
  ].sort((a, b) => b.bytes - a.bytes);

  await inLanes(streams, options.jobs, options.fifoDir, signal);
}

/** Runs the streams, biggest first, `lanes` at a time, each lane through a FIFO of its own; the first failure stops them all. */
async function inLanes(
  streams: { run: (fifo: string, lane: AbortSignal) => Promise<void> }[],
  lanes: number,
  fifoDir: string,
  signal: AbortSignal,
): Promise<void> {
  const stop = new AbortController();
  const laneSignal = AbortSignal.any([signal, stop.signal]);
  let next = 0;
  const lane = async (index: number) => {
    const fifo = path.join(fifoDir, `lane-${index}`);
    if (!(await makeFifo(fifo))) throw new Error(`cannot make a FIFO in ${fifoDir}`);
    try {
      while (next < streams.length && !laneSignal.aborted) {
        const stream = streams[next]!;
        next += 1;
        await stream.run(fifo, laneSignal);
      }
    } catch (error) {
      stop.abort(error);
      throw error;
    } finally {
      await rm(fifo, { force: true });
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: Math.min(lanes, streams.length) }, (_, index) => lane(index)),
  );
  signal.throwIfAborted();
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed) throw stop.signal.aborted ? stop.signal.reason : failed.reason;
}
