import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { execa, type ResultPromise } from 'execa';
import { z } from 'zod';
import { BackupCatalogue } from '../backups/catalogue.js';
import { WorkArea } from '../backups/work-area.js';
import { databaseIdentity } from '../config.js';
import { PermanentError, ValidationError } from '../errors.js';
import { connect } from '../postgres/client.js';
import { readIdentity, type DatabaseIdentity } from '../postgres/identity.js';
import { userTables } from '../postgres/catalog.js';
import { differences, digestTables, type TableDigest } from '../postgres/compare.js';
import { recoverCreatedDatabases, replaceDatabase } from '../postgres/replace.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { resolveTarget, withDatabase, type DatabaseTarget } from '../postgres/target.js';
import { StderrTail, finishTool, noteworthyOnly, startTool } from '../postgres/tools.js';
import { confirmField, envName, parallelJobs } from './fields.js';
import { defineOperation, type OperationContext } from './operation.js';

/** SQL run inside the copy before it becomes visible; sent as text so any worker host can run it. */
const sanitizeScript = z.strictObject({
  name: z.string().min(1).max(200),
  sql: z.string().min(1).max(1_000_000),
});

const schema = z.strictObject({
  from: envName,
  to: envName,
  confirm: confirmField,
  jobs: parallelJobs.default(1).meta({ description: '1: stream pg_dump into pg_restore with no file; more: parallel dump and restore' }),
  sanitize: z
    .array(sanitizeScript)
    .max(50)
    .default([])
    .meta({ description: '[{name, sql}]: SQL run in the copy, each in a transaction, before it becomes visible' }),
  verify: z.boolean().default(false).meta({ description: 'compare every table of source and copy (row count and content hash) before the swap' }),
  keepPrevious: z.boolean().optional().meta({ description: 'keep the replaced database as <name>_prev_<time> (default RESTORE_KEEP_PREVIOUS)' }),
  sourceSettings: z
    .boolean()
    .default(false)
    .meta({ description: "give the copy the source database's settings, grants, comment, limit and owner, not the replaced database's" }),
});
type CopyPayload = z.output<typeof schema>;

const result = z.object({
  from: z.string(),
  to: z.string(),
  database: z.string(),
  mode: z.enum(['stream', 'parallel']),
  tables: z.number().int(),
  sanitized: z.array(z.string()).meta({ description: 'the sanitize scripts run, by name' }),
  verified: z.boolean(),
  previousDatabase: z.string().optional(),
  durationMs: z.number(),
});
export type CopyResult = z.infer<typeof result>;

/** Where a URL points: two environment names for one database are the same database. */
/** Counts tables as pg_dump and pg_restore report them, for progress over both phases. */
function progressCounter(context: OperationContext<CopyPayload>, tables: number) {
  let done = 0;
  const tail = new StderrTail();
  const log = noteworthyOnly(context.log);
  return {
    tail,
    onLine(line: string) {
      tail.push(line);
      log(line);
      const table = /(?:dumping contents of table|processing data for table) "(.+)"$/.exec(line)?.[1];
      if (table) {
        done += 1;
        const phase = line.includes('dumping') ? 'copying' : 'loading';
        context.progress(5 + (80 * done) / Math.max(2 * tables, done), `${phase} table ${table}`);
      }
    },
  };
}

/** What filling the shadow database takes, whichever way it is filled. */
interface Fill {
  source: DatabaseTarget;
  shadowUrl: string;
  signal: AbortSignal;
  /** The source's exported snapshot (with --verify), for pg_dump to read. */
  snapshot: string | undefined;
  tables: number;
  binDir: string | undefined;
}

/**
 * pg_dump straight into pg_restore through a named pipe (a FIFO in the job's work directory): the two
 * tools share it, and no byte passes through this process, which only reads their stderr.
 */
async function streamCopy(context: OperationContext<CopyPayload>, fill: Fill): Promise<void> {
  const store = new WorkArea(context.config.backupDir);
  let fallback: string | undefined;
  try {
    let fifo = path.join(await store.partialDir(context.job), 'stream');
    const made = await execa('mkfifo', ['-m', '600', fifo], { reject: false });
    if (made.exitCode !== 0) {
      // BACKUP_DIR on a file system without FIFOs (some network ones): a private directory of the host's.
      fallback = await mkdtemp(path.join(os.tmpdir(), 'dbops-copy-'));
      fifo = path.join(fallback, 'stream');
      await execa('mkfifo', ['-m', '600', fifo]);
    }
    await pipeThrough(fifo, context, fill);
  } finally {
    await store.removePartial(context.job);
    if (fallback) await rm(fallback, { recursive: true, force: true });
  }
}

