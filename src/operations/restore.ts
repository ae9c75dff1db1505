import * as z from 'zod';
import { backupIdSchema } from '../backups/manifest.js';
import { archiveDamage, countTocEntries, prepareArchive, restoreArchive } from '../backups/archive-input.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import type { BackupStore } from '../backups/store.js';
import type { Config } from '../config.js';
import { PermanentError, ValidationError } from '../errors.js';
import { StepTimer, recoverCreatedDatabases, replaceDatabase } from '../postgres/replace.js';
import { ROLE_ALLOWANCES, createMissingRoles, type WithheldFromRole } from '../postgres/roles.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { withClient } from '../postgres/client.js';
import { readSchemaVersion, type SchemaVersion } from '../postgres/schema-version.js';
import { resolveTarget, withDatabase, type DatabaseTarget } from '../postgres/target.js';
import {
  confirmField,
  envName,
  fieldAbsentOr,
  fieldGiven,
  fieldIs,
  implies,
  parallelJobs,
  stepTimings,
  storeName,
  withRules,
} from './fields.js';
import { defineOperation, type OperationContext } from './operation.js';

const schema = withRules(
  z.strictObject({
    env: envName.meta({ description: 'the environment to restore into' }),
    backup: backupIdSchema.optional(),
    /** …or the newest verified backup of this environment's database (the target's own, usually). */
    latest: envName
      .optional()
      .meta({ description: "instead of backup: the newest verified backup of this environment's database" }),
    atRevision: z.string().min(1).max(300).optional().meta({
      description:
        'with latest: the newest verified backup whose schema was at this migration revision (Alembic revision or migration file)',
    }),
    confirm: confirmField,
    store: storeName,
    jobs: parallelJobs.default(2).meta({ description: 'parallel restore jobs' }),
    /** Keep the replaced database under a dated name (default: RESTORE_KEEP_PREVIOUS, true). */
    keepPrevious: z.boolean().optional().meta({
      description:
        'keep the replaced database as <name>_prev_<time> (default RESTORE_KEEP_PREVIOUS); CLI --drop-previous sets false',
    }),
    sourceSettings: z.boolean().default(false).meta({
      description:
        "give the database the settings, grants, comment, limit and owner its source had at backup time, not the replaced database's",
    }),
    createRoles: z.boolean().default(false).meta({
      description:
        'first create the roles the backup needs that this server lacks (never altering one, never setting a password)',
    }),
    allowRoleAttributes: z.array(z.enum(ROLE_ALLOWANCES)).max(ROLE_ALLOWANCES.length).default([]).meta({
      description:
        'with createRoles: what a created role may keep of what the backup recorded (SUPERUSER, REPLICATION, BYPASSRLS, CREATEROLE, CREATEDB; PREDEFINED_ROLES for memberships in pg_* roles and in privileged ones); without it none of these is given, and the result lists what was withheld',
    }),
    noOwner: z.boolean().default(false).meta({
      description:
        'restore without owners and grants (pg_restore --no-owner --no-acl): for a server without those roles',
    }),
  }),
  [
    {
      path: 'backup',
      message: 'name a backup, or latest (one of them)',
      broken: (payload) => (payload.backup === undefined) === (payload.latest === undefined),
      schema: { oneOf: [fieldGiven('backup'), fieldGiven('latest')] },
    },
    {
      path: 'atRevision',
      message: 'atRevision goes with latest',
      broken: (payload) => payload.atRevision !== undefined && payload.latest === undefined,
      schema: implies(fieldGiven('atRevision'), fieldGiven('latest')),
    },
    {
      path: 'allowRoleAttributes',
      message: 'allowRoleAttributes goes with createRoles',
      broken: (payload) => payload.allowRoleAttributes.length > 0 && !payload.createRoles,
      schema: implies(
        { properties: { allowRoleAttributes: { minItems: 1 } }, required: ['allowRoleAttributes'] },
        fieldIs('createRoles', true),
      ),
    },
    {
      path: 'noOwner',
      message: 'noOwner goes without createRoles and sourceSettings',
      broken: (payload) => payload.noOwner && (payload.createRoles || payload.sourceSettings),
      schema: implies(fieldIs('noOwner', true), {
        allOf: [fieldAbsentOr('createRoles', false), fieldAbsentOr('sourceSettings', false)],
      }),
    },
  ],
);

