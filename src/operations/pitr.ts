import * as z from 'zod';
import { PermanentError } from '../errors.js';
import { connect } from '../postgres/client.js';
import { userTables } from '../postgres/catalog.js';
import { digestTables } from '../postgres/compare.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { StepTimer, recoverCreatedDatabases, replaceDatabase } from '../postgres/replace.js';
import { resolveTarget, withDatabase } from '../postgres/target.js';
import { recoverInstances, startRecovery } from '../pitr/recovery-instance.js';
import { archiveOfEnv } from '../pitr/servers.js';
import { PitrArchive } from '../pitr/wal-archive.js';
import { isLsn } from '../pitr/wal-names.js';
import { planRecovery, type RecoveryTarget } from '../pitr/window.js';
import { streamCopy, verifyCopy } from './copy.js';
import { confirmField, envName, fieldGiven, stepTimings, storeName, withRules } from './fields.js';
import { defineOperation } from './operation.js';

const ISO_WITH_ZONE = /^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d(:?\d\d)?)$/;

const schema = withRules(
  z.strictObject({
    env: envName,
    from: envName.meta({
      description: "the environment whose database is recovered (as its server's archive names it)",
    }),
    toTime: z
      .string()
      .refine((value) => ISO_WITH_ZONE.test(value) && !Number.isNaN(Date.parse(value)), {
        message: 'expected an ISO 8601 time with its zone, e.g. 2026-12-01T14:32:00Z',
      })
      .optional()
      .meta({ description: 'recover to this moment (ISO 8601): every transaction committed up to it, none after' }),
    toLsn: z
      .string()
      .refine(isLsn, { message: 'expected a WAL position such as 0/3000060' })
      .optional()
      .meta({ description: 'recover to this WAL position' }),
    latestWal: z.literal(true).optional().meta({ description: 'recover to the end of the archived WAL' }),
    confirm: confirmField,
    store: storeName,
    keepPrevious: z.boolean().optional().meta({
      description: 'keep the replaced database as <name>_prev_<time> (default RESTORE_KEEP_PREVIOUS)',
    }),
    verify: z.boolean().default(false).meta({
      description:
        'compare every table of the recovered database with what lands in the shadow database before the swap',
    }),
  }),
  [
    {
      path: 'toTime',
      message: 'name one target: toTime, toLsn or latestWal',
      broken: (payload) =>
        [payload.toTime, payload.toLsn, payload.latestWal].filter((value) => value !== undefined).length !== 1,
      schema: { oneOf: [fieldGiven('toTime'), fieldGiven('toLsn'), fieldGiven('latestWal')] },
    },
  ],
);

const result = z.object({
  env: z.string(),
  from: z.string(),
  database: z.string(),
  server: z.string(),
  baseBackup: z.string(),
  target: z.string().meta({ description: 'the target as asked: a time, a position, or latest' }),
  recoveredTo: z.string().optional().meta({ description: "where recovery stopped, as PostgreSQL's log said it" }),
  walSegments: z.number(),
  verified: z.boolean(),
  previousDatabase: z.string().optional(),
  durationMs: z.number(),
  steps: stepTimings,
});
export type PitrResult = z.infer<typeof result>;

function targetOf(payload: { toTime?: string; toLsn?: string; latestWal?: true }): RecoveryTarget {
  if (payload.toTime) return { time: payload.toTime };
  if (payload.toLsn) return { lsn: payload.toLsn };
  return { latest: true };
}

