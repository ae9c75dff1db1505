import type pg from 'pg';
import * as z from 'zod';
import { findTable, listTables } from '../postgres/catalog.js';
import { withClient } from '../postgres/client.js';
import type { DatabaseLedger } from '../ownership.js';
import { findCreatedDatabases, listPreviousDatabases } from '../postgres/databases.js';
import {
  backendPid,
  cancelBackend,
  isLockNotAvailable,
  maintainTable,
  readHealthStats,
  relationSize,
  serverVersionNumber,
  setLockTimeout,
  type MaintenanceAction,
} from '../postgres/health.js';
import { withLockedDatabase } from '../postgres/lock.js';
import { resolveTarget } from '../postgres/target.js';
import { confirmField, envName, fieldIs, implies, withRules } from './fields.js';
import { alignColumns, humanSize, listTime } from '../units.js';
import { CHECKSUMS_TABLE, MIGRATIONS_TABLE } from '../migrations/files.js';
import { defineOperation, type OperationContext } from './operation.js';

const schema = withRules(
  z.strictObject({
    env: envName,
    action: z.enum(['vacuum', 'analyze', 'reindex', 'report']),
    confirm: confirmField,
    /** `schema.table`; the whole database when absent. Looked up in the catalog, never spliced into SQL. */
    table: z
      .string()
      .min(1)
      .max(300)
      .refine((value) => !value.includes('\0'), { message: 'must not contain NUL' })
      .optional(),
    /** vacuum: also ANALYZE. */
    analyze: z.boolean().default(false),
    /** vacuum: VACUUM FULL (rewrites the table under an exclusive lock). */
    full: z.boolean().default(false),
    /** How long to wait for a table's lock before skipping it. */
    lockTimeoutMs: z.number().int().min(100).max(3_600_000).default(10_000),
    /** report: sessions active longer than this are listed. */
    longRunningSeconds: z.number().int().min(1).max(86_400).default(300),
    /** report: sessions idle in a transaction longer than this are listed. */
    idleSeconds: z.number().int().min(1).max(86_400).default(60),
  }),
  [
    {
      path: 'full',
      message: '--analyze and --full go with vacuum',
      broken: (payload) => (payload.analyze || payload.full) && payload.action !== 'vacuum',
      schema: implies({ anyOf: [fieldIs('analyze', true), fieldIs('full', true)] }, fieldIs('action', 'vacuum')),
    },
  ],
);
type MaintenancePayload = z.output<typeof schema>;

const runResult = z.object({
  action: z.enum(['vacuum', 'analyze', 'reindex']),
  done: z.array(z.string()),
  skipped: z
    .array(z.object({ table: z.string(), reason: z.string() }))
    .meta({ description: 'tables whose lock did not come within lockTimeoutMs' }),
  concurrently: z.boolean().optional(),
  durationMs: z.number(),
});
export type MaintenanceRun = z.infer<typeof runResult>;

const reportResult = z.object({
  action: z.literal('report'),
  database: z.string(),
  sizeBytes: z.number(),
  tables: z.array(
    z.object({
      table: z.string(),
      totalBytes: z.number(),
      tableBytes: z.number(),
      indexBytes: z.number(),
      sizeEstimated: z
        .boolean()
        .meta({ description: "the sizes are the planner's estimate: the table was locked by someone else" }),
      liveTuples: z.number(),
      deadTuples: z.number(),
      estimatedBloatBytes: z.number().meta({ description: "dead share of the table's bytes (no pgstattuple)" }),
      lastVacuum: z.string().nullable(),
      lastAnalyze: z.string().nullable(),
    }),
  ),
  indexes: z.array(z.object({ index: z.string(), table: z.string(), sizeBytes: z.number(), scans: z.number() })),
  unusedIndexes: z.array(z.object({ index: z.string(), table: z.string(), sizeBytes: z.number() })),
  neverVacuumed: z.array(z.string()),
  neverAnalyzed: z.array(z.string()),
  longRunning: z.array(
    z.object({
      pid: z.number(),
      user: z.string().nullable(),
      state: z.string(),
      seconds: z.number(),
      query: z.string(),
    }),
  ),
  idleInTransaction: z.array(
    z.object({ pid: z.number(), user: z.string().nullable(), seconds: z.number(), query: z.string() }),
  ),
  previousDatabases: z
    .array(z.object({ name: z.string(), proven: z.boolean(), sizeBytes: z.number().nullable(), note: z.string() }))
    .meta({
      description: 'earlier versions of this database kept by restores and copies: they take space until dropped',
    }),
  unprovenDatabases: z.array(z.object({ name: z.string(), why: z.string() })).meta({
    description: "databases on this server that look like dbops' but that it cannot prove it made: never removed by it",
  }),
});
export type MaintenanceReport = z.infer<typeof reportResult>;