type RestorePayload = z.output<typeof schema>;

const result = z.object({
  backupId: z.string(),
  env: z.string(),
  database: z.string(),
  previousDatabase: z
    .string()
    .optional()
    .meta({ description: 'where the database that was replaced now lives, when it was kept' }),
  durationMs: z.number(),
  lockWaitMs: z.number(),
  steps: stepTimings,
  lockAcquiredAt: z.string(),
  lockReleasedAt: z.string(),
  createdRoles: z.array(z.string()).optional().meta({ description: 'the roles createRoles created' }),
  withheldFromRoles: z
    .array(z.object({ role: z.string(), attributes: z.array(z.string()), memberships: z.array(z.string()) }))
    .optional()
    .meta({
      description: 'what the created roles were not given of what the backup recorded (see allowRoleAttributes)',
    }),
  skipped: z.array(z.string()).optional().meta({
    description:
      "with latest: objects in the stores passed over because they are not provably dbops' own, each with why",
  }),
  schemaVersion: z
    .object({ tool: z.string(), revisions: z.array(z.string()) })
    .nullable()
    .optional()
    .meta({
      description:
        "the migration state the restored backup holds (compare it with the code's head: run migrate up after restoring an older one)",
    }),
  schemaNote: z.string().optional().meta({
    description:
      "set when the backup's schema revision differs from the replaced database's: the restore went back (or forward) in schema",
  }),
});
export type RestoreResult = z.infer<typeof result>;

export const restore = defineOperation({
  type: 'restore',
  summary: 'restore a backup into an environment, through a shadow database swapped in on success',
  schema,
  result,
  changes: (payload) => payload.env,
  changesWhen: 'always: it replaces `env`',
  async precheck(payload, config) {
    resolveTarget(config, payload.env);
    await chooseBackup(BackupCatalogue.of(config), payload, config);
  },
  examples: [
    { payload: { env: 'staging', latest: 'production' } },
    { payload: { env: 'production', latest: 'production', confirm: 'production', createRoles: true } },
    { payload: { env: 'staging' }, refused: 'backup: name a backup, or latest (one of them)' },
    {
      payload: { env: 'staging', backup: 'production-20261201T000000Z-0a1b2c3d4e5f', latest: 'production' },
      refused: 'backup: name a backup, or latest (one of them)',
    },
    {
      payload: { env: 'staging', latest: 'production', allowRoleAttributes: ['CREATEDB'] },
      refused: 'allowRoleAttributes: allowRoleAttributes goes with createRoles',
    },
    {
      payload: { env: 'staging', latest: 'production', noOwner: true, sourceSettings: true },
      refused: 'noOwner: noOwner goes without createRoles and sourceSettings',
    },
  ],
  async process(context): Promise<RestoreResult> {
    const { payload, config, job } = context;
    const startedAt = Date.now();
    const timer = new StepTimer();
    const target = resolveTarget(config, payload.env);
    const catalogue = BackupCatalogue.of(config);
    const chosen = await chooseBackup(catalogue, payload, config);
    for (const line of chosen.skipped) context.log(`passed over ${line}`);
    const release = await chosen.store.markInUse(chosen.manifest.id, job); // before the manifest is read again: see markInUse
    try {
      timer.mark('choose the backup');
      const result = await restoreBackup(context, target, catalogue, chosen.store, chosen.manifest.id, {
        startedAt,
        timer,
      });
      return chosen.skipped.length ? { ...result, skipped: chosen.skipped } : result;
    } finally {
      await release();
      await catalogue.workArea.removePartial(job);
    }
  },
  async recover(context) {
    await recoverCreatedDatabases(context);
    await BackupCatalogue.of(context.config).recover(context);
  },
  describe: (result) =>
    `restored ${result.backupId} into ${result.env} (database "${result.database}")` +
    (result.previousDatabase ? `; the previous database is kept as "${result.previousDatabase}"` : '') +
    (result.withheldFromRoles ?? [])
      .map(
        (item) =>
          `\nrole ${item.role} created without ${[...item.attributes, ...item.memberships.map((role) => `membership in ${role}`)].join(', ')}`,
      )
      .join(''),
});

