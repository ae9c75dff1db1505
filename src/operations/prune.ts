import * as z from 'zod';
import type { Manifest } from '../backups/manifest.js';
import { planRetention } from '../backups/retention.js';
import { describeRetention, parseRetention, type RetentionPolicy } from '../retention-policy.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import type { BackupStore } from '../backups/store.js';
import { ValidationError } from '../errors.js';
import { confirmField, envName, storeName } from './fields.js';
import { defineOperation } from './operation.js';

const policyText = z
  .string()
  .max(200)
  .superRefine((value, context) => {
    try {
      parseRetention(value);
    } catch (error) {
      context.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });

const schema = z.strictObject({
  env: envName.optional().meta({ description: 'only this environment (default: every environment with a policy)' }),
  dryRun: z.boolean().default(false).meta({ description: 'show what would be deleted; delete nothing' }),
  policy: policyText
    .optional()
    .meta({ description: 'instead of BACKUP_RETENTION: e.g. last=7,daily=7,weekly=4,monthly=12' }),
  confirm: confirmField,
  store: storeName.meta({
    description: 'prune one backup store (BACKUP_STORES name); default: each store, on its own',
  }),
});

const envResult = z.object({
  store: z.string().meta({ description: 'the backup store (retention applies to each store on its own)' }),
  env: z.string(),
  database: z.string().meta({ description: "each database's backups are a chain of their own (--all-databases)" }),
  policy: z.string().nullable(),
  kept: z.array(z.object({ id: z.string(), completedAt: z.string(), reasons: z.array(z.string()) })),
  pruned: z.array(z.object({ id: z.string(), completedAt: z.string(), reason: z.string() })),
});
export type PruneEnvResult = z.infer<typeof envResult>;

const result = z.object({
  dryRun: z.boolean(),
  environments: z.array(envResult),
  skipped: z.array(z.object({ store: z.string(), name: z.string(), reason: z.string() })).meta({
    description:
      "objects in the stores that look like manifests but are not provably dbops' own: never pruned, never acted on",
  }),
});
export type PruneResult = z.infer<typeof result>;

export const prune = defineOperation({
  type: 'prune',
  queue: 'backup',
  summary: 'apply retention (last N verified, then daily/weekly/monthly) to the backups in each backup store',
  schema,
  result,
  // Without an environment, protected ones are left out (they are pruned one by one, confirmed).
  changes: (payload) => (payload.dryRun ? undefined : payload.env),
  changesWhen: 'an `env` pruned for real (without `env`, protected environments are left alone)',
  precheck(payload, config) {
    if (payload.env && !payload.policy && !config.retentionFor(payload.env)) {
      const variable = `BACKUP_RETENTION_${payload.env.toUpperCase().replace(/-/g, '_')}`;
      throw new ValidationError(
        `no retention policy for ${payload.env}: set BACKUP_RETENTION or ${variable}, or pass --policy`,
      );
    }
  },
  examples: [
    { payload: { env: 'staging', dryRun: true, policy: 'last=3' } },
    { payload: { env: 'staging', policy: 'last=7,daily=7,weekly=4' } },
    { payload: { env: 'staging', keep: 3 }, refused: 'keep: unknown field' },
  ],
  async process({ payload, config, progress, log }): Promise<PruneResult> {
    const catalogue = BackupCatalogue.of(config);
    const result: PruneResult = { dryRun: payload.dryRun, environments: [], skipped: [] };
    // Each store on its own: a backup one store lost is not a reason to delete it from another.
    for (const store of catalogue.select(payload.store)) {
      const listing = await store.list();
      for (const { store: where, name, reason } of listing.skipped) {
        result.skipped.push({ store: where, name, reason });
        log(`skipped ${name} in the ${where} store: ${reason}`);
      }
      // Only signed manifests, each pruned only in its own environment's namespace of ids.
      const all = listing.manifests.filter(
        (manifest) => (!payload.env || manifest.env === payload.env) && manifest.id.startsWith(`${manifest.env}-`),
      );
      const envs = payload.env ? [payload.env] : [...new Set(all.map((manifest) => manifest.env))].sort();
      for (const [index, env] of envs.entries()) {
        progress((100 * index) / Math.max(envs.length, 1), `applying retention to ${env} in the ${store.name} store`);
        const policy: RetentionPolicy | undefined = payload.policy
          ? parseRetention(payload.policy)
          : config.retentionFor(env);
        const ofEnv = all.filter((manifest) => manifest.env === env);
        for (const database of [...new Set(ofEnv.map((manifest) => manifest.database))].sort()) {
          const manifests = ofEnv.filter((manifest) => manifest.database === database);
          const keepAll = (reason: string) =>
            result.environments.push({
              store: store.name,
              env,
              database,
              policy: policy ? describeRetention(policy) : null,
              kept: manifests.map((m) => ({ id: m.id, completedAt: m.completedAt, reasons: [reason] })),
              pruned: [],
            });
          if (!payload.env && !payload.dryRun && config.protectedEnvs.has(env))
            keepAll(`protected: prune it with env ${env} and confirm ${env}`);
          else if (!policy) keepAll('no policy');
          else await pruneChain(store, env, database, manifests, policy);
        }
      }
    }
    progress(100, payload.dryRun ? 'dry run: nothing deleted' : 'retention applied');
    return result;

    async function pruneChain(
      store: BackupStore,
      env: string,
      database: string,
      manifests: Manifest[],
      policy: RetentionPolicy,
    ): Promise<void> {
      const inUse = new Set((await store.inUseMarks()).map((mark) => mark.backupId));
      const plan = planRetention(manifests, policy, inUse);
      const pruned: PruneEnvResult['pruned'] = [];
      for (const { manifest, reason } of plan.prune) {
        if (!payload.dryRun) {
          // Asked again just before deleting: a restore that started meanwhile keeps its backup.
          if ((await store.inUseMarks()).some((mark) => mark.backupId === manifest.id)) continue;
          await store.remove(manifest);
          log(`pruned ${manifest.id} from the ${store.name} store (${reason})`);
        }
        pruned.push({ id: manifest.id, completedAt: manifest.completedAt, reason });
      }
      result.environments.push({
        store: store.name,
        env,
        database,
        policy: describeRetention(policy),
        kept: plan.keep.map(({ manifest, reasons }) => ({
          id: manifest.id,
          completedAt: manifest.completedAt,
          reasons,
        })),
        pruned,
      });
    }
  },
  describe: (result) =>
    result.environments
      .map((env) =>
        [
          `${env.env} (database ${env.database}, ${env.store} store): ${env.policy ? `policy ${env.policy}` : 'no policy, everything kept'}; ${env.kept.length} kept, ${env.pruned.length} ${result.dryRun ? 'would be pruned' : 'pruned'}`,
          ...env.kept.map((item) => `  keep   ${item.id}  ${item.completedAt}  (${item.reasons.join(', ')})`),
          ...env.pruned.map(
            (item) => `  ${result.dryRun ? 'would prune' : 'pruned'} ${item.id}  ${item.completedAt}  (${item.reason})`,
          ),
        ].join('\n'),
      )
      .concat(result.skipped.map((item) => `skipped ${item.name} in the ${item.store} store: ${item.reason}`))
      .join('\n') || 'no backups',
});
