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
import { connect, withClient } from '../postgres/client.js';
import { withLockedDatabase } from '../postgres/lock.js';
import { resolveTarget } from '../postgres/target.js';
import { backup, backupDatabase } from './backup.js';
import { confirmField, envName } from './fields.js';
import { defineOperation, type OperationContext } from './operation.js';

const schema = z
  .strictObject({
    env: envName,
    /** The migrations directory, as the workers see it: inside MIGRATIONS_ROOT (relative to it, or absolute). */
    dir: z
      .string()
      .min(1)
      .max(4096)
      .default('.')
      .meta({ description: 'the migrations directory on the worker: relative to MIGRATIONS_ROOT, or absolute inside it' }),
    action: z.enum(['status', 'up', 'down']).default('up'),
    confirm: confirmField,
    /** up: how many pending migrations (default all); down: how many to revert (default 1). */
    count: z.number().int().min(1).max(100_000).optional(),
    /** up: apply pending migrations up to and including this one. */
    target: z.string().min(1).max(300).optional(),
    dryRun: z.boolean().default(false).meta({ description: 'return the SQL that would run; change nothing' }),
    /** Run a backup job of the environment first (a BullMQ flow); migrations run only after it succeeded. */
    backupFirst: z
      .boolean()
      .default(false)
      .meta({ description: 'back the environment up before any migration runs (a child backup job, or the worker takes one itself)' }),
    /** Apply the pending migrations to a scratch restore of the latest backup, time them, touch nothing else. */
    rehearse: z
      .boolean()
      .default(false)
      .meta({ description: 'apply pending migrations to a scratch restore of the latest backup and time them; nothing else is touched' }),
  })
  .superRefine((payload, issues) => {
    const problem = (field: string, message: string) => issues.addIssue({ code: 'custom', path: [field], message });
    if (payload.target && payload.action !== 'up') problem('target', 'only up takes a target');
    if (payload.rehearse && payload.action !== 'up') problem('rehearse', 'a rehearsal applies pending migrations (up)');
    if (payload.rehearse && (payload.dryRun || payload.backupFirst)) problem('rehearse', 'a rehearsal goes alone (no --dry-run, no --backup-first)');
    if (payload.backupFirst && (payload.action === 'status' || payload.dryRun)) problem('backupFirst', 'only a real up or down takes a backup first');
  });
type MigratePayload = z.output<typeof schema>;

const timing = z.object({ name: z.string(), ms: z.number(), ok: z.boolean(), error: z.string().optional() });
export type MigrationTiming = z.infer<typeof timing>;

