import type pg from 'pg';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import type { RecoveryContext } from '../ownership.js';
import { connect } from './client.js';
import { applyIdentity, missingRoles, readIdentity, rolesOf, type DatabaseIdentity } from './identity.js';
import {
  createShadowDatabase,
  discardLeftover,
  dropCreatedDatabase,
  findCreatedDatabases,
  swapInShadow,
  type DatabaseOwner,
} from './databases.js';
import { acquireDatabaseLock, tryDatabaseLock, waitingForLock } from './lock.js';
import { withDatabase, type DatabaseTarget } from './target.js';

export interface ReplaceOptions {
  config: Config;
  /** The job replacing the target, and the ledger where its shadow database is recorded. */
  owner: DatabaseOwner;
  kind: string;
  signal: AbortSignal;
  progress(percent: number, step: string): void;
  /** A line for the job's log. */
  log(line: string): void;
  keepPrevious: boolean;
  note: string;
  /**
   * The identity the new database gets (settings, grants, comment, connection limit, owner, tablespace);
   * by default the target's own, read from the catalog.
   */
  identity?: DatabaseIdentity;
  /** Runs on the server's maintenance database before the shadow is created (e.g. creating roles). */
  prepareServer?(maintenance: pg.Client): Promise<void>;
  /**
   * Fills the empty shadow database; must stop when its signal aborts. `mark(step)` closes a step of
   * its own for the result's timings (the rest of the fill is timed as "fill").
   */
  fill(shadowUrl: string, mark: (step: string) => void, signal: AbortSignal): Promise<void>;
}

export interface ReplaceResult {
  previousDatabase?: string;
  lockWaitMs: number;
  lockAcquiredAt: string;
  lockReleasedAt: string;
  /** How long each step took, in order: where a replacement's seconds go. */
  steps: StepTiming[];
}

export interface StepTiming {
  step: string;
  ms: number;
}

/** Times the steps of a job, one after the other: each `mark` closes the step that ran since the last. */
export class StepTimer {
  readonly steps: StepTiming[] = [];
  private last = Date.now();

  mark(step: string): void {
    const now = Date.now();
    this.steps.push({ step, ms: now - this.last });
    this.last = now;
  }
}

/**
 * Replaces the target database as a whole, under its per-database lock: fill a shadow database, swap it
 * in by rename. Any failure before the swap drops the shadow and leaves the target exactly as it was.
 */
