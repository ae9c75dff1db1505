import type { JobState } from 'bullmq';
import { normalizeEnvName } from '../config.js';
import { ValidationError } from '../errors.js';
import { isOperationType, type OperationType } from '../operations/index.js';
import { JOB_STATES, type JobSummary, type ListedState } from './job-facts.js';

export const MAX_LISTED_JOBS = 1_000;

/** Which jobs to list: every criterion given must hold. */
export interface JobFilter {
  types?: OperationType[];
  states?: ListedState[];
  /** The environment a job works on or copies from or to. */
  env?: string;
  /** Queued at or after / before. */
  since?: Date;
  until?: Date;
  /** Case-insensitive, in the job's id, payload, result and failure reason. */
  text?: string;
  limit: number;
}

/** A duration back from now (`30m`, `12h`, `7d`) or an ISO 8601 time. */
export function parseTime(value: string, name: string, now = Date.now()): Date {
  const relative = /^(\d+)\s*(s|m|h|d|w)$/.exec(value.trim());
  if (relative) {
    const seconds = { s: 1, m: 60, h: 3_600, d: 86_400, w: 604_800 }[relative[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return new Date(now - Number(relative[1]) * seconds * 1_000);
  }
  const at = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(at))
    throw new ValidationError(`${name}: "${value}" is neither a duration (30m, 12h, 7d) nor an ISO 8601 time`);
  return new Date(at);
}

/** A filter in words, as `jobs list`'s flags and `GET /api/v1/jobs`'s query parameters give it. */
export const JOB_FILTER_WORDS = ['type', 'state', 'env', 'since', 'until', 'search', 'limit'] as const;
export type JobFilterWords = Partial<Record<(typeof JOB_FILTER_WORDS)[number], string>>;

/** A filter from words; anything it cannot read is a ValidationError naming it. */
export function parseJobFilter(raw: JobFilterWords): JobFilter {
  const list = (value: string | undefined) =>
    value
      ?.split(',')
      .map((item) => item.trim())
      .filter(Boolean);
  const types = list(raw.type);
  for (const type of types ?? [])
    if (!isOperationType(type)) throw new ValidationError(`type: unknown operation type "${type}"`);
  const states = list(raw.state);
  for (const state of states ?? [])
    if (!(JOB_STATES as readonly string[]).includes(state))
      throw new ValidationError(`state: unknown state "${state}" (one of ${JOB_STATES.join(', ')})`);
  const limit = raw.limit === undefined || raw.limit === '' ? 50 : Number(raw.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LISTED_JOBS)
    throw new ValidationError(`limit: must be a whole number from 1 to ${MAX_LISTED_JOBS}`);
  return {
    types: types?.length ? (types as OperationType[]) : undefined,
    states: states?.length ? (states as ListedState[]) : undefined,
    env: raw.env ? normalizeEnvName(raw.env) : undefined,
    since: raw.since ? parseTime(raw.since, 'since') : undefined,
    until: raw.until ? parseTime(raw.until, 'until') : undefined,
    text: raw.search?.trim() ? raw.search.trim().toLowerCase() : undefined,
    limit,
  };
}

/** The BullMQ states to read for a filter (cancelled jobs are failed ones). */
export function bullStatesOf(filter: Pick<JobFilter, 'states'>): JobState[] {
  const states = filter.states ?? JOB_STATES;
  return [...new Set(states.map((state) => (state === 'cancelled' ? 'failed' : state)))];
}

/**
 * Whether only each job's summary can tell if it matches: its environment, time or text; a type (a
 * queue also holds its companions' jobs and misplaced ones); failed or cancelled, but not both (BullMQ
 * holds both as failed). Else a queue's and state's newest jobs are the answer.
 */
export function filtersEachJob(filter: Partial<JobFilter>): boolean {
  const states = filter.states;
  return Boolean(
    filter.env ||
    filter.since ||
    filter.until ||
    filter.text ||
    filter.types ||
    (states && states.includes('failed') !== states.includes('cancelled')),
  );
}

/** The environments a job's payload names: its target, a copy's source and target. */
export function environmentsOf(data: unknown): string[] {
  const payload = (data ?? {}) as Record<string, unknown>;
  return [payload.env, payload.from, payload.to]
    .filter((value): value is string => typeof value === 'string')
    .map(normalizeEnvName);
}

export function matchesFilter(summary: JobSummary, filter: JobFilter): boolean {
  if (filter.types && !filter.types.includes(summary.type)) return false;
  if (filter.states && !filter.states.includes(summary.state as ListedState)) return false;
  if (filter.env && !environmentsOf(summary.data).includes(filter.env)) return false;
  const created = summary.createdAt ? Date.parse(summary.createdAt) : Number.NaN;
  if (filter.since && !(created >= filter.since.getTime())) return false;
  if (filter.until && !(created < filter.until.getTime())) return false;
  if (filter.text) {
    const haystack = [
      summary.reference,
      JSON.stringify(summary.data),
      JSON.stringify(summary.result),
      summary.failedReason,
    ]
      .join('\n')
      .toLowerCase();
    if (!haystack.includes(filter.text)) return false;
  }
  return true;
}