async function pipeThrough(fifo: string, context: OperationContext<CopyPayload>, { source, shadowUrl, signal, snapshot, tables, binDir }: Fill): Promise<void> {
  const counter = progressCounter(context, tables);
  const dumpTail = new StderrTail();
  // --no-sync: a FIFO cannot be fsynced (and holds nothing to keep).
  const dumpArgs = [
    '--format=custom',
    '--compress=0',
    '--verbose',
    '--no-password',
    '--no-sync',
    `--file=${fifo}`,
    ...(snapshot ? [`--snapshot=${snapshot}`] : []),
  ];
  const dump = startTool('pg_dump', dumpArgs, {
    url: source.url,
    signal,
    binDir,
    onStderrLine: (line) => {
      dumpTail.push(line);
      counter.onLine(line);
    },
  });
  // --format: pg_restore must read the FIFO once; finding out the format itself, it would reopen it and miss the start.
  const restore = startTool('pg_restore', ['--verbose', '--no-password', '--exit-on-error', '--format=custom', fifo], {
    url: shadowUrl,
    signal,
    binDir,
    onStderrLine: counter.onLine,
  });
  // If either side fails the other must stop too: a pg_dump whose reader is gone blocks on a full pipe,
  // and one side of a FIFO waits forever in open() for the other.
  // The side that failed first says why; the other's error (killed by us, or a broken pipe) is only
  // a consequence, and must not turn a retryable failure into a permanent one.
  let cause: unknown;
  const settle = (tool: 'pg_dump' | 'pg_restore', child: ResultPromise, tail: StderrTail, other: ResultPromise) =>
    finishTool(tool, child, tail).catch((error: unknown) => {
      if (cause === undefined && !(tool === 'pg_dump' && lostItsReader(child, tail))) {
        cause = error;
        other.kill();
      }
      throw error;
    });
  const [dumped, restored] = await Promise.allSettled([settle('pg_dump', dump, dumpTail, restore), settle('pg_restore', restore, counter.tail, dump)]);
  if (cause !== undefined) throw cause;
  if (restored.status === 'rejected') throw restored.reason;
  if (dumped.status === 'rejected') throw dumped.reason;
}

/**
 * pg_dump lost its reader: pg_restore stopped, and pg_restore's own error says why. pg_dump either
 * says so, or dies of SIGPIPE without a word (and may be reaped before pg_restore is).
 */
function lostItsReader(dump: ResultPromise, tail: StderrTail): boolean {
  return dump.signalCode === 'SIGPIPE' || tail.errors().some((line) => /broken pipe|could not write to output/i.test(line));
}

async function parallelCopy(context: OperationContext<CopyPayload>, { source, shadowUrl, signal, snapshot, tables, binDir }: Fill): Promise<void> {
  const store = new WorkArea(context.config.backupDir);
  const work = path.join(await store.partialDir(context.job), 'dump');
  try {
    const counter = progressCounter(context, tables);
    const jobs = `--jobs=${context.payload.jobs}`;
    const dump = startTool(
      'pg_dump',
      ['--format=directory', '--compress=0', '--verbose', '--no-password', jobs, `--file=${work}`, ...(snapshot ? [`--snapshot=${snapshot}`] : [])],
      {
        url: source.url,
        signal,
        binDir,
        onStderrLine: counter.onLine,
      },
    );
    await finishTool('pg_dump', dump, counter.tail);
    const restore = startTool('pg_restore', ['--verbose', '--no-password', '--exit-on-error', jobs, work], {
      url: shadowUrl,
      signal,
      binDir,
      onStderrLine: counter.onLine,
    });
    await finishTool('pg_restore', restore, counter.tail);
  } finally {
    await store.removePartial(context.job);
  }
}