export async function replaceDatabase(target: DatabaseTarget, options: ReplaceOptions): Promise<ReplaceResult> {
  const { config, owner, progress } = options;
  const jobId = owner.job.id;
  const waitStarted = Date.now();
  const timer = new StepTimer();
  const lock = await acquireDatabaseLock(target, {
    maintenanceDb: config.PG_MAINTENANCE_DB,
    holder: `dbops:${options.kind}:${jobId}`,
    signal: options.signal,
    onWait: (heldBy) => progress(4, waitingForLock(target.database, heldBy)),
  });
  const lockAcquiredAt = new Date();
  timer.mark('lock');
  const signal = AbortSignal.any([options.signal, lock.lost]);
  const maintenance = await connect(
    withDatabase(target.url, config.PG_MAINTENANCE_DB),
    `dbops:${options.kind}:${jobId}`,
    target.env,
  );
  try {
    // Holding the target's lock, no live job is filling a shadow of it: any that dbops recorded is a dead
    // worker's, left when the server had not yet released that worker's lock as the next worker started.
    const { proven } = await findCreatedDatabases(maintenance, owner.ledger);
    for (const leftover of proven.filter(
      (found) => found.record.kind === 'shadow' && found.record.target === target.database,
    )) {
      await discardLeftover(maintenance, leftover, owner.ledger);
      options.log(`dropped the shadow database "${leftover.name}" of a dead worker (job ${leftover.record.job.id})`);
    }
    await options.prepareServer?.(maintenance);
    const identity = options.identity ?? (await readIdentity(maintenance, target.database));
    const missing = identity ? await missingRoles(maintenance, rolesOf(identity)) : [];
    if (missing.length > 0) {
      throw new PermanentError(
        `the database's owner, grants or settings name roles this server lacks: ${missing.join(', ')} (create them, or restore with createRoles or noOwner); ${target.env} was not touched`,
      );
    }
    timer.mark('checks');
    progress(5, 'creating the shadow database');
    const record = await createShadowDatabase(maintenance, target.database, owner, identity);
    const shadow = record.name;
    timer.mark('create shadow');
    try {
      let marked = false;
      await options.fill(
        withDatabase(target.url, shadow),
        (step) => {
          marked = true;
          timer.mark(step);
        },
        signal,
      );
      if (!marked) timer.mark('fill');
      signal.throwIfAborted();
      if (identity) {
        progress(91, 'giving the new database the settings, grants, comment and limits of the one it replaces');
        await applyIdentity(maintenance, shadow, identity);
        options.log(
          `the new database has ${options.identity ? "the backup's source" : 'the replaced database'}'s owner, settings, grants, comment and connection limit`,
        );
      }
      timer.mark('identity');
      progress(92, `swapping the new database in as "${target.database}"`);
      const swapped = await swapInShadow(maintenance, target.database, shadow, {
        keepPrevious: options.keepPrevious,
        note: options.note,
        record,
        ledger: owner.ledger,
        comment: identity?.comment ?? null,
      });
      timer.mark(options.keepPrevious ? 'swap' : 'swap and drop the previous database');
      progress(100, 'done');
      return {
        steps: timer.steps,
        previousDatabase: swapped.previousDatabase,
        lockWaitMs: lockAcquiredAt.getTime() - waitStarted,
        lockAcquiredAt: lockAcquiredAt.toISOString(),
        lockReleasedAt: new Date().toISOString(),
      };
    } catch (error) {
      await dropCreatedDatabase(maintenance, shadow, owner.ledger).catch(() => undefined);
      throw error;
    }
  } finally {
    await maintenance.end().catch(() => undefined);
    await lock.release();
  }
}

/**
 * Drops the databases that dbops created (its ledger proves it: name and OID) for jobs that are no
 * longer active, on every configured server. A job's work on a database is active exactly while it holds
 * that database's lock (taken before its shadow or scratch database is created, released after it is
 * dropped or swapped in; the server releases it the moment the job's process dies), so a free lock proves
 * the attempt that made the database is gone, sooner than the queue notices. Anything unproven is only logged.
 */
export async function recoverCreatedDatabases({ config, logger, ledger }: RecoveryContext): Promise<void> {
  const servers = new Map<string, DatabaseTarget>();
  for (const environment of config.environments.values()) {
    const url = new URL(environment.url);
    servers.set(`${url.host}${url.searchParams.get('host') ?? ''}`, {
      env: environment.name,
      database: '',
      url: environment.url,
    });
  }
  for (const server of servers.values()) {
    let maintenance;
    try {
      maintenance = await connect(withDatabase(server.url, config.PG_MAINTENANCE_DB), 'dbops:recovery');
    } catch (error) {
      logger.warn({ env: server.env, err: error }, 'could not look for leftover databases');
      continue;
    }
    try {
      const { proven, unproven } = await findCreatedDatabases(maintenance, ledger);
      for (const leftover of proven) {
        const lock = await tryDatabaseLock(
          { ...server, database: leftover.record.target },
          { maintenanceDb: config.PG_MAINTENANCE_DB, holder: 'dbops:recovery' },
        );
        if (!lock) continue;
        try {
          await discardLeftover(maintenance, leftover, ledger);
          logger.info(
            { database: leftover.name, target: leftover.record.target, job: leftover.record.job },
            `dropped the ${leftover.record.kind} database of a dead worker`,
          );
        } finally {
          await lock.release();
        }
      }
      for (const found of unproven)
        logger.warn(
          { database: found.name, why: found.why },
          'left alone: dbops cannot prove it created this database',
        );
    } finally {
      await maintenance.end().catch(() => undefined);
    }
  }
}