const result = z.union([runResult, reportResult]);
export type MaintenanceResult = z.infer<typeof result>;

async function report(
  client: pg.ClientBase,
  database: string,
  thresholds: { longRunningSeconds: number; idleSeconds: number },
  ledger: DatabaseLedger,
): Promise<MaintenanceReport> {
  const stats = await readHealthStats(client);
  const { blockSize } = stats;
  const iso = (value: Date | null) => (value ? value.toISOString() : null);
  const tableRows: MaintenanceReport['tables'] = [];
  for (const row of stats.tables.filter((table) => !BOOKKEEPING_TABLES.has(table.table))) {
    const heap = await relationSize(client, row.relid, 'pg_relation_size', Number(row.relpages) * blockSize);
    const total = await relationSize(
      client,
      row.relid,
      'pg_total_relation_size',
      (Number(row.relpages) + Number(row.index_pages)) * blockSize,
    );
    const indexBytes = await relationSize(client, row.relid, 'pg_indexes_size', Number(row.index_pages) * blockSize);
    const live = Number(row.live);
    const dead = Number(row.dead);
    tableRows.push({
      table: row.table,
      totalBytes: total.bytes,
      tableBytes: heap.bytes,
      indexBytes: indexBytes.bytes,
      sizeEstimated: heap.estimated || total.estimated || indexBytes.estimated,
      liveTuples: live,
      deadTuples: dead,
      estimatedBloatBytes: live + dead > 0 ? Math.round((heap.bytes * dead) / (live + dead)) : 0,
      lastVacuum: iso(row.last_vacuum),
      lastAnalyze: iso(row.last_analyze),
    });
  }
  tableRows.sort((a, b) => b.totalBytes - a.totalBytes);
  const indexRows: (MaintenanceReport['indexes'][number] & { unique: boolean })[] = [];
  for (const row of stats.indexes) {
    const sized = await relationSize(client, row.indexrelid, 'pg_relation_size', Number(row.relpages) * blockSize);
    indexRows.push({
      index: row.index,
      table: row.table,
      sizeBytes: sized.bytes,
      scans: Number(row.scans),
      unique: Boolean(row.unique),
    });
  }
  indexRows.sort((a, b) => b.sizeBytes - a.sizeBytes);
  return {
    action: 'report',
    database,
    sizeBytes: stats.sizeBytes,
    tables: tableRows,
    indexes: indexRows.map(({ unique: _unique, ...index }) => index),
    unusedIndexes: indexRows
      .filter((index) => index.scans === 0 && !index.unique)
      .map(({ index, table, sizeBytes }) => ({ index, table, sizeBytes })),
    neverVacuumed: tableRows.filter((table) => !table.lastVacuum).map((table) => table.table),
    neverAnalyzed: tableRows.filter((table) => !table.lastAnalyze).map((table) => table.table),
    longRunning: stats.sessions
      .filter((row) => row.state === 'active' && row.seconds >= thresholds.longRunningSeconds)
      .map((row) => ({ pid: row.pid, user: row.user, state: row.state, seconds: row.seconds, query: row.query })),
    idleInTransaction: stats.sessions
      .filter((row) => String(row.state).startsWith('idle in transaction') && row.in_state >= thresholds.idleSeconds)
      .map((row) => ({ pid: row.pid, user: row.user, seconds: row.in_state, query: row.query })),
    previousDatabases: await listPreviousDatabases(client, database, ledger),
    unprovenDatabases: (await findCreatedDatabases(client, ledger)).unproven,
  };
}

async function run(context: OperationContext<MaintenancePayload>, client: pg.ClientBase): Promise<MaintenanceRun> {
  const { payload, progress, log, signal } = context;
  const startedAt = Date.now();
  // Partitions are tables of their own; parents are analyzed too (autovacuum never does), not vacuumed twice.
  const tables = payload.table
    ? [await findTable(client, payload.table)]
    : await listTables(client, payload.action === 'analyze' ? ['r', 'p', 'm'] : ['r', 'm']);
  const concurrently = payload.action === 'reindex' && (await serverVersionNumber(client)) >= 120_000;
  // Never queue behind a long-held lock: wait this long for each table, then skip it and go on.
  await setLockTimeout(client, payload.lockTimeoutMs);
  const done: string[] = [];
  const skipped: MaintenanceRun['skipped'] = [];
  for (const [index, table] of tables.entries()) {
    signal.throwIfAborted();
    const name = `${table.schema}.${table.table}`;
    progress((100 * index) / Math.max(tables.length, 1), `${payload.action} ${name}`);
    try {
      await maintainTable(client, payload.action as MaintenanceAction, table, { ...payload, concurrently });
      done.push(name);
      log(`${payload.action} ${name}: done`);
    } catch (error) {
      if (!isLockNotAvailable(error)) throw error;
      skipped.push({ table: name, reason: `lock not granted within ${payload.lockTimeoutMs} ms` });
      log(`${payload.action} ${name}: skipped, lock not granted within ${payload.lockTimeoutMs} ms`);
    }
  }
  progress(100, 'done');
  return {
    action: payload.action as MaintenanceRun['action'],
    done,
    skipped,
    ...(payload.action === 'reindex' ? { concurrently } : {}),
    durationMs: Date.now() - startedAt,
  };
}