async function sanitize(context: OperationContext<CopyPayload>, shadowUrl: string): Promise<void> {
  const client = await connect(shadowUrl, `dbops:copy:${context.jobId}`);
  try {
    for (const script of context.payload.sanitize) {
      context.progress(87, `sanitising with ${script.name}`);
      try {
        await client.query('BEGIN');
        await client.query(script.sql);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw new PermanentError(`sanitize script ${script.name} failed: ${(error as Error).message}; the target was not touched`);
      }
      context.log(`sanitised with ${script.name}`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function verifyCopy(context: OperationContext<CopyPayload>, sourceDigests: () => Promise<TableDigest[]>, shadowUrl: string): Promise<void> {
  context.progress(85, 'verifying: hashing the source tables');
  const expected = await sourceDigests();
  const client = await connect(shadowUrl, `dbops:copy:${context.jobId}`);
  try {
    const actual = await digestTables(client, (table, index, total) => context.progress(85 + (2 * index) / Math.max(total, 1), `verifying ${table}`));
    const found = differences(expected, actual);
    if (found.length > 0) throw new PermanentError(`the copy differs from the source: ${found.slice(0, 10).join('; ')}; the target was not touched`);
    context.log(`verified ${actual.length} tables: row counts and contents equal`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export const copy = defineOperation({
  type: 'copy',
  summary: "copy one environment's database into another, through a shadow database swapped in on success",
  schema,
  result,
  changes: (payload) => payload.to,
  changesWhen: 'always: it replaces `to`',
  precheck(payload, config) {
    const source = resolveTarget(config, payload.from, 'from');
    const target = resolveTarget(config, payload.to, 'to');
    if (source.env === target.env || databaseIdentity(source.url) === databaseIdentity(target.url)) {
      throw new ValidationError(`"${payload.from}" and "${payload.to}" are the same database: nothing to copy`, [
        { path: 'to', message: 'must differ from from' },
      ]);
    }
  },
  async process(context): Promise<CopyResult> {
    const { payload, config, jobId, signal, progress, log } = context;
    const startedAt = Date.now();
    const source = resolveTarget(config, payload.from);
    const target = resolveTarget(config, payload.to);

    // With --verify, the dump and the source's hashes read one exported snapshot: exact even while
    // the source takes writes. The transaction stays open for the whole copy, so only when asked.
    let snapshotClient: pg.Client | undefined;
    let snapshot: string | undefined;
    progress(1, `connecting to ${source.env}`);
    const probe = await connect(source.url, `dbops:copy:${jobId}`, source.env);
    let tables: number;
    let identity: DatabaseIdentity | undefined;
    try {
      tables = (await userTables(probe)).length;
      if (payload.sourceSettings) identity = await readIdentity(probe, source.database);
      if (payload.verify) {
        await probe.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        snapshot = (await probe.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]?.id;
        snapshotClient = probe;
      }
    } catch (error) {
      await probe.end().catch(() => undefined);
      throw error;
    }
    if (!snapshotClient) await probe.end().catch(() => undefined);

    try {
      // Tools new enough for both servers: pg_dump for the source, pg_restore for what pg_dump wrote.
      const binDir = await toolDirForServers([source.url, withDatabase(target.url, config.PG_MAINTENANCE_DB)], config.PG_BIN_DIR, `dbops:copy:${jobId}`);
      const mode = payload.jobs > 1 ? 'parallel' : 'stream';
      const replaced = await replaceDatabase(target, {
        config,
        owner: context,
        kind: 'copy',
        identity,
        signal,
        progress,
        log,
        keepPrevious: payload.keepPrevious ?? config.RESTORE_KEEP_PREVIOUS,
        note: `replaced by a copy of ${source.env} (job ${jobId})`,
        fill: async (shadowUrl, fillSignal) => {
          const fill: Fill = { source, shadowUrl, signal: fillSignal, snapshot, tables, binDir };
          await (mode === 'stream' ? streamCopy(context, fill) : parallelCopy(context, fill));
          if (snapshotClient) await verifyCopy(context, () => digestTables(snapshotClient), shadowUrl);
          await sanitize(context, shadowUrl);
        },
      });
      return {
        from: source.env,
        to: target.env,
        database: target.database,
        mode,
        tables,
        sanitized: payload.sanitize.map((script) => script.name),
        verified: payload.verify,
        previousDatabase: replaced.previousDatabase,
        durationMs: Date.now() - startedAt,
      };
    } finally {
      if (snapshotClient) await snapshotClient.end().catch(() => undefined);
    }
  },
  async recover(context) {
    await recoverCreatedDatabases(context);
    await BackupCatalogue.of(context.config).recover(context);
  },
  describe: (result) =>
    `copied ${result.from} into ${result.to} (database "${result.database}", ${result.tables} tables, ${result.mode})` +
    (result.verified ? ', verified' : '') +
    (result.sanitized.length ? `, sanitised with ${result.sanitized.join(', ')}` : '') +
    (result.previousDatabase ? `; the previous database is kept as "${result.previousDatabase}"` : ''),
});
