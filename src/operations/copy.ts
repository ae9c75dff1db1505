import path from 'node:path';
import type pg from 'pg';
import * as z from 'zod';
import { BackupCatalogue } from '../backups/catalogue.js';
import { WorkArea } from '../backups/work-area.js';
import { databaseIdentity } from '../config.js';
import { PermanentError, ValidationError } from '../errors.js';
import { connect, exportSnapshot, inTransaction, runScript } from '../postgres/client.js';
import { readIdentity, type DatabaseIdentity } from '../postgres/identity.js';
import { columnFacts, listTables, userTables, type ColumnFact, type SizedTable } from '../postgres/catalog.js';
import { applyMasks, type MaskedTable, type TableMask } from '../postgres/masking.js';
import { copySubset, planSubset, type SubsetTable } from '../postgres/subset.js';
import { DELETE_WHERE, maskPolicySchema, maskProblems, ruleFor, type MaskPolicy } from './mask-policy.js';
import { differences, digestTables, type TableDigest } from '../postgres/compare.js';
import { recoverCreatedDatabases, replaceDatabase } from '../postgres/replace.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { resolveTarget, withDatabase, type DatabaseTarget } from '../postgres/target.js';
import { copyAroundSchema, copyDataSection, copyInParallel } from '../postgres/parallel-copy.js';
import { makeFifo, pipeTools, withFifoDir } from '../postgres/pipe.js';
import { humanSize } from '../units.js';
import {
  confirmField,
  envName,
  fieldAbsentOr,
  fieldGiven,
  fieldIs,
  implies,
  parallelJobs,
  stepTimings,
  withRules,
} from './fields.js';
import { defineOperation, type OperationContext } from './operation.js';

const subsetTable = z.string().regex(/^[^.\s]+\.[^.\s]+$/, { message: 'expected a table as schema.table' });

/** SQL run inside the copy before it becomes visible; sent as text so any worker host can run it. */
const sanitizeScript = z.strictObject({
  name: z.string().min(1).max(200),
  sql: z.string().min(1).max(1_000_000),
});

const schema = withRules(
  z.strictObject({
    from: envName,
    to: envName,
    confirm: confirmField,
    jobs: parallelJobs.default(1).meta({
      description:
        '1: pg_dump streamed into pg_restore; more: the schema, then the data in this many parallel streams of one snapshot, then indexes and constraints with this many jobs (no temporary file either way)',
    }),
    sanitize: z
      .array(sanitizeScript)
      .max(50)
      .default([])
      .meta({ description: '[{name, sql}]: SQL run in the copy, each in a transaction, before it becomes visible' }),
    mask: maskPolicySchema.optional(),
    subset: z
      .array(
        z.union([
          z.strictObject({
            table: subsetTable,
            where: z.string().min(1).max(10_000).meta({ description: 'an SQL condition on its rows' }),
          }),
          z.strictObject({
            table: subsetTable,
            percent: z.number().gt(0).max(100).meta({ description: 'this share of its rows, in percent' }),
            orderBy: z.string().min(1).max(1_000).optional().meta({
              description:
                'the first rows in this SQL ORDER BY order (without it, a sample: the same rows of the same data every time)',
            }),
          }),
        ]),
      )
      .min(1)
      .max(50)
      .optional()
      .meta({
        description:
          '[{table, where} | {table, percent, orderBy?}]: copy only these rows of these tables, and every row they reference (transitively), so every foreign key holds',
      }),
    withChildren: z.boolean().default(false).meta({
      description:
        'with subset: also every row that references a chosen row, transitively (and then what those reference)',
    }),
    rest: z.enum(['all', 'empty']).default('all').meta({
      description: 'with subset: the tables no rule names and no kept row references: copied whole, or empty',
    }),
    verify: z
      .boolean()
      .default(false)
      .meta({ description: 'compare every table of source and copy (row count and content hash) before the swap' }),
    keepPrevious: z
      .boolean()
      .optional()
      .meta({ description: 'keep the replaced database as <name>_prev_<time> (default RESTORE_KEEP_PREVIOUS)' }),
    sourceSettings: z.boolean().default(false).meta({
      description:
        "give the copy the source database's settings, grants, comment, limit and owner, not the replaced database's",
    }),
  }),
  [
    {
      path: 'verify',
      message: 'verify compares whole tables: it does not go with subset',
      broken: (payload) => payload.verify && payload.subset !== undefined,
      schema: implies(fieldGiven('subset'), fieldAbsentOr('verify', false)),
    },
    {
      path: 'withChildren',
      message: 'withChildren goes with subset',
      broken: (payload) => payload.withChildren && payload.subset === undefined,
      schema: implies(fieldIs('withChildren', true), fieldGiven('subset')),
    },
  ],
);