/** What to say when a restored backup's schema is not the one of the database it replaced (the code's, usually). */
function schemaDifference(restored: SchemaVersion | null, replaced: SchemaVersion | null): string | undefined {
  if (!replaced || !restored || replaced.tool !== restored.tool) return undefined;
  const [was, now] = [replaced.revisions.join('+'), restored.revisions.join('+')];
  if (was === now) return undefined;
  return `the restored backup's schema is at ${now}; the database it replaced was at ${was}: run migrate up if the code expects ${was}`;
}

/** The backup a restore names, or the newest verified one of `latest`'s database; in `store`, or the first store that holds it. */
async function chooseBackup(catalogue: BackupCatalogue, payload: RestorePayload, config: Config) {
  if (payload.backup) return { ...(await catalogue.get(payload.backup, payload.store)), skipped: [] as string[] };
  const from = resolveTarget(config, payload.latest!, 'latest');
  const { manifest: newest, skipped } = await catalogue.newest(from.env, {
    database: from.database,
    verified: true,
    store: payload.store,
    atRevision: payload.atRevision,
  });
  const passedOver = skipped.map((item) => `${item.name} in the ${item.store} store: ${item.reason}`);
  if (!newest) {
    const note = passedOver.length ? ` (passed over, not dbops' own: ${passedOver.join('; ')})` : '';
    const at = payload.atRevision ? ` at schema revision ${payload.atRevision}` : '';
    throw new ValidationError(`no verified backup of ${from.env}${at}${note}`, [
      { path: 'latest', message: 'no verified backup of this environment' },
    ]);
  }
  return { ...(await catalogue.get(newest.id, payload.store)), skipped: passedOver };
}

