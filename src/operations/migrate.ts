import type pg from 'pg';
import * as z from 'zod';
import { withScratchRestore } from '../backups/scratch.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import { errorMessage, isRetryable, MigrationFailed, PermanentError, ValidationError } from '../errors.js';
import {
  MIGRATIONS_TABLE,
  changedSinceApplied,
  forgetChecksums,
  readApplied,
  migrationsDir,
  readMigrations,
  recordChecksums,
  type AppliedMigration,
  type MigrationFile,
} from '../migrations/files.js';
import { RevisionFailed, detectKind, runAlembic, type MigrationKind } from '../migrations/alembic.js';
import type { Config } from '../config.js';
import { connect, withClient } from '../postgres/client.js';
import { setLockTimeout, setStatementTimeout } from '../postgres/health.js';
import { withLockedDatabase } from '../postgres/lock.js';
import { resolveTarget } from '../postgres/target.js';
import { backup, backupDatabase } from './backup.js';
import { confirmField, envName, fieldAbsentOr, fieldGiven, fieldIs, implies, withRules } from './fields.js';
import { defineOperation, type OperationContext } from './operation.js';

const schema = withRules(
  z.strictObject({
    env: envName,
    /** The migrations directory, as the workers see it: inside MIGRATIONS_ROOT (relative to it, or absolute). */
    dir: z.string().min(1).max(4096).default('.').meta({
      description: 'the migrations directory on the worker: relative to MIGRATIONS_ROOT, or absolute inside it',
    }),
    action: z.enum(['status', 'up', 'down']).default('up'),
    kind: z.enum(['sql', 'alembic', 'flask']).optional().meta({
      description:
        'what the folder holds (default: detected): sql (node-pg-migrate files), alembic (alembic.ini), flask (a Flask-Migrate folder)',
    }),
    confirm: confirmField,
    /** up: how many pending migrations (default all); down: how many to revert (default 1). */
    count: z.number().int().min(1).max(100_000).optional(),
    /** up: apply pending migrations up to and including this one (an Alembic revision, or a file's name). CLI --to. */
    target: z.string().min(1).max(300).optional(),
    dryRun: z.boolean().default(false).meta({ description: 'return the SQL that would run; change nothing' }),
    /** Run a backup job of the environment first (a BullMQ flow); migrations run only after it succeeded. */
    backupFirst: z.boolean().default(false).meta({
      description:
        'back the environment up before any migration runs (a child backup job, or the worker takes one itself)',
    }),
    /** Apply the pending migrations to a scratch restore of the latest backup first; the real run only if that succeeded. */
    rehearse: z.boolean().default(false).meta({
      description:
        'first apply the pending migrations to a scratch restore of the latest backup, timed; the real run follows only if that succeeded (with dryRun: the rehearsal alone, nothing else touched)',
    }),
  }),
  [
    {
      path: 'target',
      message: 'only up takes a target',
      broken: (payload) => payload.target !== undefined && payload.action !== 'up',
      schema: implies(fieldGiven('target'), fieldAbsentOr('action', 'up')),
    },
    {
      path: 'rehearse',
      message: 'a rehearsal applies pending migrations (up)',
      broken: (payload) => payload.rehearse && payload.action !== 'up',
      schema: implies(fieldIs('rehearse', true), fieldAbsentOr('action', 'up')),
    },
    {
      path: 'rehearse',
      message: 'a rehearsal alone (dryRun) takes no backup first',
      broken: (payload) => payload.rehearse && payload.dryRun && payload.backupFirst,
      schema: { not: { allOf: [fieldIs('rehearse', true), fieldIs('dryRun', true), fieldIs('backupFirst', true)] } },
    },
    {
      path: 'backupFirst',
      message: 'only a real up or down takes a backup first',
      broken: (payload) => payload.backupFirst && (payload.action === 'status' || payload.dryRun),
      schema: implies(fieldIs('backupFirst', true), {
        allOf: [{ not: fieldIs('action', 'status') }, fieldAbsentOr('dryRun', false)],
      }),
    },
  ],
);
type MigratePayload = z.output<typeof schema>;

const timing = z.object({ name: z.string(), ms: z.number(), ok: z.boolean(), error: z.string().optional() });
export type MigrationTiming = z.infer<typeof timing>;

