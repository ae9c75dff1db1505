import { createHash, randomBytes } from 'node:crypto';

/*
 * The one owner of job ids. BullMQ accepts any string as a job id and makes it unique only within one
 * queue under one prefix: a schedule's jobs are `repeat:<scheduler>:<ms>`, another producer's are
 * numbers ("26"). So dbops names a job by all three (JobRef), never infers anything about a job from
 * the shape of its id, and stores ids on disk only through a reversible encoding.
 */

/** A job, unambiguously: the BullMQ prefix, the queue (worker type) and the id within it. */
export interface JobRef {
  prefix: string;
  queue: string;
  id: string;
}

/** The queue name of runs outside any queue (`--local`): their jobs can never be asked about. */
export const LOCAL_QUEUE = 'local';

/**
 * Ids dbops' own producer makes: `backup-20261125t120000-9f2c1a4be07d` (readable; the type is a hint
 * only). Six random bytes: BullMQ ignores an add whose id exists, so two ids alike would lose a job.
 */
export function newJobId(type: string, now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '')
    .toLowerCase();
  return `${type}-${stamp}-${randomBytes(6).toString('hex')}`;
}

export function describeJob(job: JobRef): string {
  return `${job.queue} job "${job.id}"`;
}

/**
 * How people name a job: `<type>/<id>`, unambiguous across queues (an id is unique only within its
 * queue), or a bare id, which is then looked for in every queue. Any id BullMQ accepts works, slashes
 * included (the type is what comes before the first one, when it is an operation type).
 */
export function parseJobReference(text: string, isType: (value: string) => boolean): { type?: string; id: string } {
  const slash = text.indexOf('/');
  if (slash > 0 && isType(text.slice(0, slash)) && slash < text.length - 1)
    return { type: text.slice(0, slash), id: text.slice(slash + 1) };
  return { id: text };
}

export function formatJobReference(type: string, id: string): string {
  return `${type}/${id}`;
}

const SAFE_BYTE = /^[A-Za-z0-9-]$/;
/** File names stay well under the 255-byte limit of common file systems. */
const MAX_ENCODED = 200;

/**
 * A file-safe, reversible name for any string: letters, digits and `-` stay, every other byte becomes
 * `_` and two hex digits (`repeat:backup.nightly:1` → `repeat_3abackup_2enightly_3a1`). Never `.`,
 * `..`, a slash or an empty name.
 */
export function encodeForPath(value: string): string {
  if (value === '') return '_';
  let encoded = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const char = String.fromCharCode(byte);
    encoded += SAFE_BYTE.test(char) ? char : `_${byte.toString(16).padStart(2, '0')}`;
  }
  if (encoded.length > MAX_ENCODED) throw new Error(`"${value.slice(0, 40)}…" is too long to name a work directory`);
  return encoded;
}

/** The inverse of encodeForPath; undefined for a name it did not make. */
export function decodeFromPath(name: string): string | undefined {
  if (name === '_') return '';
  if (!/^(?:[A-Za-z0-9-]|_[0-9a-f]{2})+$/.test(name)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < name.length;) {
    if (name[i] === '_') {
      bytes.push(Number.parseInt(name.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(name.charCodeAt(i));
      i += 1;
    }
  }
  const value = Buffer.from(bytes).toString('utf8');
  return encodeForPath(value) === name ? value : undefined;
}

/**
 * A readable, bounded, collision-free name for any string (a database's name in a job id or a backup
 * id): the value itself when it is short and only lower-case letters, digits and `-`; else its letters
 * and digits (cut to fit) and 12 hex digits of its SHA-256, so two different values never share a name.
 */
export function boundedName(value: string, max = 40): string {
  if (value.length <= max && /^[a-z0-9]+(-[a-z0-9]+)*$/.test(value)) return value;
  const readable = value
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, Math.max(max - 13, 0))
    .replace(/-+$/, '');
  const digest = createHash('sha256').update(value).digest('hex').slice(0, 12);
  return readable ? `${readable}-${digest}` : digest;
}

/** The BullMQ job scheduler id of a schedule: the operation first, so that its jobs' ids name their queue. */
export function schedulerId(schedule: { operation: string; name: string }): string {
  return `${schedule.operation}.${schedule.name}`;
}

/** The schedule a job came from, by its scheduler id (`<operation>.<name>`, BullMQ's repeatJobKey). */
export function scheduleNameOf(repeatJobKey: string | undefined): string | undefined {
  return repeatJobKey ? /^[a-z]+\.(.+)$/.exec(repeatJobKey)?.[1] : undefined;
}

/** Eight hex digits standing for a job id where a whole one does not fit (a table's name). */
export function jobTag(jobId: string): string {
  return createHash('sha256').update(jobId).digest('hex').slice(0, 8);
}
