import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { connect } from './client.js';
import { withDatabase, type DatabaseTarget } from './target.js';

/*
 * One destructive job per database at a time, across every worker on every host.
 *
 * The lock is a PostgreSQL session-level advisory lock, held on a connection to the server's maintenance
 * database, rather than a Redis lock, because:
 *  - the server releases it the moment the holder's connection dies (worker killed, host lost), so a
 *    crash can never block a database forever, with no TTL to tune against jobs that run for hours;
 *  - it works without Redis, so `manage-db --local` takes the same lock in an emergency;
 *  - it lives where the database lives: two environment names for one database share one lock.
 * A lost lock connection aborts the job holding it (see `lost`).
 */

const NAMESPACE = 0x64626f70 & 0x7fffffff; // "dbop"

function lockKey(database: string): number {
  return createHash('sha256').update(database).digest().readInt32BE(0) & 0x7fffffff;
}

export interface DatabaseLock {
  /** Aborted if the connection holding the lock is lost: the caller must stop its work. */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface AcquireOptions {
  maintenanceDb: string;
  /** Shown to other waiters, e.g. `dbops:restore:job-id`. */
  holder: string;
  signal?: AbortSignal;
  /** Called once while waiting, with the application_name of whoever holds the lock. */
  onWait?: (heldBy: string | undefined) => void;
  pollMs?: number;
}

async function tryLock(client: pg.Client, key: number): Promise<boolean> {
  const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', [
    NAMESPACE,
    key,
  ]);
  return rows[0]?.locked === true;
}

async function currentHolder(client: pg.Client, key: number): Promise<string | undefined> {
  const { rows } = await client.query<{ application_name: string }>(
    `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.objsubid = 2`,
    [NAMESPACE, key],
  );
  return rows[0]?.application_name;
}

function holdLock(client: pg.Client, key: number): DatabaseLock {
  const lost = new AbortController();
  const onLost = () => lost.abort(new Error('lost the connection that holds the database lock'));
  client.on('error', onLost);
  client.on('end', onLost);
  let released = false;
  return {
    lost: lost.signal,
    async release() {
      if (released) return;
      released = true;
      client.off('error', onLost);
      client.off('end', onLost);
      await client.query('SELECT pg_advisory_unlock($1, $2)', [NAMESPACE, key]).catch(() => undefined);
      await client.end().catch(() => undefined);
    },
  };
}

/** Waits for the lock on the target's database, polling so that the wait can be cancelled. */
export async function acquireDatabaseLock(target: DatabaseTarget, options: AcquireOptions): Promise<DatabaseLock> {
  const key = lockKey(target.database);
  const client = await connect(withDatabase(target.url, options.maintenanceDb), options.holder, target.env);
  try {
    let announced = false;
    while (!(await tryLock(client, key))) {
      options.signal?.throwIfAborted();
      if (!announced) {
        announced = true;
        options.onWait?.(await currentHolder(client, key));
      }
      await sleep(options.pollMs ?? 500, undefined, { signal: options.signal });
    }
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return holdLock(client, key);
}

/** Takes the lock only if it is free right now; undefined otherwise. */
export async function tryDatabaseLock(
  target: DatabaseTarget,
  options: AcquireOptions,
): Promise<DatabaseLock | undefined> {
  const key = lockKey(target.database);
  const client = await connect(withDatabase(target.url, options.maintenanceDb), options.holder, target.env);
  try {
    if (await tryLock(client, key)) return holdLock(client, key);
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  await client.end().catch(() => undefined);
  return undefined;
}

/** The progress step shown while a job waits for a database's lock. */
export function waitingForLock(database: string, heldBy: string | undefined): string {
  return `waiting for the lock on database "${database}" (held by ${heldBy ?? 'another job'})`;
}

/**
 * Runs `fn` on a connection to the target database while holding its lock (waiting for it first,
 * and saying so in the job's progress); the connection is closed and the lock released afterwards.
 */
export async function withLockedDatabase<T>(
  target: DatabaseTarget,
  options: {
    maintenanceDb: string;
    holder: string;
    signal: AbortSignal;
    progress(percent: number, step: string): void;
  },
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const lock = await acquireDatabaseLock(target, {
    maintenanceDb: options.maintenanceDb,
    holder: options.holder,
    signal: options.signal,
    onWait: (heldBy) => options.progress(0, waitingForLock(target.database, heldBy)),
  });
  try {
    const client = await connect(target.url, options.holder, target.env);
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  } finally {
    await lock.release();
  }
}
