import type { JobSummary } from './producer.js';

/*
 * Facts about a job summary that the CLI and the console both show. Light on purpose (no BullMQ):
 * the CLI loads its command modules at every start.
 */

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
