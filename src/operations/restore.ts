import { z } from 'zod';
import { backupIdSchema } from '../backups/manifest.js';
import { BackupStore } from '../backups/store.js';
import { PermanentError, errorMessage } from '../errors.js';
import { recoverShadowDatabases, replaceDatabase } from '../postgres/replace.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { resolveTarget, withDatabase } from '../postgres/target.js';
import { StderrTail, countTocEntries, finishTool, startTool } from '../postgres/tools.js';
import { envName, parallelJobs, requireConfirmation } from './fields.js';
import { defineOperation } from './operation.js';

const schema = z.strictObject({
  env: envName,
  backup: backupIdSchema,
  confirm: z.string().max(200).optional(),
  jobs: parallelJobs.default(2),
  /** Keep the replaced database under a dated name (default: RESTORE_KEEP_PREVIOUS, true). */
  keepPrevious: z.boolean().optional(),
});

export interface RestoreResult {
  backupId: string;
  env: string;
  database: string;
  /** Where the database that was replaced now lives, when it was kept. */
  previousDatabase?: string;
  durationMs: number;
  lockWaitMs: number;
  lockAcquiredAt: string;
  lockReleasedAt: string;
}

export const restore = defineOperation({
  type: 'restore',
  summary: 'restore a backup into an environment, through a shadow database swapped in on success',
  schema,
  async precheck(payload, config) {
    resolveTarget(config, payload.env);
    requireConfirmation(config, payload.env, payload.confirm);
    await new BackupStore(config.backupDir).get(payload.backup);
  },
  async process({ payload, config, jobId, signal, progress, log }): Promise<RestoreResult> {
    const startedAt = Date.now();
    const target = resolveTarget(config, payload.env);
    const store = new BackupStore(config.backupDir);
    const manifest = await store.get(payload.backup);

    // Everything about the archive is checked before the target is touched. The sha256 is computed
    // while pg_restore fills the shadow database (it costs a full read of the archive); the swap waits
    // for it, and a mismatch stops pg_restore and drops the shadow.
    progress(1, `checking ${manifest.id}`);
    const damage: Promise<string | undefined> = store.checkIntegrity(manifest).then(
      (integrity) => (integrity.ok ? undefined : integrity.reason),
      (error: unknown) => `cannot read it (${errorMessage(error)})`,
    );
    const damaged = (reason: string) => new PermanentError(`the archive is damaged: ${reason}; ${target.env} was not touched`);
    const archive = store.archivePath(manifest);
    const binDir = await toolDirForServers([withDatabase(target.url, config.PG_MAINTENANCE_DB)], config.PG_BIN_DIR, `dbops:restore:${jobId}`);
    // The table of contents is read while the lock is taken and the shadow created; pg_restore waits for it.
    const toc = countTocEntries(archive, binDir, signal).catch(async (error: unknown) => {
      const reason = await damage;
      throw reason ? damaged(reason) : error;
    });
    toc.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled

    const replaced = await replaceDatabase(target, {
      config,
      jobId,
      kind: 'restore',
      signal,
      progress,
      keepPrevious: payload.keepPrevious ?? config.RESTORE_KEEP_PREVIOUS,
      note: `replaced by restore of ${manifest.id} (job ${jobId})`,
      fill: async (shadowUrl, fillSignal) => {
        const tocEntries = await toc;
        const stop = new AbortController();
        void damage.then((reason) => reason && stop.abort());
        const tail = new StderrTail();
        const items = new Set<string>();
        const child = startTool('pg_restore', ['--verbose', '--no-password', '--exit-on-error', `--jobs=${payload.jobs}`, archive], {
          url: shadowUrl,
          signal: AbortSignal.any([fillSignal, stop.signal]),
          binDir,
          onStderrLine: (line) => {
            tail.push(line);
            log(line);
            const item = /(?:processing|finished) item (\d+) (.*)$/.exec(line);
            if (item?.[1] && !items.has(item[1])) {
              items.add(item[1]);
              progress(5 + (85 * items.size) / Math.max(tocEntries, items.size), `restoring ${item[2]}`);
            }
          },
        });
        try {
          await finishTool('pg_restore', child, tail);
        } catch (error) {
          const reason = fillSignal.aborted ? undefined : await damage;
          throw reason ? damaged(reason) : error;
        }
        const reason = await damage;
        if (reason) throw damaged(reason);
      },
    });

    return {
      backupId: manifest.id,
      env: target.env,
      database: target.database,
      previousDatabase: replaced.previousDatabase,
      durationMs: Date.now() - startedAt,
      lockWaitMs: replaced.lockWaitMs,
      lockAcquiredAt: replaced.lockAcquiredAt,
      lockReleasedAt: replaced.lockReleasedAt,
    };
  },
  recover: recoverShadowDatabases,
  describe: (result) =>
    `restored ${result.backupId} into ${result.env} (database "${result.database}")` +
    (result.previousDatabase ? `; the previous database is kept as "${result.previousDatabase}"` : ''),
});