const bytes = humanSize;

/** Migration bookkeeping, not the application's data: left out of the report's tables. */
const BOOKKEEPING_TABLES = new Set([`public.${MIGRATIONS_TABLE}`, `public.${CHECKSUMS_TABLE}`]);

function describeReport(result: MaintenanceReport): string {
  const lines = [
    `database ${result.database}: ${bytes(result.sizeBytes)}`,
    '',
    ...alignColumns(
      ['TABLE', 'TOTAL', 'INDEXES', 'LIVE', 'DEAD', 'BLOAT~', 'LAST VACUUM', 'LAST ANALYZE'],
      result.tables
        .slice(0, 30)
        .map((table) => [
          table.table,
          bytes(table.totalBytes),
          bytes(table.indexBytes),
          String(table.liveTuples),
          String(table.deadTuples),
          bytes(table.estimatedBloatBytes),
          listTime(table.lastVacuum),
          listTime(table.lastAnalyze),
        ]),
    ),
  ];
  if (result.tables.length > 30) lines.push(`… ${result.tables.length - 30} more (see --json)`);
  lines.push(
    '',
    `unused indexes (no scans, not unique): ${result.unusedIndexes.map((index) => `${index.index} (${bytes(index.sizeBytes)})`).join(', ') || 'none'}`,
  );
  lines.push(`never vacuumed: ${result.neverVacuumed.length}, never analyzed: ${result.neverAnalyzed.length} tables`);
  lines.push(
    `long-running sessions: ${result.longRunning.map((s) => `pid ${s.pid} (${s.seconds}s)`).join(', ') || 'none'}`,
  );
  lines.push(
    `idle in transaction: ${result.idleInTransaction.map((s) => `pid ${s.pid} (${s.seconds}s)`).join(', ') || 'none'}`,
  );
  const kept = result.previousDatabases.map(
    (previous) =>
      `${previous.name} (${previous.sizeBytes === null ? 'size unknown' : bytes(previous.sizeBytes)}; ${previous.note})`,
  );
  lines.push(`kept previous versions (drop them once not needed): ${kept.join(', ') || 'none'}`);
  const unproven = result.unprovenDatabases.map((found) => `${found.name} (${found.why})`);
  lines.push(`look like dbops' but are not provably its own, so never dropped by it: ${unproven.join(', ') || 'none'}`);
  return lines.join('\n');
}

export const maintenance = defineOperation({
  type: 'maintenance',
  summary: 'vacuum, analyze, reindex, and a health report',
  schema,
  result,
  // ANALYZE and a plain VACUUM change no data and block neither reads nor writes (SHARE UPDATE EXCLUSIVE):
  // they run unconfirmed. VACUUM FULL and REINDEX rewrite and lock tables: confirmed on a protected env.
  changes: (payload) =>
    payload.action === 'reindex' || (payload.action === 'vacuum' && payload.full) ? payload.env : undefined,
  changesWhen: '`action` reindex, or vacuum with `full`',
  answers: (payload) => payload.action === 'report',
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [
    { payload: { env: 'staging', action: 'vacuum', analyze: true } },
    { payload: { env: 'staging', action: 'report' } },
    {
      payload: { env: 'staging', action: 'reindex', full: true },
      refused: 'full: --analyze and --full go with vacuum',
    },
  ],
  async process(context): Promise<MaintenanceResult> {
    const { payload, config, jobId, signal, progress } = context;
    const target = resolveTarget(config, payload.env);
    if (payload.action === 'report') {
      return withClient(
        target.url,
        (client) => report(client, target.database, payload, context.ledger),
        `dbops:maintenance:${jobId}`,
        target.env,
      );
    }
    const holder = `dbops:maintenance:${jobId}`;
    return withLockedDatabase(
      target,
      { maintenanceDb: config.PG_MAINTENANCE_DB, holder, signal, progress },
      async (client) => {
        const pid = await backendPid(client);
        // Cancelling the job cancels the statement running on the server.
        const onAbort = () => void cancelBackend(target.url, pid).catch(() => undefined);
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          return await run(context, client);
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
      },
    );
  },
  describe(result) {
    if (result.action === 'report') return describeReport(result);
    const skipped = result.skipped.length
      ? `; skipped (lock timeout): ${result.skipped.map((s) => s.table).join(', ')}`
      : '';
    return `${result.action}${result.action === 'reindex' && result.concurrently ? ' concurrently' : ''}: ${result.done.length} tables done${skipped}`;
  },
});