const result = z.union([
  z.object({
    action: z.literal('status'),
    kind: z.enum(['sql', 'alembic', 'flask']),
    current: z.array(z.string()).meta({
      description: 'the revision(s) the database is at (sql: the last file applied); several heads are several entries',
    }),
    heads: z.array(z.string()).meta({ description: "the folder's newest revision(s) (sql: its last file)" }),
    pending: z.array(z.string()).meta({ description: 'what an up would apply, in order' }),
    applied: z
      .array(z.object({ name: z.string(), runOn: z.string(), sha256: z.string().nullable() }))
      .optional()
      .meta({ description: 'sql only' }),
    changed: z
      .array(z.string())
      .optional()
      .meta({ description: 'sql only: applied migrations whose file changed since' }),
  }),
  z.object({
    action: z.enum(['up', 'down']),
    kind: z.enum(['sql', 'alembic', 'flask']),
    dryRun: z.literal(true),
    migrations: z.array(z.string()),
    sql: z.string(),
  }),
  z.object({
    action: z.enum(['up', 'down']),
    kind: z.enum(['sql', 'alembic', 'flask']),
    dryRun: z.literal(false),
    migrations: z.array(z.string()),
    timings: z.array(timing),
    backupId: z.string().optional().meta({ description: 'the backup taken first (backupFirst)' }),
    rehearsal: z
      .object({ backupId: z.string(), migrations: z.array(timing) })
      .optional()
      .meta({ description: 'the rehearsal that ran first (rehearse)' }),
  }),
  z.object({
    action: z.literal('up'),
    kind: z.enum(['sql', 'alembic', 'flask']),
    rehearsal: z.literal(true),
    backupId: z.string(),
    migrations: z.array(timing),
  }),
]);
export type MigrateResult = z.infer<typeof result>;

function pendingOf(files: MigrationFile[], applied: AppliedMigration[]): MigrationFile[] {
  const done = new Set(applied.map((migration) => migration.name));
  return files.filter((file) => !done.has(file.name));
}

/** Which migrations an up or down would run, in order. */
function selection(payload: MigratePayload, files: MigrationFile[], applied: AppliedMigration[]): MigrationFile[] {
  if (payload.action === 'down') {
    const byName = new Map(files.map((file) => [file.name, file]));
    const reverted = applied.slice(-(payload.count ?? 1)).reverse();
    const missing = reverted.filter((migration) => !byName.has(migration.name));
    if (missing.length)
      throw new PermanentError(`cannot revert ${missing.map((m) => m.name).join(', ')}: no such file in the directory`);
    return reverted.map((migration) => byName.get(migration.name)!);
  }
  const pending = pendingOf(files, applied);
  if (payload.target) {
    const index = pending.findIndex((file) => file.name === payload.target || file.file === payload.target);
    if (index < 0) throw new ValidationError(`"${payload.target}" is not a pending migration`);
    return pending.slice(0, index + 1);
  }
  return payload.count ? pending.slice(0, payload.count) : pending;
}

/**
 * Runs migrations with node-pg-migrate, one at a time (each in its own transaction), timing each and
 * naming the file and PostgreSQL's error when one fails.
 */
async function runMigrations(
  context: OperationContext<MigratePayload>,
  client: pg.Client,
  dir: string,
  direction: 'up' | 'down',
  chosen: MigrationFile[],
  onDone: (name: string) => Promise<void>,
): Promise<MigrationTiming[]> {
  const { progress, log } = context;
  const timings: MigrationTiming[] = [];
  const logger = {
    info: (message: string) => log(message),
    warn: (message: string) => log(`warning: ${message}`),
    error: (message: string) => log(`error: ${message}`),
    debug: () => undefined,
  };
  for (const [index, migration] of chosen.entries()) {
    context.signal.throwIfAborted();
    progress((100 * index) / chosen.length, `${direction} ${migration.file}`);
    const started = Date.now();
    try {
      // Loaded here, not at start: every CLI command and worker loads this module, few run migrations.
      const { runner } = await import('node-pg-migrate');
      const ran = await runner({
        dbClient: client,
        dir,
        direction,
        count: 1,
        migrationsTable: MIGRATIONS_TABLE,
        singleTransaction: false,
        checkOrder: true,
        advisoryLockMode: 'wait',
        logger,
      });
      if (ran[0]?.name !== migration.name)
        throw new PermanentError(
          `expected to ${direction} ${migration.name}, node-pg-migrate ran ${ran[0]?.name ?? 'nothing'}`,
        );
    } catch (error) {
      const message = `migration ${migration.file} failed: ${errorMessage(error)}`;
      timings.push({ name: migration.name, ms: Date.now() - started, ok: false, error: errorMessage(error) });
      throw new MigrationFailed(message, timings, !(error instanceof PermanentError) && isRetryable(error));
    }
    timings.push({ name: migration.name, ms: Date.now() - started, ok: true });
    await onDone(migration.name);
  }
  progress(100, 'done');
  return timings;
}

