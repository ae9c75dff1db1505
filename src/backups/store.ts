import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { boundedName, type JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';
import * as z from 'zod';
import { ARCHIVE_NAME, type BackupFormat, type Manifest, type ManifestListing } from './manifest.js';
import { signatureSchema, type Seal } from './signing.js';

/*
 * A backup store keeps backups: each an archive (`<id>.dump`, or `<id>.d/` in directory format) and a
 * manifest (`<id>.json`) written last, so that an archive without one is never taken for a backup.
 * The file store (a directory) and the S3 store (a bucket and key prefix) keep the same layout; the
 * rest of dbops talks to this interface only, through the catalogue (catalogue.ts).
 */

export interface InUseMark {
  backupId: string;
  /** The job reading the backup; absent in marks written before dbops recorded it (kept, never judged). */
  job?: JobRef;
  pid: number;
  host: string;
}

const inUseMarkSchema = z.object({
  backupId: z.string().min(1),
  job: z.object({ prefix: z.string(), queue: z.string(), id: z.string() }).optional(),
  pid: z.number().int(),
  host: z.string(),
});

/** An in-use mark's content; undefined for anything else (a malformed object is skipped, never fatal). */
export function parseInUseMark(text: string): InUseMark | undefined {
  try {
    const parsed = inUseMarkSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a job leaves in a store while its archive is in place but not yet published (no manifest): which
 * job, which archive. Signed, so that recovery removes only what dbops' own job began, and only an
 * archive (never a manifest or another object), and only while no manifest names it.
 */
export const unpublishedMarkerSchema = z.object({
  job: z.object({ prefix: z.string(), queue: z.string(), id: z.string() }),
  archive: z.string().regex(ARCHIVE_NAME),
  pid: z.number().int(),
  host: z.string(),
  backupId: z.string().optional(),
  signature: signatureSchema.optional(),
});
export type UnpublishedMarker = z.infer<typeof unpublishedMarkerSchema>;

/** A marker's content when it is dbops' own (signed) and names `job` when one is given; else why not. */
export function openUnpublishedMarker(text: string, seal: Seal, job?: JobRef): UnpublishedMarker | { refused: string } {
  let parsed;
  try {
    parsed = unpublishedMarkerSchema.safeParse(JSON.parse(text));
  } catch {
    return { refused: 'not JSON' };
  }
  if (!parsed.success) return { refused: `damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}` };
  const marker = parsed.data;
  const refused = seal.check('upload-marker', marker);
  if (refused) return { refused };
  if (job && (marker.job.prefix !== job.prefix || marker.job.queue !== job.queue || marker.job.id !== job.id))
    return { refused: 'it names another job' };
  return marker;
}

/** A new marker for `job`'s archive of backup `id`, signed. */
export function newUnpublishedMarker(seal: Seal, job: JobRef, id: string, archive: string): UnpublishedMarker {
  return seal.sign('upload-marker', { job, archive, ...newInUseMark(id, job) });
}

export type Integrity = { ok: true } | { ok: false; reason: string };

/** An archive being written into one store; nothing of it counts as a backup until the manifest is written. */
export interface ArchiveWriter {
  /** Custom format: where the archive's bytes go, as they come. */
  sink(): Writable;
  /** Directory format: takes a complete archive directory on this host (moves it, with `mayTake`, where it can). */
  putDirectory(localDir: string, signal: AbortSignal, mayTake?: boolean): Promise<void>;
  /** Waits until the store holds the whole archive under its final name (still without manifest). */
  complete(): Promise<void>;
  /** After the manifest is written: forgets what recovery would otherwise remove. */
  published(): Promise<void>;
  /** Gives up: whatever was written is removed (an incomplete multipart upload is aborted). */
  abort(): Promise<void>;
}

export interface BackupStore {
  /** As BACKUP_STORES names it (`--store NAME`). */
  readonly name: string;
  /** Where it is, for people: `file:///dir`, `s3://bucket/prefix`; never a credential. */
  readonly location: string;
  readonly kind: 'file' | 's3';
  /**
   * Every manifest dbops can prove its own (signed, named after its backup), oldest first; whatever
   * else looks like a manifest is skipped, with the reason, and never acted on.
   */
  list(): Promise<ManifestListing>;
  /** The manifest of `id` (a checked backup id), undefined when this store does not hold it; a manifest that is not dbops' own is an error. */
  read(id: string): Promise<Manifest | undefined>;
  /** Signed and written whole, atomically as the store allows: from then on the backup exists here. */
  writeManifest(manifest: Manifest): Promise<void>;
  /** Deletes a backup: the manifest first, so that a half-deleted backup is never listed as one. */
  remove(manifest: Manifest): Promise<void>;
  /** Reads the whole archive and compares it with the manifest. */
  checkIntegrity(manifest: Manifest): Promise<Integrity>;
  /** The archive's path when it is a file or directory on this host (the file store), else undefined. */
  localArchive(manifest: Manifest): string | undefined;
  /** A custom-format archive's bytes, as stored (encrypted if it is). */
  openArchive(manifest: Manifest, signal?: AbortSignal): Promise<Readable>;
  /**
   * Copies the archive into `dir` (a private work directory): its path there, and its check against
   * the manifest when the copy could be checked on the way (no second read of it then).
   */
  download(manifest: Manifest, dir: string, signal?: AbortSignal): Promise<{ path: string; integrity?: Integrity }>;
  /** Starts writing the archive of backup `id` for `job`. */
  beginArchive(job: JobRef, id: string, format: BackupFormat): Promise<ArchiveWriter>;
  /**
   * Marks a backup as being read by a job until the returned function is called. Taken before the
   * manifest is read, so that a prune either sees the mark or has already removed the backup.
   */
  markInUse(backupId: string, job: JobRef): Promise<() => Promise<void>>;
  inUseMarks(): Promise<InUseMark[]>;
  /** Keeps a server's roles beside its backups (`roles/<name>.json`); returns that name. */
  writeRoles(name: string, roles: unknown): Promise<string>;
  /** Removes what dead jobs of this prefix left: unfinished archives, uploads and in-use marks. */
  recover(context: RecoveryContext): Promise<void>;

  // The point-in-time area (`pitr/` in the store, see src/pitr/): WAL and base backups, never listed as
  // backups. Keys are checked names (pitrKey); what an object holds is judged by its signed sidecar.
  /** Writes an object whole: it appears under its name only complete. */
  putObject(key: string, body: Readable | Buffer | string, signal?: AbortSignal): Promise<void>;
  /** An object's bytes; undefined when there is none. */
  getObject(key: string, signal?: AbortSignal): Promise<Readable | undefined>;
  /** The objects directly under `prefix` (names relative to it), with their sizes. */
  listObjects(prefix: string): Promise<{ name: string; size: number }[]>;
  removeObject(key: string): Promise<void>;
  /**
   * A directory kept as it is (the file store only): moved, with `mayTake`, where it can be. On its way
   * in it lies in the job's work area, which recovery clears once the job is gone.
   */
  putTree?(job: JobRef, key: string, localDir: string, mayTake: boolean): Promise<void>;
  /** The path of a directory kept with putTree, when it exists. */
  treePath?(key: string): Promise<string | undefined>;
  /**
   * Removes what a writer killed mid-write left directly under `prefix` (the file store only: S3 has no
   * half-written objects): its own temporary files (putObject's), of an object named as `names` says,
   * untouched for `olderThanMs`. Returns the object names they were for.
   */
  sweepTemporaries?(prefix: string, names: RegExp, olderThanMs: number): Promise<string[]>;
}

const PITR_KEY = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}(\/[A-Za-z0-9_][A-Za-z0-9._-]{0,200}){0,4}$/;

/** A key of the point-in-time area, checked: names of letters, digits, `.`, `_`, `-`, never `..`. */
export function pitrKey(key: string): string {
  if (!PITR_KEY.test(key) || key.split('/').some((part) => part.startsWith('.')))
    throw new Error(`not a point-in-time object name: "${key}"`);
  return key;
}

/**
 * `<env>-<time>-<random>`; a backup of another database on the environment's server (--all-databases)
 * also names it: `<env>-<database>-<time>-<random>` (boundedName: a name of any length and alphabet
 * fits, and two names never read the same). Six random bytes, as job ids have: two backups of one
 * environment in the same second never share an id. Ids of three random bytes (older backups) stay valid.
 */
export function newBackupId(env: string, now = new Date(), otherDatabase?: string): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'z')
    .toLowerCase();
  const database = otherDatabase ? `${boundedName(otherDatabase, 32)}-` : '';
  return `${env}-${database}${stamp}-${randomBytes(6).toString('hex')}`;
}

export function archiveName(id: string, format: BackupFormat): string {
  return format === 'custom' ? `${id}.dump` : `${id}.d`;
}

/** Whether the process that left a mark may still be running: only a process on this host can be asked. */
function markMayBeAlive(mark: InUseMark): boolean {
  if (mark.host !== os.hostname()) return true;
  try {
    process.kill(mark.pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a mark's reader is provably gone: its job is no longer active, or (--local) its process is dead. */
export async function markIsStale(
  mark: InUseMark,
  { prefix, isJobActive }: Pick<RecoveryContext, 'prefix' | 'isJobActive'>,
  localQueue: string,
): Promise<boolean> {
  if (!mark.job) return false;
  if (mark.job.queue === localQueue) return !markMayBeAlive(mark);
  return mark.job.prefix === prefix && !(await isJobActive(mark.job));
}

export function newInUseMark(backupId: string, job: JobRef): InUseMark {
  return { backupId, job, pid: process.pid, host: os.hostname() };
}
