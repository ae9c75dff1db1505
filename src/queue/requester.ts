import os from 'node:os';
import type { Config } from '../config.js';
import { scheduleNameOf } from '../job-ids.js';
import type { RedisConnection } from './connection.js';

/**
 * Who asked for a job, as the history records it. dbops' own producers (the CLI, the API, the console,
 * a worker's follow-up) write it beside the job before adding it; a job scheduler's job says so itself
 * (BullMQ's repeatJobKey); any other job came from "a BullMQ producer".
 */
export interface Requester {
  via: 'cli' | 'api' | 'console' | 'schedule' | 'job' | 'library' | 'producer';
  /** user@host, the API token's name, the console's user, the schedule's name, the parent job. */
  name: string;
  /** Who the caller said it acts for (the API's X-Dbops-On-Behalf-Of), as said: not proven. */
  onBehalfOf?: string;
}

export const A_BULLMQ_PRODUCER: Requester = { via: 'producer', name: 'a BullMQ producer' };

/** The person running this process: `user@host`. */
export function localUser(): string {
  let user = process.env.USER ?? 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // no passwd entry for this uid (a container): keep $USER
  }
  return `${user}@${os.hostname()}`;
}

export function cliRequester(): Requester {
  return { via: 'cli', name: localUser() };
}

/** One line: `alice@db1 (CLI)`, `API token "deploy-bot"`, `schedule "nightly"`, `a BullMQ producer`. */
export function describeRequester(requester: Requester): string {
  const said = {
    cli: `${requester.name} (CLI)`,
    api: `API token "${requester.name}"`,
    console: `console user "${requester.name}"`,
    schedule: `schedule "${requester.name}"`,
    job: `job ${requester.name}`,
    library: `${requester.name} (dbops library)`,
    producer: requester.name,
  }[requester.via];
  return requester.onBehalfOf ? `${said} for "${requester.onBehalfOf}"` : said;
}

/** What a caller says of itself, made safe to keep and show: one line, printable, at most 100 characters. */
export function cleanClaim(text: string | undefined): string | undefined {
  const cleaned = text
    ?.replace(/[^\x20-\x7e\u00a0-\uffff]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 100);
  return cleaned || undefined;
}

function requesterKey(config: Pick<Config, 'QUEUE_PREFIX'>, queue: string, jobId: string): string {
  return `${config.QUEUE_PREFIX}:dbops:requested:${queue}:${jobId}`;
}

/** Kept at most as long as BullMQ keeps a failed job (30 days), for a retry's entry to say who asked too. */
const STAMP_SECONDS = 30 * 86_400;

export async function stampRequester(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
  queue: string,
  jobId: string,
  requester: Requester,
): Promise<void> {
  await connection.set(requesterKey(config, queue, jobId), JSON.stringify(requester), 'EX', STAMP_SECONDS);
}

/** Once a job is over for good (completed, cancelled), its stamp goes with it; a failed job's stays for a retry. */
export async function forgetRequester(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
  queue: string,
  jobId: string,
): Promise<void> {
  await connection.del(requesterKey(config, queue, jobId));
}

/** Who asked for a job: its stamp, else its schedule, else a BullMQ producer. */
export async function requesterOf(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
  job: { queueName: string; id?: string; repeatJobKey?: string },
): Promise<Requester> {
  const text = await connection.get(requesterKey(config, job.queueName, job.id!));
  if (text) {
    try {
      const stamp = JSON.parse(text) as Requester;
      if (typeof stamp.name === 'string' && typeof stamp.via === 'string') return stamp;
    } catch {
      // not ours: fall through
    }
  }
  const schedule = scheduleNameOf(job.repeatJobKey);
  if (schedule) return { via: 'schedule', name: schedule };
  return A_BULLMQ_PRODUCER;
}