type CopyPayload = z.output<typeof schema>;

const result = z.object({
  from: z.string(),
  to: z.string(),
  database: z.string(),
  mode: z.enum(['stream', 'parallel', 'subset']),
  tables: z.number().int(),
  sanitized: z.array(z.string()).meta({ description: 'the sanitize scripts run, by name' }),
  verified: z.boolean(),
  subset: z
    .array(z.object({ table: z.string(), rows: z.number().int() }))
    .optional()
    .meta({ description: 'with subset: the rows each table kept' }),
  masked: z
    .array(
      z.object({
        table: z.string(),
        columns: z.number().int(),
        rowsDeleted: z.number().int(),
        rowsMasked: z.number().int(),
      }),
    )
    .optional()
    .meta({ description: 'with mask: each table the policy changed, with how many columns and rows' }),
  previousDatabase: z.string().optional(),
  durationMs: z.number(),
  steps: stepTimings,
});
export type CopyResult = z.infer<typeof result>;

/** Where a URL points: two environment names for one database are the same database. */
/** Counts tables as pg_dump and pg_restore report them, for progress over both phases. */
function progressCounter(context: OperationContext<unknown>, tables: number) {
  let done = 0;
  const step = (count: number, phase: string, table: string) => {
    done += count;
    context.progress(5 + (80 * done) / Math.max(2 * tables, done), `${phase} table ${table}`);
  };
  return {
    onLine(line: string) {
      context.log(line);
      const table = /(?:dumping contents of table|processing data for table) "(.+)"$/.exec(line)?.[1];
      if (table) step(1, line.includes('dumping') ? 'copying' : 'loading', table);
    },
    /** A table copied by a stream of its own: dumped and loaded at once. */
    copied(table: SizedTable) {
      context.log(`copied table "${table.schema}.${table.table}" (${humanSize(table.bytes)} on disk)`);
      step(2, 'copied', `${table.schema}.${table.table}`);
    },
  };
}

/** What filling the shadow database takes, whichever way it is filled. */
export interface Fill {
  source: DatabaseTarget;
  shadowUrl: string;
  signal: AbortSignal;
  /** The source's exported snapshot (with --verify, and for a parallel copy), and the session that holds it. */
  snapshot: { id: string; client: pg.Client } | undefined;
  tables: number;
  binDir: string | undefined;
}

/**
 * Gives `use` the job's work directory and a directory where FIFOs can be made: the same, or where its
 * file system has none (some network ones), a private one of the host's. Both are removed afterwards.
 */
async function withWorkDirs(
  context: OperationContext<unknown>,
  use: (workDir: string, fifoDir: string) => Promise<void>,
): Promise<void> {
  const area = new WorkArea(context.config.backupDir);
  try {
    const workDir = await area.partialDir(context.job);
    await withFifoDir(workDir, (fifoDir) => use(workDir, fifoDir));
  } finally {
    await area.removePartial(context.job);
  }
}

