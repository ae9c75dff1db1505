import type { JobsOptions } from 'bullmq';
import type { z } from 'zod';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';

export interface Progress {
  percent: number;
  step: string;
}

/** What a processor gets: its validated payload, and ways to report, all independent of BullMQ. */
export interface OperationContext<Payload> {
  jobId: string;
  /** 1 for the first run, 2 for the first retry… */
  attempt: number;
  payload: Payload;
  config: Config;
  logger: Logger;
  /** Aborted on cancellation, worker shutdown or a lost database lock: stop, clean up, throw. */
  signal: AbortSignal;
  /** Reports progress; cheap to call often (updates are coalesced). */
  progress(percent: number, step: string): void;
  /** Appends a line to the job's log (shown by the dashboard and `jobs show`). */
  log(line: string): void;
  /**
   * Enqueues a follow-up job (validated like any other), e.g. re-enabling triggers later. A fixed
   * `jobId` makes it idempotent across retries. Not available with --local (no queue).
   */
  enqueue(type: string, payload: unknown, options: { jobId: string; delayMs?: number }): Promise<void>;
  /** Results of the jobs this one waited for (see Operation.children). */
  childResults: unknown[];
}

/** Where a worker looks for what dead workers left behind, at start. */
export interface RecoveryContext {
  config: Config;
  logger: Logger;
  /** Whether a job of this type is still being worked on by a live worker. */
  isJobActive(jobId: string): Promise<boolean>;
}

/**
 * One operation type of the catalogue: everything about it in one place. Adding an operation means
 * writing one of these and registering it in ./index.ts.
 */
export interface Operation<Schema extends z.ZodType = z.ZodType, Result = unknown> {
  type: string;
  summary: string;
  /**
   * The worker type whose queue and processes run it; by default its own. Small companions of an
   * existing type (prune runs with backup, verify with restore) share its hosts and tools instead of
   * needing processes of their own.
   */
  queue?: string;
  /** The job payload: validated by producers before anything reaches Redis, and again by the worker. */
  schema: Schema;
  /** Checks against the configuration (environment known, confirmation given, backup exists). */
  precheck?(payload: z.output<Schema>, config: Config): Promise<void> | void;
  /**
   * Jobs that must succeed before this one runs (a BullMQ flow: this job waits for them; if one fails
   * for good, this one fails without running).
   */
  children?(payload: z.output<Schema>): { type: string; payload: unknown }[];
  /** Per-type job options on top of the defaults (attempts, backoff, retention). */
  jobOptions?: JobsOptions;
  process(context: OperationContext<z.output<Schema>>): Promise<Result>;
  recover?(context: RecoveryContext): Promise<void>;
  /** One line for people, e.g. the CLI after --wait. */
  describe?(result: Result): string;
}

export function defineOperation<Schema extends z.ZodType, Result>(operation: Operation<Schema, Result>): Operation<Schema, Result> {
  return operation;
}
