import type { JobsOptions } from 'bullmq';
import type * as z from 'zod';
import type { Config } from '../config.js';
import type { JobRef } from '../job-ids.js';
import type { Logger } from '../logger.js';
import type { DatabaseLedger, RecoveryContext } from '../ownership.js';

export interface Progress {
  percent: number;
  step: string;
}

/** What a processor gets: its validated payload, and ways to report, all independent of BullMQ. */
export interface OperationContext<Payload> {
  /** The job's id within its queue (`job.id`); `job` names it unambiguously. */
  jobId: string;
  job: JobRef;
  /** Where the databases this job creates are recorded, so that only those are ever dropped as leftovers. */
  ledger: DatabaseLedger;
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
  /** Results of the jobs this one waited for (see Operation.children, awaitChildren). */
  childResults: unknown[];
  /**
   * Runs these jobs as this job's children, each an ordinary job of its type (validated, retried on its
   * own), and resolves with their results once all succeeded; one that fails for good fails this job.
   * Under a worker this job waits in the queue meanwhile and runs again from the start (with
   * `childResults` set); a fixed `jobId` per child makes that idempotent. --local runs them in turn.
   */
  awaitChildren(children: { type: string; payload: unknown; jobId: string }[]): Promise<unknown[]>;
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
  /** What a completed job returns (published as JSON Schema, with the payload's, in docs/jobs.md). */
  result: z.ZodType<Result>;
  /**
   * The environment whose database or backups this job would change; undefined when it changes nothing
   * (a report, a list, a dry run). The worker enforces, whoever the producer: such a job on a protected
   * environment carries `confirm` equal to the environment's name, and once completed it never runs again.
   */
  changes?(payload: z.output<Schema>): string | undefined;
  /** When `changes` names an environment, in words, for the published contract (docs/jobs.md). */
  changesWhen?: string;
  /** A question rather than a task (a status, a list, a report): the CLI waits for its answer unless told not to. */
  answers?(payload: z.output<Schema>): boolean;
  /** Checks against the configuration (environment known, backup exists). */
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
  /**
   * Payloads for docs/jobs.md, on environments `production` (protected) and `staging`: ones a worker
   * runs, and ones it refuses (`refused`: the field and why). tests/job-contract.test.ts feeds each to
   * the served JSON Schema and to the validate call, which must agree with it.
   */
  examples?: PayloadExample[];
}

export interface PayloadExample {
  payload: Record<string, unknown>;
  /** What the worker answers: `field: reason`; absent for a payload it runs. */
  refused?: string;
}

export function defineOperation<Schema extends z.ZodType, Result>(
  operation: Operation<Schema, Result>,
): Operation<Schema, Result> {
  return operation;
}