/**
 * The backup a `backupFirst` migration stands on, whoever enqueued it: the backup its flow's child job
 * made (when that is a real backup of this environment), or else one this job takes now, before any
 * migration runs. A plain `add('migrate', {backupFirst: true})` from another producer is as safe as
 * dbops' own flow.
 */
async function backupBeforeMigrating(context: OperationContext<MigratePayload>, env: string): Promise<string> {
  const catalogue = BackupCatalogue.of(context.config);
  for (const result of context.childResults) {
    const id = (result as { backupId?: unknown } | null)?.backupId;
    if (typeof id !== 'string') continue;
    const manifest = (await catalogue.get(id).catch(() => undefined))?.manifest;
    if (manifest?.env === env) return id;
  }
  context.log(`no backup from a child job: backing up ${env} before migrating`);
  const made = await backupDatabase({ ...context, payload: backup.schema.parse({ env }) });
  context.log(`backup ${made.backupId} taken before migrating`);
  return made.backupId;
}

/**
 * One kind of migrations (node-pg-migrate's SQL files, Alembic, Flask-Migrate) behind the same verbs:
 * status and dry runs read only; apply runs an up or down on a database the caller has locked.
 */
interface MigrationTool {
  kind: MigrationKind;
  status(url: string): Promise<Extract<MigrateResult, { action: 'status' }>>;
  plan(url: string): Promise<{ migrations: string[]; sql: string }>;
  /** Runs the up or down; `client` is connected to the database at `url` and holds its lock. */
  apply(client: pg.Client, url: string): Promise<MigrationTiming[]>;
}

/** lock_timeout and statement_timeout as the configuration bounds a migrate job's sessions (none by default). */
function timeouts(config: Config): { lockTimeoutMs: number; statementTimeoutMs: number } {
  return { lockTimeoutMs: config.MIGRATE_LOCK_TIMEOUT_MS, statementTimeoutMs: config.MIGRATE_STATEMENT_TIMEOUT_MS };
}

function sqlTool(context: OperationContext<MigratePayload>, dir: string, files: MigrationFile[]): MigrationTool {
  const { payload, config, jobId } = context;
  return {
    kind: 'sql',
    status: (url) =>
      withClient(
        url,
        async (client) => {
          const applied = await readApplied(client);
          const last = files.at(-1);
          return {
            action: 'status',
            kind: 'sql',
            current: applied.length ? [applied.at(-1)!.name] : [],
            heads: last ? [last.name] : [],
            pending: pendingOf(files, applied).map((file) => file.name),
            applied,
            changed: changedSinceApplied(files, applied),
          };
        },
        `dbops:migrate:${jobId}`,
      ),
    plan: (url) =>
      withClient(
        url,
        async (client) => {
          const chosen = selection(payload, files, await readApplied(client));
          const sql = chosen
            .map(
              (file) =>
                `-- ${file.file} (${payload.action})\n${payload.action === 'up' ? file.up : (file.down ?? '-- (no Down Migration section)')}\n`,
            )
            .join('\n');
          return { migrations: chosen.map((file) => file.name), sql };
        },
        `dbops:migrate:${jobId}`,
      ),
    async apply(client) {
      const { lockTimeoutMs, statementTimeoutMs } = timeouts(config);
      if (lockTimeoutMs) await setLockTimeout(client, lockTimeoutMs);
      if (statementTimeoutMs) await setStatementTimeout(client, statementTimeoutMs);
      const applied = await readApplied(client);
      const changed = changedSinceApplied(files, applied);
      if (changed.length > 0) {
        throw new PermanentError(
          `applied migration${changed.length > 1 ? 's' : ''} changed since: ${changed.join(', ')}; restore the applied version or add a new migration`,
        );
      }
      const chosen = selection(payload, files, applied);
      const direction = payload.action as 'up' | 'down';
      const timings = await runMigrations(context, client, dir, direction, chosen, (name) =>
        direction === 'up' ? recordChecksums(client, files, [name]) : forgetChecksums(client, [name]),
      );
      // Migrations applied before dbops recorded checksums are adopted as they are now.
      await recordChecksums(
        client,
        files,
        applied.filter((migration) => !migration.sha256).map((migration) => migration.name),
      );
      return timings;
    },
  };
}