const result = z.union([
  z.object({
    action: z.literal('status'),
    applied: z.array(z.object({ name: z.string(), runOn: z.string(), sha256: z.string().nullable() })),
    pending: z.array(z.string()),
    changed: z.array(z.string()).meta({ description: 'applied migrations whose file changed since' }),
  }),
  z.object({ action: z.enum(['up', 'down']), dryRun: z.literal(true), migrations: z.array(z.string()), sql: z.string() }),
  z.object({
    action: z.enum(['up', 'down']),
    dryRun: z.literal(false),
    migrations: z.array(z.string()),
    timings: z.array(timing),
    backupId: z.string().optional().meta({ description: 'the backup taken first (backupFirst)' }),
  }),
  z.object({ action: z.literal('up'), rehearsal: z.literal(true), backupId: z.string(), migrations: z.array(timing) }),
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
    if (missing.length) throw new PermanentError(`cannot revert ${missing.map((m) => m.name).join(', ')}: no such file in the directory`);
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
        throw new PermanentError(`expected to ${direction} ${migration.name}, node-pg-migrate ran ${ran[0]?.name ?? 'nothing'}`);
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

async function rehearse(context: OperationContext<MigratePayload>): Promise<MigrateResult> {
  const { payload, config, jobId, signal, progress, log } = context;
  const target = resolveTarget(config, payload.env);
  const catalogue = BackupCatalogue.of(config);
  const newest = (await catalogue.list({ env: target.env })).at(-1);
  if (!newest) throw new PermanentError(`no backup of ${target.env} to rehearse on: run a backup first`);
  const { manifest: latest, store } = await catalogue.get(newest.id);
  progress(1, `checking backup ${latest.id}`);
  const integrity = await store.checkIntegrity(latest);
  if (!integrity.ok) throw new PermanentError(`the latest backup ${latest.id} is damaged: ${integrity.reason}`);
  const dir = await migrationsDir(config.migrationsRoot, payload.dir);
  const files = await readMigrations(dir);

  progress(5, `restoring ${latest.id} into a scratch database`);
  return withScratchRestore(
    target,
    latest,
    { config, store, workArea: catalogue.workArea, owner: context, holder: `dbops:migrate:${jobId}`, signal },
    async (scratchUrl) => {
      const client = await connect(scratchUrl, `dbops:migrate:${jobId}`);
      try {
        const pending = pendingOf(files, await readApplied(client));
        log(`rehearsing ${pending.length} pending migrations on ${latest.id}`);
        let timings: MigrationTiming[];
        try {
          timings = await runMigrations(context, client, dir, 'up', pending, async () => undefined);
        } catch (error) {
          const failed = error instanceof MigrationFailed ? error.timings : [];
          const summary = failed.map((t) => `${t.name} ${t.ms} ms ${t.ok ? 'ok' : 'FAILED'}`).join('; ');
          throw new PermanentError(`rehearsal on ${latest.id} failed: ${errorMessage(error)} (${summary}); nothing else was touched`);
        }
        return { action: 'up', rehearsal: true, backupId: latest.id, migrations: timings } satisfies MigrateResult;
      } finally {
        await client.end().catch(() => undefined);
      }
    },
  );
}

export const migrate = defineOperation({
  type: 'migrate',
  summary: 'apply SQL migrations (node-pg-migrate format) with checksums, dry runs and rehearsals',
  schema,
  result,
  // A rehearsal changes only its scratch database; status and dry runs change nothing.
  changes: (payload) => (payload.action === 'status' || payload.dryRun || payload.rehearse ? undefined : payload.env),
  changesWhen: '`action` up or down, unless `dryRun` or `rehearse`',
  answers: (payload) => payload.action === 'status' || payload.dryRun === true,
  async precheck(payload, config) {
    resolveTarget(config, payload.env);
    await readMigrations(await migrationsDir(config.migrationsRoot, payload.dir));
  },
  children: (payload) => (payload.backupFirst ? [{ type: 'backup', payload: { env: payload.env } }] : []),
  async process(context): Promise<MigrateResult> {
    const { payload, config, jobId, signal, progress } = context;
    if (payload.rehearse) return rehearse(context);
    const target = resolveTarget(config, payload.env);
    const dir = await migrationsDir(config.migrationsRoot, payload.dir);
    const files = await readMigrations(dir);

    if (payload.action === 'status' || payload.dryRun) {
      // Read-only: no lock, nothing created.
      return withClient(
        target.url,
        async (client) => {
          const applied = await readApplied(client);
          if (payload.action === 'status') {
            return { action: 'status', applied, pending: pendingOf(files, applied).map((file) => file.name), changed: changedSinceApplied(files, applied) };
          }
          const chosen = selection(payload, files, applied);
          const sql = chosen
            .map((file) => `-- ${file.file} (${payload.action})\n${payload.action === 'up' ? file.up : (file.down ?? '-- (no Down Migration section)')}\n`)
            .join('\n');
          return { action: payload.action, dryRun: true, migrations: chosen.map((file) => file.name), sql };
        },
        `dbops:migrate:${jobId}`,
      );
    }

    const backupId = payload.backupFirst ? await backupBeforeMigrating(context, target.env) : undefined;
    return withLockedDatabase(target, { maintenanceDb: config.PG_MAINTENANCE_DB, holder: `dbops:migrate:${jobId}`, signal, progress }, async (client) => {
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
      return { action: direction, dryRun: false as const, migrations: timings.map((t) => t.name), timings, ...(backupId ? { backupId } : {}) };
    });
  },
  describe(result) {
    if (result.action === 'status') {
      const lines = result.applied.map((m) => `applied  ${m.runOn}  ${m.name}`);
      lines.push(...result.pending.map((name) => `pending  ${' '.repeat(24)}  ${name}`));
      if (result.changed.length) lines.push(`CHANGED since applied: ${result.changed.join(', ')}`);
      return lines.join('\n') || 'no migrations';
    }
    if ('rehearsal' in result) {
      return `rehearsal on ${result.backupId}: ${result.migrations.map((t) => `${t.name} ${t.ms} ms`).join(', ') || 'nothing pending'}`;
    }
    if (result.dryRun) return result.migrations.length ? result.sql : 'nothing to run';
    const what = result.migrations.length ? result.timings.map((t) => `${t.name} (${t.ms} ms)`).join(', ') : 'nothing to run';
    return `${result.action}: ${what}${result.backupId ? `; backup ${result.backupId} taken first` : ''}`;
  },
});
