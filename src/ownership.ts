import type { Config } from './config.js';
import type { JobRef } from './job-ids.js';
import type { Logger } from './logger.js';

/*
 * What dbops may remove: only what it can prove it created (a record it wrote itself, where no SQL from a
 * job payload can reach) AND whose creating job is no longer active. Everything else that looks like
 * dbops' is reported, never removed.
 */

/**
 * A database dbops created (a restore's or copy's shadow, a verification's scratch database), or the
 * earlier version of a database that a restore or copy kept (`previous`: never removed by recovery, only
 * by `previous drop`).
 */
export interface CreatedDatabase {
  name: string;
  /** pg_database.oid at creation: a database renamed or recreated under the same name is not this one. */
  oid: number;
  kind: 'shadow' | 'scratch' | 'previous';
  /** The database whose lock the creating job holds while this one exists (a scratch database's own name). */
  target: string;
  job: JobRef;
  createdAt: string;
  /** Set while a swap keeps the target closed to connections, so that recovery can open it again. */
  targetClosed?: boolean;
}

/** dbops' own record of the databases it created, kept in Redis (see queue/ledger.ts). */
export interface DatabaseLedger {
  /** Adds or replaces the record of one database. */
  record(database: CreatedDatabase): Promise<void>;
  get(name: string): Promise<CreatedDatabase | undefined>;
  forget(name: string): Promise<void>;
}

/**
 * For runs outside the queue (`--local`): records nothing, so what such a run leaves behind when it is
 * killed is never removed by a worker (`maintenance report` lists it).
 */
export const unrecordedLedger: DatabaseLedger = {
  record: async () => undefined,
  get: async () => undefined,
  forget: async () => undefined,
};

/** What a worker's recovery of dead workers' leftovers is given. */
export interface RecoveryContext {
  config: Config;
  logger: Logger;
  /** The BullMQ prefix this worker serves: leftovers of another prefix's jobs are not its to judge. */
  prefix: string;
  /** Whether that job is being worked on by a live worker (its state is `active`). */
  isJobActive(job: JobRef): Promise<boolean>;
  ledger: DatabaseLedger;
}