function alembicTool(context: OperationContext<MigratePayload>, dir: string, kind: 'alembic' | 'flask'): MigrationTool {
  const { payload, config, signal, log } = context;
  const options = (url: string) => ({
    python: config.MIGRATE_PYTHON,
    url,
    flaskApp: config.FLASK_APP,
    ...timeouts(config),
    passEnv: config.MIGRATE_PASS_ENV?.split(','),
    signal,
    onLog: log,
  });
  const request = { kind, dir, action: payload.action, target: payload.target, count: payload.count };
  return {
    kind,
    async status(url) {
      const { result } = await runAlembic({ ...request, action: 'status' }, options(url));
      return {
        action: 'status',
        kind,
        current: result.current ?? [],
        heads: result.heads ?? [],
        pending: result.pending ?? [],
      };
    },
    async plan(url) {
      const { result } = await runAlembic({ ...request, dryRun: true }, options(url));
      return { migrations: result.revisions ?? [], sql: result.sql ?? '' };
    },
    async apply(_client, url) {
      try {
        const { steps } = await runAlembic(request, options(url));
        return steps.map((step) => ({ name: step.revision, ms: step.ms, ok: true }));
      } catch (error) {
        if (!(error instanceof RevisionFailed)) throw error;
        const timings = [
          ...error.steps.map((step) => ({ name: step.revision, ms: step.ms, ok: true })),
          { name: error.revision, ms: 0, ok: false, error: error.error },
        ];
        throw new MigrationFailed(
          `revision ${error.revision} failed: ${error.error}; it was rolled back, the database is at the revision before it`,
          timings,
          false,
        );
      }
    },
  };
}

/** The folder's kind: as the payload names it (checked against the folder), or detected. */
async function toolFor(context: OperationContext<MigratePayload>, dir: string): Promise<MigrationTool> {
  const detected = await detectKind(dir);
  const kind = context.payload.kind ?? detected;
  if (kind !== detected) throw new PermanentError(`kind: the folder holds ${detected} migrations, not ${kind}`);
  return kind === 'sql' ? sqlTool(context, dir, await readMigrations(dir)) : alembicTool(context, dir, kind);
}

/** The pending migrations applied to a scratch restore of the latest backup: their timings, nothing else touched. */
async function rehearse(
  context: OperationContext<MigratePayload>,
  tool: MigrationTool,
): Promise<{ backupId: string; migrations: MigrationTiming[] }> {
  const { config, jobId, signal, progress, log } = context;
  const target = resolveTarget(config, context.payload.env);
  const catalogue = BackupCatalogue.of(config);
  const newest = (await catalogue.list({ env: target.env })).at(-1);
  if (!newest) throw new PermanentError(`no backup of ${target.env} to rehearse on: run a backup first`);
  const { manifest: latest, store } = await catalogue.get(newest.id);
  progress(1, `checking backup ${latest.id}`);
  const integrity = await store.checkIntegrity(latest);
  if (!integrity.ok) throw new PermanentError(`the latest backup ${latest.id} is damaged: ${integrity.reason}`);
  progress(5, `restoring ${latest.id} into a scratch database`);
  return withScratchRestore(
    target,
    latest,
    { config, store, workArea: catalogue.workArea, owner: context, holder: `dbops:migrate:${jobId}`, signal },
    async (scratchUrl) => {
      const client = await connect(scratchUrl, `dbops:migrate:${jobId}`);
      try {
        log(`rehearsing the pending migrations on ${latest.id}`);
        let timings: MigrationTiming[];
        try {
          timings = await tool.apply(client, scratchUrl);
        } catch (error) {
          const failed = error instanceof MigrationFailed ? error.timings : [];
          const summary = failed.map((t) => `${t.name} ${t.ms} ms ${t.ok ? 'ok' : 'FAILED'}`).join('; ');
          throw new PermanentError(
            `rehearsal on ${latest.id} failed: ${errorMessage(error)} (${summary}); nothing else was touched`,
          );
        }
        return { backupId: latest.id, migrations: timings };
      } finally {
        await client.end().catch(() => undefined);
      }
    },
  );
}