async function restoreBackup(
  context: OperationContext<RestorePayload>,
  target: DatabaseTarget,
  catalogue: BackupCatalogue,
  store: BackupStore,
  backupId: string,
  { startedAt, timer }: { startedAt: number; timer: StepTimer },
): Promise<RestoreResult> {
  const { payload, config, job, jobId, signal, progress, log } = context;
  const { manifest } = await catalogue.get(backupId, store.name);
  // From object storage, an archive pg_restore must read by path (directory format, a parallel
  // restore) is downloaded into the job's work directory first; a custom one streams into pg_restore.
  const prepared = await prepareArchive(store, manifest, config, {
    workDir: () => catalogue.workArea.partialDir(job),
    parallel: payload.jobs > 1,
    signal,
    onDownload: () => progress(1, `downloading ${manifest.id} from the ${store.name} store`),
  }); // an encrypted one without its key stops here

  // Everything about the archive is checked before the target is touched. The sha256 is computed
  // while pg_restore fills the shadow database (it costs a full read of the archive); the swap waits
  // for it, and a mismatch stops pg_restore and drops the shadow.
  progress(1, `checking ${manifest.id}`);
  const damage = archiveDamage(prepared);
  const damaged = (reason: string) =>
    new PermanentError(`the archive is damaged: ${reason}; ${target.env} was not touched`);
  const { input } = prepared;
  if (!input.parallel && payload.jobs > 1)
    log('the archive is decrypted into pg_restore as it is read: one job (no parallel restore)');
  timer.mark('open the archive');
  // The tools that match the server, and what the database about to be replaced is at (to say when the
  // backup holds another schema, an older one usually): two connections, at once.
  const [binDir, replacedSchema] = await Promise.all([
    toolDirForServers(
      [withDatabase(target.url, config.PG_MAINTENANCE_DB)],
      config.PG_BIN_DIR,
      `dbops:restore:${jobId}`,
    ),
    withClient(target.url, readSchemaVersion, `dbops:restore:${jobId}`, target.env).catch(() => undefined),
  ]);
  timer.mark("the target server's version and schema");
  // The table of contents is read while the lock is taken and the shadow created; pg_restore waits for it.
  const toc = countTocEntries(input, binDir, signal).catch(async (error: unknown) => {
    const reason = await damage;
    throw reason ? damaged(reason) : error;
  });
  toc.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled

  if (payload.sourceSettings && !manifest.identity) {
    throw new PermanentError(
      `backup ${manifest.id} did not record its source's settings (made by an older dbops): restore it without sourceSettings`,
    );
  }
  if (payload.createRoles && !manifest.roles) {
    throw new PermanentError(
      `backup ${manifest.id} did not record the roles it needs (made by an older dbops): create them by hand, or restore with noOwner`,
    );
  }
  let createdRoles: string[] | undefined;
  let withheldFromRoles: WithheldFromRole[] | undefined;
  const replaced = await replaceDatabase(target, {
    config,
    owner: context,
    kind: 'restore',
    identity: payload.sourceSettings ? manifest.identity : undefined,
    prepareServer: payload.createRoles
      ? async (maintenance) => {
          // Roles are made on the server, outside the shadow: only from an archive known to be whole.
          progress(2, `checking ${manifest.id} before creating roles`);
          const reason = await damage;
          if (reason) throw damaged(reason);
          const made = await createMissingRoles(maintenance, manifest.roles!, new Set(payload.allowRoleAttributes));
          createdRoles = made.created;
          withheldFromRoles = made.withheld;
          log(
            createdRoles.length
              ? `created the roles this server lacked: ${createdRoles.join(', ')} (no passwords: set them before use)`
              : 'every role the backup needs exists already',
          );
          for (const item of made.withheld) {
            log(
              `role ${item.role} created without ${[...item.attributes, ...item.memberships.map((role) => `membership in ${role}`)].join(', ')} (allowRoleAttributes gives them)`,
            );
          }
        }
      : undefined,
    signal,
    progress,
    log,
    keepPrevious: payload.keepPrevious ?? config.RESTORE_KEEP_PREVIOUS,
    note: `replaced by restore of ${manifest.id} (job ${jobId})`,
    fill: async (shadowUrl, mark, fillSignal) => {
      const tocEntries = await toc;
      mark("read the archive's table of contents");
      const stop = new AbortController();
      void damage.then((reason) => reason && stop.abort());
      const items = new Set<string>();
      try {
        await restoreArchive(input, shadowUrl, {
          binDir,
          jobs: payload.jobs,
          extraArgs: payload.noOwner ? ['--no-owner', '--no-acl'] : [],
          signal: AbortSignal.any([fillSignal, stop.signal]),
          onLine: (line) => {
            log(line);
            const item = /(?:processing|finished) item (\d+) (.*)$/.exec(line);
            if (item?.[1] && !items.has(item[1])) {
              items.add(item[1]);
              progress(5 + (85 * items.size) / Math.max(tocEntries, items.size), `restoring ${item[2]}`);
            }
          },
        });
      } catch (error) {
        const reason = fillSignal.aborted ? undefined : await damage;
        throw reason ? damaged(reason) : error;
      }
      mark('pg_restore');
      const reason = await damage;
      if (reason) throw damaged(reason);
      mark('sha256 of the archive (what pg_restore did not overlap)');
    },
  });

  const schemaNote = schemaDifference(manifest.schemaVersion ?? null, replacedSchema ?? null);
  if (schemaNote) log(schemaNote);
  return {
    backupId: manifest.id,
    env: target.env,
    database: target.database,
    previousDatabase: replaced.previousDatabase,
    ...(schemaNote ? { schemaNote } : {}),
    durationMs: Date.now() - startedAt,
    lockWaitMs: replaced.lockWaitMs,
    lockAcquiredAt: replaced.lockAcquiredAt,
    lockReleasedAt: replaced.lockReleasedAt,
    steps: [...timer.steps, ...replaced.steps],
    ...(createdRoles ? { createdRoles } : {}),
    ...(withheldFromRoles?.length ? { withheldFromRoles } : {}),
    schemaVersion: manifest.schemaVersion ?? null,
  };
}