/** pg_dump straight into pg_restore through a FIFO: no byte passes through this process. */
export async function streamCopy(
  context: OperationContext<unknown>,
  { source, shadowUrl, signal, snapshot, tables, binDir }: Fill,
): Promise<void> {
  const counter = progressCounter(context, tables);
  await withWorkDirs(context, async (_workDir, fifoDir) => {
    const fifo = path.join(fifoDir, 'stream');
    if (!(await makeFifo(fifo))) throw new Error(`cannot make a FIFO in ${fifoDir}`);
    const options = { signal, binDir, onStderrLine: counter.onLine };
    await pipeTools(
      {
        tool: 'pg_dump',
        // --no-sync: a FIFO cannot be fsynced (and holds nothing to keep).
        args: [
          '--format=custom',
          '--compress=0',
          '--verbose',
          '--no-password',
          '--no-sync',
          `--file=${fifo}`,
          ...(snapshot ? [`--snapshot=${snapshot.id}`] : []),
        ],
        options: { ...options, url: source.url },
      },
      {
        tool: 'pg_restore',
        // --format: pg_restore must read the FIFO once; finding out the format itself, it would reopen it and miss the start.
        args: ['--verbose', '--no-password', '--exit-on-error', '--format=custom', fifo],
        options: { ...options, url: shadowUrl },
      },
    );
  });
}

/** `--jobs N`: schema, then the data in N parallel streams of one snapshot, then indexes and constraints with N jobs. */
async function parallelCopy(
  context: OperationContext<CopyPayload>,
  { source, shadowUrl, signal, snapshot, tables, binDir }: Fill,
): Promise<void> {
  if (!snapshot) throw new Error('a parallel copy reads one exported snapshot');
  const counter = progressCounter(context, tables);
  await withWorkDirs(context, (workDir, fifoDir) =>
    copyInParallel({
      sourceUrl: source.url,
      targetUrl: shadowUrl,
      snapshot: snapshot.id,
      snapshotClient: snapshot.client,
      jobs: context.payload.jobs,
      ownStreamBytes: context.config.COPY_OWN_STREAM_BYTES,
      workDir,
      fifoDir,
      signal,
      binDir,
      onLine: counter.onLine,
      onTableCopied: counter.copied,
    }),
  );
}

