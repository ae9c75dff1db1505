import * as z from 'zod';
import { countTocEntries, prepareArchive } from '../backups/archive-input.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import { backupIdSchema, type Verification } from '../backups/manifest.js';
import { withScratchRestore } from '../backups/scratch.js';
import { ArchiveProblem, PermanentError, ValidationError } from '../errors.js';
import { connect } from '../postgres/client.js';
import { countRows, rowCountDifferences } from '../postgres/compare.js';
import { toolDirForArchive } from '../postgres/binaries.js';
import { resolveTarget } from '../postgres/target.js';
import { envName, fieldGiven, storeName, withRules } from './fields.js';
import { defineOperation } from './operation.js';

const schema = withRules(
  z.strictObject({
    backup: backupIdSchema.optional().meta({ description: 'the backup to check' }),
    latest: envName.optional().meta({
      description: 'instead of backup: the newest backup of this environment (what a scheduled drill checks)',
    }),
    full: z.boolean().default(false).meta({
      description: 'also restore it into a scratch database (then dropped) and compare row counts with the manifest',
    }),
    env: envName.optional().meta({
      description: "with full: the environment whose server holds the scratch database (default: the backup's own)",
    }),
    store: storeName,
  }),
  [
    {
      path: 'backup',
      message: 'name a backup id, or --latest ENV (one of them)',
      broken: (payload) => (payload.backup === undefined) === (payload.latest === undefined),
      schema: { oneOf: [fieldGiven('backup'), fieldGiven('latest')] },
    },
  ],
);

const result = z.object({
  backupId: z.string(),
  env: z.string(),
  level: z.enum(['toc', 'full']),
  ok: z.literal(true),
  tocEntries: z.number().int(),
  tablesCompared: z
    .number()
    .int()
    .optional()
    .meta({ description: 'tables whose rows were counted in the scratch restore (full only)' }),
  durationMs: z.number(),
  skipped: z.array(z.string()).optional().meta({
    description:
      "with latest: objects in the stores passed over because they are not provably dbops' own, each with why",
  }),
});
export type VerifyResult = z.infer<typeof result>;

async function pickBackup(catalogue: BackupCatalogue, payload: { backup?: string; latest?: string; store?: string }) {
  if (payload.backup) return { ...(await catalogue.get(payload.backup, payload.store)), skipped: [] };
  const { manifest: newest, skipped } = await catalogue.newest(payload.latest!, { store: payload.store });
  const passedOver = skipped.map((item) => `${item.name} in the ${item.store} store: ${item.reason}`);
  if (!newest) {
    const note = passedOver.length ? ` (passed over, not dbops' own: ${passedOver.join('; ')})` : '';
    throw new ValidationError(`no backup of ${payload.latest}${note}`, [
      { path: 'latest', message: 'no backup of this environment' },
    ]);
  }
  return { ...(await catalogue.get(newest.id, payload.store)), skipped: passedOver };
}

export const verify = defineOperation({
  type: 'verify',
  queue: 'restore',
  summary: 'check a backup: sha256 and table of contents; --full restores it into a scratch database and counts rows',
  schema,
  result,
  async precheck(payload, config) {
    if (payload.backup) await BackupCatalogue.of(config).get(payload.backup, payload.store);
    if (payload.env) resolveTarget(config, payload.env);
  },
  examples: [
    { payload: { latest: 'production', full: true } },
    { payload: { full: true }, refused: 'backup: name a backup id, or --latest ENV (one of them)' },
  ],
  async process(context): Promise<VerifyResult> {
    const { payload, config, job, jobId, signal, progress, log } = context;
    const startedAt = Date.now();
    const catalogue = BackupCatalogue.of(config);
    const level: Verification['level'] = payload.full ? 'full' : 'toc';
    const { store, manifest: picked, skipped } = await pickBackup(catalogue, payload);
    for (const line of skipped) log(`passed over ${line}`);
    const release = await store.markInUse(picked.id, job);
    try {
      const { manifest } = await catalogue.get(picked.id, store.name); // still there, now that prune sees the mark
      let tocEntries = 0;
      let tablesCompared: number | undefined;
      try {
        progress(2, `checking the sha256 of ${manifest.id}`);
        const integrity = await store.checkIntegrity(manifest);
        if (!integrity.ok) throw new ArchiveProblem(integrity.reason);
        progress(payload.full ? 10 : 80, 'reading the table of contents');
        const { input } = await prepareArchive(store, manifest, config, {
          workDir: () => catalogue.workArea.jobSubdir(job, 'download'),
          signal,
        });
        // A pg_restore older than the pg_dump that made the archive cannot read it: that is not damage.
        const binDir = await toolDirForArchive(manifest.pgDumpVersion, config.PG_BIN_DIR);
        tocEntries = await countTocEntries(input, binDir, signal);
        if (payload.full) {
          const server = resolveTarget(config, payload.env ?? manifest.env);
          progress(15, `restoring ${manifest.id} into a scratch database on ${server.env}'s server`);
          tablesCompared = await withScratchRestore(
            server,
            manifest,
            {
              config,
              store,
              workArea: catalogue.workArea,
              owner: context,
              holder: `dbops:verify:${jobId}`,
              signal,
              onLine: log,
              withoutRoles: true,
            },
            async (scratchUrl) => {
              progress(85, 'counting rows');
              const client = await connect(scratchUrl, `dbops:verify:${jobId}`);
              try {
                const counts = await countRows(client, (table, index, total) =>
                  progress(85 + (10 * index) / Math.max(total, 1), `counting ${table}`),
                );
                if (!manifest.rowCounts) {
                  log('this backup has no row counts in its manifest (made by an older dbops): restored, not compared');
                  return 0;
                }
                const found = rowCountDifferences(manifest.rowCounts, counts);
                if (found.length > 0)
                  throw new ArchiveProblem(
                    `the restored rows differ from the manifest: ${found.slice(0, 10).join('; ')}`,
                  );
                return Object.keys(counts).length;
              } finally {
                await client.end().catch(() => undefined);
              }
            },
          );
        }
      } catch (error) {
        // Only the archive's own faults are recorded against it; a lost connection or a cancel is not.
        if (error instanceof ArchiveProblem && !signal.aborted) {
          await catalogue.recordVerification(manifest.id, {
            at: new Date().toISOString(),
            level,
            ok: false,
            reason: error.message,
            jobId,
            durationMs: Date.now() - startedAt,
          });
          throw new PermanentError(`backup ${manifest.id} is damaged: ${error.message}`);
        }
        throw error;
      }
      const durationMs = Date.now() - startedAt;
      await catalogue.recordVerification(manifest.id, {
        at: new Date().toISOString(),
        level,
        ok: true,
        jobId,
        durationMs,
      });
      progress(100, `backup ${manifest.id} verified (${level})`);
      return {
        backupId: manifest.id,
        env: manifest.env,
        level,
        ok: true,
        tocEntries,
        tablesCompared,
        durationMs,
        ...(skipped.length ? { skipped } : {}),
      };
    } finally {
      await release();
      await catalogue.workArea.removeJobSubdir(job, 'download');
    }
  },
  // Its leftovers (scratch databases, in-use marks) are of a restore's kinds, recovered by the restore
  // worker it runs on.
  describe: (result) =>
    `${result.backupId}: ok (sha256 matches, ${result.tocEntries} table of contents entries` +
    (result.level === 'full'
      ? `; restored into a scratch database, ${result.tablesCompared} tables' row counts match the manifest)`
      : ')'),
});