export const migrate = defineOperation({
  type: 'migrate',
  summary:
    'run migrations (node-pg-migrate SQL files, Alembic, Flask-Migrate) under the database lock, with dry runs, backups first and rehearsals',
  schema,
  result,
  // A rehearsal alone (dryRun) changes only its scratch database; status and dry runs change nothing.
  changes: (payload) => (payload.action === 'status' || payload.dryRun ? undefined : payload.env),
  changesWhen: '`action` up or down, unless `dryRun`',
  answers: (payload) => payload.action === 'status' || payload.dryRun === true,
  async precheck(payload, config) {
    resolveTarget(config, payload.env);
    await detectKind(await migrationsDir(config.migrationsRoot, payload.dir));
  },
  children: (payload) => (payload.backupFirst ? [{ type: 'backup', payload: { env: payload.env } }] : []),
  examples: [
    { payload: { env: 'staging', dir: 'alembic-plain', action: 'status' } },
    { payload: { env: 'staging', dir: 'alembic-plain', backupFirst: true } },
    { payload: { env: 'staging', dir: 'alembic-plain', action: 'up', rehearse: true, dryRun: true } },
    {
      payload: { env: 'staging', dir: 'alembic-plain', backupFirst: true, dryRun: true },
      refused: 'backupFirst: only a real up or down takes a backup first',
    },
    {
      payload: { env: 'staging', dir: 'alembic-plain', action: 'down', target: 'base' },
      refused: 'target: only up takes a target',
    },
    {
      payload: { env: 'staging', dir: 'alembic-plain', action: 'status', rehearse: true },
      refused: 'rehearse: a rehearsal applies pending migrations (up)',
    },
  ],
  async process(context): Promise<MigrateResult> {
    const { payload, config, jobId, signal, progress } = context;
    const target = resolveTarget(config, payload.env);
    const tool = await toolFor(context, await migrationsDir(config.migrationsRoot, payload.dir));
    const { kind } = tool;
    if (payload.action === 'status') return tool.status(target.url);

    const rehearsal = payload.rehearse ? await rehearse(context, tool) : undefined;
    if (rehearsal && payload.dryRun) return { action: 'up', kind, rehearsal: true, ...rehearsal };
    if (payload.dryRun) return { action: payload.action, kind, dryRun: true, ...(await tool.plan(target.url)) };

    const backupId = payload.backupFirst ? await backupBeforeMigrating(context, target.env) : undefined;
    return withLockedDatabase(
      target,
      { maintenanceDb: config.PG_MAINTENANCE_DB, holder: `dbops:migrate:${jobId}`, signal, progress },
      async (client) => {
        const timings = await tool.apply(client, target.url);
        return {
          action: payload.action as 'up' | 'down',
          kind,
          dryRun: false as const,
          migrations: timings.map((t) => t.name),
          timings,
          ...(backupId ? { backupId } : {}),
          ...(rehearsal ? { rehearsal } : {}),
        };
      },
    );
  },
  describe(result) {
    if (result.action === 'status') {
      if (result.kind !== 'sql') {
        const several = result.current.length > 1 || result.heads.length > 1 ? ' (several heads)' : '';
        return [
          `${result.kind}: at ${result.current.join(', ') || 'nothing applied'}; head${result.heads.length > 1 ? 's' : ''} ${result.heads.join(', ')}${several}`,
          ...result.pending.map((name) => `pending  ${name}`),
        ].join('\n');
      }
      const lines = (result.applied ?? []).map((m) => `applied  ${m.runOn}  ${m.name}`);
      lines.push(...result.pending.map((name) => `pending  ${' '.repeat(24)}  ${name}`));
      if (result.changed?.length) lines.push(`CHANGED since applied: ${result.changed.join(', ')}`);
      return lines.join('\n') || 'no migrations';
    }
    if ('rehearsal' in result && result.rehearsal === true) {
      return `rehearsal on ${result.backupId}: ${result.migrations.map((t) => `${t.name} ${t.ms} ms`).join(', ') || 'nothing pending'}`;
    }
    if (result.dryRun) return result.migrations.length ? result.sql : 'nothing to run';
    const what = result.migrations.length
      ? result.timings.map((t) => `${t.name} (${t.ms} ms)`).join(', ')
      : 'nothing to run';
    const rehearsed = result.rehearsal ? `; rehearsed first on ${result.rehearsal.backupId}` : '';
    return `${result.action}: ${what}${result.backupId ? `; backup ${result.backupId} taken first` : ''}${rehearsed}`;
  },
});