async function sanitize(context: OperationContext<CopyPayload>, shadowUrl: string): Promise<void> {
  const client = await connect(shadowUrl, `dbops:copy:${context.jobId}`);
  try {
    for (const script of context.payload.sanitize) {
      context.progress(87, `sanitising with ${script.name}`);
      try {
        await inTransaction(client, () => runScript(client, script.sql));
      } catch (error) {
        throw new PermanentError(
          `sanitize script ${script.name} failed: ${(error as Error).message}; the target was not touched`,
        );
      }
      context.log(`sanitised with ${script.name}`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The policy's problems with these columns, as the one error that fails the copy; nothing when it fits. */
function checkPolicy(policy: MaskPolicy, facts: ColumnFact[], where: string): void {
  const problems = maskProblems(policy, facts);
  if (problems.length > 0)
    throw new PermanentError(
      `the masking policy does not fit ${where}: ${problems.join('; ')}; the target was not touched`,
    );
}

async function maskCopy(context: OperationContext<CopyPayload>, shadowUrl: string): Promise<MaskedTable[]> {
  const policy = context.payload.mask!;
  const client = await connect(shadowUrl, `dbops:copy:${context.jobId}`);
  try {
    // Checked again in the copy: a sanitize script may have added a column.
    const facts = await columnFacts(client);
    checkPolicy(policy, facts, 'the copy');
    const byTable = new Map<string, TableMask>();
    for (const fact of facts) {
      const rule = ruleFor(policy, fact)!;
      const mask = byTable.get(fact.table) ?? {
        table: fact.table,
        columns: [],
        deleteWhere: policy.tables[fact.table]?.[DELETE_WHERE] as string | undefined,
        partitioned: fact.partitioned,
      };
      if (rule !== 'keep') mask.columns.push({ fact, rule });
      byTable.set(fact.table, mask);
    }
    const work = [...byTable.values()].filter((mask) => mask.columns.length > 0 || mask.deleteWhere);
    const masked = await applyMasks(client, work, policy.seed ?? 'dbops', (table, index) =>
      context.progress(88 + (4 * index) / Math.max(work.length, 1), `masking ${table}`),
    ).catch((error: unknown) => {
      throw new PermanentError(`masking failed: ${(error as Error).message}; the target was not touched`);
    });
    context.log(`masked ${masked.reduce((sum, table) => sum + table.columns, 0)} columns in ${masked.length} tables`);
    return masked;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * `subset`: the schema, then only the chosen rows (chosen on the source in its snapshot, by the session that
 * exported it), sequence values and large objects, then indexes and constraints, each
 * foreign key validated.
 */
async function subsetFill(
  context: OperationContext<CopyPayload>,
  { source, shadowUrl, signal, snapshot, binDir }: Fill,
): Promise<SubsetTable[]> {
  if (!snapshot) throw new Error('a subset reads one exported snapshot');
  const { payload, jobId } = context;
  const tools = { sourceUrl: source.url, targetUrl: shadowUrl, snapshot: snapshot.id, binDir, onLine: context.log };
  let kept: SubsetTable[] = [];
  let tables: string[] = [];
  // The session holding the snapshot, idle otherwise, reads what the subset needs while the schema is
  // restored, then chooses the rows and copies them.
  const session = snapshot.client;
  const planned = planSubset(session, payload.subset!);
  planned.catch(() => undefined); // awaited below, where an error fails the subset
  await withWorkDirs(context, (workDir, fifoDir) =>
    copyAroundSchema({ ...tools, workDir, signal, jobs: payload.jobs }, async () => {
      const shadow = await connect(shadowUrl, `dbops:copy:${jobId}`);
      try {
        kept = await copySubset(session, shadow, await planned, {
          rest: payload.rest,
          withChildren: payload.withChildren,
          onStep: (step) => context.progress(40, `subset: ${step}`),
        });
        tables = (await listTables(session, ['r'])).map((table) => table.sql);
      } catch (error) {
        if (signal.aborted) throw error;
        throw new PermanentError(`the subset failed: ${(error as Error).message}; the target was not touched`);
      } finally {
        await shadow.end().catch(() => undefined);
      }
      context.log(`subset: ${kept.map((table) => `${table.table} ${table.rows}`).join(', ')}`);
      const fifo = path.join(fifoDir, 'rest');
      if (!(await makeFifo(fifo))) throw new Error(`cannot make a FIFO in ${fifoDir}`);
      context.progress(80, 'copying sequence values and large objects');
      // Every table's rows excluded by name: a pattern like *.* would exclude the sequences' values too.
      await copyDataSection(tools, tables, fifo, signal);
    }),
  ).catch((error: unknown) => {
    // A foreign key the chosen rows do not satisfy fails its validation in post-data.
    if (signal.aborted || error instanceof PermanentError) throw error;
    throw new PermanentError(`the subset failed: ${(error as Error).message}; the target was not touched`);
  });
  return kept;
}

export async function verifyCopy(
  context: OperationContext<unknown>,
  sourceDigests: () => Promise<TableDigest[]>,
  shadowUrl: string,
): Promise<void> {
  context.progress(85, 'verifying: hashing the source tables');
  const expected = await sourceDigests();
  const client = await connect(shadowUrl, `dbops:copy:${context.jobId}`);
  try {
    const actual = await digestTables(client, (table, index, total) =>
      context.progress(85 + (2 * index) / Math.max(total, 1), `verifying ${table}`),
    );
    const found = differences(expected, actual);
    if (found.length > 0)
      throw new PermanentError(
        `the copy differs from the source: ${found.slice(0, 10).join('; ')}; the target was not touched`,
      );
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
  examples: [
    { payload: { from: 'production', to: 'staging', jobs: 4, verify: true } },
    {
      payload: {
        from: 'production',
        to: 'staging',
        sanitize: [{ name: 'emails', sql: "UPDATE customer SET email = 'c' || customer_id || '@example.com'" }],
      },
    },
    { payload: { from: 'production' }, refused: 'to: Invalid input: expected string, received undefined' },
  ],
  async process(context): Promise<CopyResult> {
    const { payload, config, jobId, signal, progress, log } = context;
    const startedAt = Date.now();
    const source = resolveTarget(config, payload.from);
    const target = resolveTarget(config, payload.to);

    // With --verify, the dump and the source's hashes read one exported snapshot: exact even while
    // the source takes writes. A parallel copy's streams read one too. The transaction stays open for
    // the whole copy, so only then.
    let snapshot: { id: string; client: pg.Client } | undefined;
    progress(1, `connecting to ${source.env}`);
    const probe = await connect(source.url, `dbops:copy:${jobId}`, source.env);
    let tables: number;
    let identity: DatabaseIdentity | undefined;
    try {
      tables = (await userTables(probe)).length;
      // A policy that does not fit the source fails the copy before anything is made.
      if (payload.mask) checkPolicy(payload.mask, await columnFacts(probe), source.env);
      if (payload.sourceSettings) identity = await readIdentity(probe, source.database);
      if (payload.verify || payload.jobs > 1 || payload.subset) {
        // A subset's session lists the chosen rows in temporary tables: read-write (it writes nothing else).
        snapshot = { id: await exportSnapshot(probe, payload.subset ? 'READ WRITE' : 'READ ONLY'), client: probe };
      }
    } catch (error) {
      await probe.end().catch(() => undefined);
      throw error;
    }
    if (!snapshot) await probe.end().catch(() => undefined);

    try {
      // Tools new enough for both servers: pg_dump for the source, pg_restore for what pg_dump wrote.
      const binDir = await toolDirForServers(
        [source.url, withDatabase(target.url, config.PG_MAINTENANCE_DB)],
        config.PG_BIN_DIR,
        `dbops:copy:${jobId}`,
      );
      const mode = payload.subset ? 'subset' : payload.jobs > 1 ? 'parallel' : 'stream';
      let masked: MaskedTable[] | undefined;
      let subset: SubsetTable[] | undefined;
      const replaceStartedAt = Date.now();
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
        fill: async (shadowUrl, mark, fillSignal) => {
          const fill: Fill = { source, shadowUrl, signal: fillSignal, snapshot, tables, binDir };
          if (mode === 'subset') {
            subset = await subsetFill(context, fill);
            mark('subset');
          } else {
            await (mode === 'stream' ? streamCopy(context, fill) : parallelCopy(context, fill));
            mark(mode === 'stream' ? 'pg_dump | pg_restore' : 'parallel copy');
          }
          if (payload.verify && snapshot) {
            await verifyCopy(context, () => digestTables(snapshot.client), shadowUrl);
            mark('verify');
          }
          if (payload.sanitize.length) {
            await sanitize(context, shadowUrl);
            mark('sanitize');
          }
          if (payload.mask) {
            masked = await maskCopy(context, shadowUrl);
            mark('mask');
          }
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
        ...(subset ? { subset } : {}),
        ...(masked ? { masked } : {}),
        previousDatabase: replaced.previousDatabase,
        durationMs: Date.now() - startedAt,
        steps: [{ step: 'read the source', ms: replaceStartedAt - startedAt }, ...replaced.steps],
      };
    } finally {
      if (snapshot) await snapshot.client.end().catch(() => undefined);
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
    (result.masked
      ? `, masked ${result.masked.reduce((sum, table) => sum + table.columns, 0)} columns in ${result.masked.length} tables`
      : '') +
    (result.previousDatabase ? `; the previous database is kept as "${result.previousDatabase}"` : ''),
});
