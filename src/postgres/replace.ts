import type { Config } from '../config.js';
import type { RecoveryContext } from '../operations/operation.js';
import { connect } from './client.js';
import { createShadowDatabase, discardShadow, dropDatabase, listShadowDatabases, swapInShadow } from './databases.js';
import { acquireDatabaseLock, tryDatabaseLock, waitingForLock } from './lock.js';
import { withDatabase, type DatabaseTarget } from './target.js';

export interface ReplaceOptions {
  config: Config;
  jobId: string;
  kind: string;
  signal: AbortSignal;
  progress(percent: number, step: string): void;
  /** A line for the job's log. */
  log(line: string): void;
  keepPrevious: boolean;
  note: string;
  /** Fills the empty shadow database; must stop when its signal aborts. */
  fill(shadowUrl: string, signal: AbortSignal): Promise<void>;
}

export interface ReplaceResult {
  previousDatabase?: string;
  lockWaitMs: number;
  lockAcquiredAt: string;
  lockReleasedAt: string;
}

/**
 * Replaces the target database as a whole, under its per-database lock: fill a shadow database, swap it
 * in by rename. Any failure before the swap drops the shadow and leaves the target exactly as it was.
 */
export async function replaceDatabase(target: DatabaseTarget, options: ReplaceOptions): Promise<ReplaceResult> {
  const { config, jobId, progress } = options;
  const waitStarted = Date.now();
  const lock = await acquireDatabaseLock(target, {
    maintenanceDb: config.PG_MAINTENANCE_DB,
    holder: `dbops:${options.kind}:${jobId}`,
    signal: options.signal,
    onWait: (heldBy) => progress(4, waitingForLock(target.database, heldBy)),
  });
  const lockAcquiredAt = new Date();
  const signal = AbortSignal.any([options.signal, lock.lost]);
  const maintenance = await connect(withDatabase(target.url, config.PG_MAINTENANCE_DB), `dbops:${options.kind}:${jobId}`);
  try {
    // Holding the target's lock, no live job is filling a shadow of it: any there is a dead worker's,
    // left when the server had not yet released that worker's lock as the next worker started.
    for (const leftover of (await listShadowDatabases(maintenance)).filter((shadow) => shadow.target === target.database)) {
      await discardShadow(maintenance, leftover);
      options.log(`dropped the shadow database "${leftover.name}" of a dead worker (job ${leftover.job})`);
    }
    progress(5, 'creating the shadow database');
    const shadow = await createShadowDatabase(maintenance, target.database, jobId);
    try {
      await options.fill(withDatabase(target.url, shadow), signal);
      signal.throwIfAborted();
      progress(92, `swapping the new database in as "${target.database}"`);
      const swapped = await swapInShadow(maintenance, target.database, shadow, { keepPrevious: options.keepPrevious, note: options.note, jobId });
      progress(100, 'done');
      return {
        previousDatabase: swapped.previousDatabase,
        lockWaitMs: lockAcquiredAt.getTime() - waitStarted,
        lockAcquiredAt: lockAcquiredAt.toISOString(),
        lockReleasedAt: new Date().toISOString(),
      };
    } catch (error) {
      await dropDatabase(maintenance, shadow).catch(() => undefined);
      throw error;
    }
  } finally {
    await maintenance.end().catch(() => undefined);
    await lock.release();
  }
}

/**
 * At worker start: drops shadow databases that no live job is filling. A shadow's target lock is free
 * only when its job is gone (a live job holds that lock for as long as its shadow exists).
 */
export async function recoverShadowDatabases({ config, logger }: RecoveryContext): Promise<void> {
  const servers = new Map<string, DatabaseTarget>();
  for (const environment of config.environments.values()) {
    const url = new URL(environment.url);
    servers.set(`${url.host}${url.searchParams.get('host') ?? ''}`, { env: environment.name, database: '', url: environment.url });
  }
  for (const server of servers.values()) {
    let maintenance;
    try {
      maintenance = await connect(withDatabase(server.url, config.PG_MAINTENANCE_DB), 'dbops:recovery');
    } catch (error) {
      logger.warn({ env: server.env, err: error }, 'could not look for leftover shadow databases');
      continue;
    }
    try {
      for (const shadow of await listShadowDatabases(maintenance)) {
        const lock = await tryDatabaseLock({ ...server, database: shadow.target }, { maintenanceDb: config.PG_MAINTENANCE_DB, holder: 'dbops:recovery' });
        if (!lock) continue;
        try {
          await discardShadow(maintenance, shadow);
          logger.info({ shadow: shadow.name, target: shadow.target, job: shadow.job }, 'dropped the shadow database of a dead worker');
        } finally {
          await lock.release();
        }
      }
    } finally {
      await maintenance.end().catch(() => undefined);
    }
  }
}