export const pitr = defineOperation({
  type: 'pitr',
  queue: 'restore',
  summary:
    "restore an environment's database as it was at a moment (base backup + archived WAL, replayed in a private temporary instance), through a shadow database swapped in on success",
  schema,
  result,
  changes: (payload) => payload.env,
  changesWhen: 'always: it replaces `env`',
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [
    { payload: { env: 'staging', from: 'production', toTime: '2026-12-01T14:32:00Z' } },
    { payload: { env: 'production', from: 'production', latestWal: true, confirm: 'production' } },
    {
      payload: { env: 'staging', from: 'production' },
      refused: 'toTime: name one target: toTime, toLsn or latestWal',
    },
  ],
  async process(context): Promise<PitrResult> {
    const { payload, config, job, signal } = context;
    const startedAt = Date.now();
    const timer = new StepTimer();
    const target = resolveTarget(config, payload.env);
    const archive = await PitrArchive.of(config);
    const found = await archiveOfEnv(archive, payload.from, payload.store);
    for (const line of found.skipped) context.log(`passed over ${line}`);
    const recoveryTarget = targetOf(payload);
    // Decided before anything is fetched: a target outside the window, or a gap, fails here.
    const plan = planRecovery(found.server, found.bases, found.entries, found.status, recoveryTarget);
    context.log(
      `recovering ${payload.from} (database "${found.database}") from base backup ${plan.base.id} and ${plan.wal.length} WAL segment(s) in the ${found.store.name} store`,
    );
    timer.mark('plan');
    const configured = config.environments.get(payload.from);
    const user = configured ? decodeURIComponent(new URL(configured.url).username) || 'postgres' : 'postgres';
    const instance = await startRecovery({
      config,
      archive,
      store: found.store,
      plan,
      target: recoveryTarget,
      job,
      user,
      signal,
      progress: context.progress,
      log: context.log,
    });
    try {
      timer.mark('recover');
      const sourceUrl = instance.url(found.database);
      const probe = await connect(sourceUrl, `dbops:pitr:${context.jobId}`).catch((error: unknown) => {
        throw new PermanentError(
          `the recovered server has no database "${found.database}" (${(error as Error).message})`,
        );
      });
      let tables: number;
      try {
        tables = (await userTables(probe)).length;
      } finally {
        await probe.end().catch(() => undefined);
      }
      const binDir = await toolDirForServers(
        [sourceUrl, withDatabase(target.url, config.PG_MAINTENANCE_DB)],
        config.PG_BIN_DIR,
        `dbops:pitr:${context.jobId}`,
      );
      const replaced = await replaceDatabase(target, {
        config,
        owner: context,
        kind: 'restore',
        signal,
        progress: context.progress,
        log: context.log,
        keepPrevious: payload.keepPrevious ?? config.RESTORE_KEEP_PREVIOUS,
        note: `replaced by ${payload.from} as of ${payload.toTime ?? payload.toLsn ?? 'the latest WAL'} (job ${context.jobId})`,
        fill: async (shadowUrl, mark, fillSignal) => {
          await streamCopy(context, {
            source: { env: payload.from, database: found.database, url: sourceUrl },
            shadowUrl,
            signal: fillSignal,
            snapshot: undefined,
            tables,
            binDir,
          });
          mark('pg_dump | pg_restore');
          if (payload.verify) {
            await verifyCopy(
              context,
              async () => {
                const client = await connect(sourceUrl, `dbops:pitr:${context.jobId}`);
                try {
                  return await digestTables(client);
                } finally {
                  await client.end().catch(() => undefined);
                }
              },
              shadowUrl,
            );
            mark('verify');
          }
        },
      });
      return {
        env: target.env,
        from: payload.from,
        database: target.database,
        server: found.server,
        baseBackup: plan.base.id,
        target: payload.toTime ?? payload.toLsn ?? 'latest',
        ...(instance.stoppedAt ? { recoveredTo: instance.stoppedAt } : {}),
        walSegments: plan.wal.length,
        verified: payload.verify,
        ...(replaced.previousDatabase ? { previousDatabase: replaced.previousDatabase } : {}),
        durationMs: Date.now() - startedAt,
        steps: [...timer.steps, ...replaced.steps],
      };
    } finally {
      await instance.stop();
    }
  },
  async recover(context) {
    await recoverInstances(context);
    await recoverCreatedDatabases(context);
  },
  describe: (result) =>
    `restored ${result.from} as of ${result.target} into ${result.env} (database "${result.database}", base backup ${result.baseBackup} + ${result.walSegments} WAL segments)` +
    (result.previousDatabase ? `; the previous database is kept as "${result.previousDatabase}"` : ''),
});
