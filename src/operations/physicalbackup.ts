import * as z from 'zod';
import { BackupCatalogue } from '../backups/catalogue.js';
import { StepTimer } from '../postgres/replace.js';
import { resolveTarget } from '../postgres/target.js';
import { prunePhysical, takeBaseBackup } from '../pitr/base-backup.js';
import { pitrServers } from '../pitr/archiver.js';
import { PitrArchive } from '../pitr/wal-archive.js';
import { envName, stepTimings } from './fields.js';
import { defineOperation } from './operation.js';

const schema = z.strictObject({
  env: envName,
});

const result = z.object({
  id: z.string(),
  env: z.string(),
  server: z.string().meta({ description: "the server's system identifier: WAL and base backups are kept per server" }),
  timeline: z.number(),
  startLsn: z.string(),
  stopLsn: z.string(),
  sizeBytes: z.number(),
  durationMs: z.number(),
  stores: z.array(z.string()),
  archived: z.boolean().meta({
    description:
      "whether the server's WAL is archived (PITR_ENVS): without it, only the backup's own end can be restored",
  }),
  pruned: z
    .object({
      bases: z.array(z.string()),
      walFiles: z.number(),
      inUse: z.array(z.string()).meta({
        description: 'older base backups kept because a restore or drill is reading them (pruned by a later backup)',
      }),
    })
    .optional()
    .meta({ description: 'with a retention policy (last=N): the base backups and WAL files removed' }),
  steps: stepTimings,
});
export type PhysicalBackupResult = z.infer<typeof result>;

export const physicalbackup = defineOperation({
  type: 'physicalbackup',
  queue: 'backup',
  summary:
    "a base backup of an environment's whole server (pg_basebackup, checked with pg_verifybackup), for point-in-time recovery",
  schema,
  result,
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [{ payload: { env: 'production' } }],
  async process(context): Promise<PhysicalBackupResult> {
    const { payload, config, job, signal } = context;
    const startedAt = Date.now();
    const timer = new StepTimer();
    const target = resolveTarget(config, payload.env);
    const catalogue = BackupCatalogue.of(config);
    const archived = config.pitrEnvs.includes(target.env);
    const envs: Record<string, string> = { [target.env]: target.database };
    if (archived && config.pitrEnvs.length > 1) {
      // Other environments on the same server, named in the manifest; one whose server is down is not on it.
      for (const group of (await pitrServers(config)).groups)
        if (group.envs[target.env] !== undefined) Object.assign(envs, group.envs);
    }
    try {
      const workDir = await catalogue.workArea.partialDir(job);
      timer.mark('prepare');
      const manifest = await takeBaseBackup({
        config,
        env: target.env,
        url: target.url,
        envs,
        job,
        workDir,
        signal,
        progress: context.progress,
        mark: (step) => timer.mark(step),
      });
      context.log(
        `base backup ${manifest.id}: ${manifest.startLsn} to ${manifest.stopLsn} on timeline ${manifest.timeline}`,
      );
      let pruned: PhysicalBackupResult['pruned'];
      const keep = config.retentionFor(target.env)?.last;
      if (keep) {
        const archive = await PitrArchive.of(config);
        pruned = { bases: [], walFiles: 0, inUse: [] };
        for (const index of archive.stores.keys()) {
          const one = await prunePhysical(archive, index, manifest.server, keep);
          pruned.bases.push(...one.bases.filter((id) => !pruned!.bases.includes(id)));
          pruned.inUse.push(...one.inUse.filter((id) => !pruned!.inUse.includes(id)));
          pruned.walFiles += one.walFiles;
        }
        for (const id of pruned.inUse) context.log(`kept base backup ${id}: a restore is reading it`);
        timer.mark('retention');
      }
      return {
        id: manifest.id,
        env: target.env,
        server: manifest.server,
        timeline: manifest.timeline,
        startLsn: manifest.startLsn,
        stopLsn: manifest.stopLsn,
        sizeBytes: manifest.sizeBytes,
        durationMs: Date.now() - startedAt,
        stores: catalogue.stores.map((store) => store.name),
        archived,
        ...(pruned ? { pruned } : {}),
        steps: timer.steps,
      };
    } finally {
      await catalogue.workArea.removePartial(job);
    }
  },
  async recover(context) {
    await BackupCatalogue.of(context.config).recover(context);
  },
  describe: (result) =>
    `base backup ${result.id} of ${result.env}'s server (${result.startLsn} to ${result.stopLsn}, ${Math.round(result.sizeBytes / 2 ** 20)} MiB)` +
    (result.archived ? '' : '; its WAL is not archived (PITR_ENVS): only this moment can be restored'),
});
