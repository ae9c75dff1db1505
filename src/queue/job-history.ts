import type { Job } from 'bullmq';
import type { Config } from '../config.js';
import { formatJobReference } from '../job-ids.js';
import type { Operation } from '../operations/operation.js';
import { scrubSecrets } from '../secrets.js';
import type { HistoryDraft, HistoryState } from './history-entry.js';
import { environmentsOf } from './job-filter.js';
import { describeRequester, type Requester } from './requester.js';

/** Plain fields of an object, scrubbed and cut short; nested values, `confirm` and server paths left out. */
function plainFields(
  value: unknown,
  config: Pick<Config, 'secrets'>,
  leaveOut: readonly string[],
): Record<string, string | number | boolean> {
  const fields: Record<string, string | number | boolean> = {};
  if (!value || typeof value !== 'object' || Array.isArray(value)) return fields;
  for (const [name, member] of Object.entries(value)) {
    if (leaveOut.includes(name)) continue;
    if (typeof member === 'string') fields[name] = scrubSecrets(member, config.secrets).slice(0, 300);
    else if (typeof member === 'number' || typeof member === 'boolean') fields[name] = member;
  }
  return fields;
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

/** A finished job, as the history keeps it. */
export function historyDraft(input: {
  job: Pick<Job, 'id' | 'data' | 'timestamp' | 'processedOn' | 'attemptsMade'>;
  type: string;
  operation: Operation | undefined;
  config: Pick<Config, 'secrets'>;
  state: HistoryState;
  requester: Requester;
  result?: unknown;
  reason?: string;
  startedAt?: number;
  cancelledBy?: Requester;
  /** What else to take out of the outcome (the worker's own directories). */
  clean?: (text: string) => string;
  now?: number;
}): HistoryDraft {
  const { job, operation, config } = input;
  const now = input.now ?? Date.now();
  // The payload as the operation reads it when it is valid; else the job's data as it came.
  const parsed = operation?.schema.safeParse(job.data);
  const payload: unknown = parsed?.success ? parsed.data : job.data;
  const envs = [...new Set(environmentsOf(payload))];
  let changed: string | undefined;
  try {
    changed = parsed?.success ? operation?.changes?.(parsed.data as never) : undefined;
  } catch {
    changed = undefined;
  }
  let outcome = input.reason ?? '';
  if (input.state === 'completed') {
    try {
      outcome = operation?.describe?.(input.result as never) ?? 'completed';
    } catch {
      outcome = 'completed';
    }
  }
  const startedAt = input.startedAt ?? job.processedOn;
  return {
    at: new Date(now).toISOString(),
    id: job.id!,
    reference: formatJobReference(input.type, job.id!),
    type: input.type,
    env: changed ?? envs.at(-1) ?? null,
    envs,
    state: input.state,
    requestedBy: describeRequester(input.requester),
    requester: input.requester,
    requestedAt: iso(job.timestamp),
    startedAt: iso(startedAt),
    durationMs: startedAt ? now - startedAt : null,
    attempts: input.state === 'cancelled' && !startedAt ? 0 : job.attemptsMade + 1,
    payload: plainFields(payload, config, ['confirm']),
    outcome: (input.clean ?? ((text: string) => text))(
      scrubSecrets(outcome.split('\n')[0] ?? '', config.secrets),
    ).slice(0, 500),
    facts: plainFields(input.result, config, ['path']),
    ...(input.cancelledBy ? { cancelledBy: describeRequester(input.cancelledBy) } : {}),
  };
}
