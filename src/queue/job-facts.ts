import type { Progress } from '../operations/operation.js';
import type { JobState } from 'bullmq';
import type { OperationType } from '../operations/index.js';

/*
 * Facts about a job summary that the CLI and the console both show. Light on purpose (no BullMQ):
 * the CLI loads its command modules at every start.
 */

/** A job as dbops shows it (CLI, console, API). */
export interface JobSummary {
  id: string;
  type: OperationType;
  /** `<type>/<id>`: names the job unambiguously (an id is unique only within its queue). */
  reference: string;
  /** BullMQ's state, or `cancelled` for a job stopped by `jobs cancel`. */
  state: JobState | 'cancelled' | 'unknown';
  /** Always `{percent, step}`: `{0, ''}` before the worker's first report. */
  progress: Progress;
  data: unknown;
  result: unknown;
  failedReason: string | null;
  attemptsMade: number;
  createdAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

/** The states a job is listed in: BullMQ's, and `cancelled` (a failed job whose reason says so). */
export const JOB_STATES = [
  'active',
  'waiting',
  'delayed',
  'prioritized',
  'waiting-children',
  'completed',
  'failed',
  'cancelled',
] as const;
export type ListedState = (typeof JOB_STATES)[number];

/** What a job works on, in a word: its environment (a copy's target), else the backup it reads; '' for none. */
export function jobTarget(summary: Pick<JobSummary, 'data'>): string {
  const payload = (summary.data ?? {}) as Record<string, unknown>;
  const target = payload.env ?? payload.to ?? payload.latest ?? payload.backup;
  return typeof target === 'string' ? target : '';
}

/** How long a job has run (until now, while it runs); undefined before it starts. */
export function jobDurationMs(
  summary: Pick<JobSummary, 'startedAt' | 'finishedAt'>,
  now = Date.now(),
): number | undefined {
  if (!summary.startedAt) return undefined;
  return (summary.finishedAt ? Date.parse(summary.finishedAt) : now) - Date.parse(summary.startedAt);
}

/**
 * A job's progress in its one published shape, `{percent, step}`, whatever BullMQ holds: its bare `0`
 * before the worker's first report, a number another producer's worker set, or dbops' own object.
 */
export function progressOf(raw: unknown, state: string): Progress {
  const step =
    raw && typeof raw === 'object' && typeof (raw as Progress).step === 'string' ? (raw as Progress).step : '';
  // A completed job is done, whatever its worker last reported (another producer's may report nothing).
  if (state === 'completed') return { percent: 100, step };
  if (typeof raw === 'number' && Number.isFinite(raw)) return { percent: raw, step: '' };
  const percent = raw && typeof raw === 'object' ? (raw as Partial<Progress>).percent : undefined;
  return { percent: typeof percent === 'number' && Number.isFinite(percent) ? percent : 0, step };
}

/** Why a job cannot be retried (Producer.retry's `not-failed`), in the same words wherever it is said. */
export const NOT_RETRYABLE =
  'only a failed or cancelled job can be retried (a completed job never runs again: enqueue a new one)';
