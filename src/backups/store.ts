import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PermanentError, ValidationError } from '../errors.js';
import { LOCAL_QUEUE, decodeFromPath, encodeForPath, type JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';
import { sha256Directory, sha256File } from './checksum.js';
import { backupIdSchema, lastVerification, manifestSchema, type BackupFormat, type Manifest, type Verification } from './manifest.js';

/*
 * BACKUP_DIR layout:
 *   <id>.dump | <id>.d/      the archive (custom format file, or directory format)
 *   <id>.json                its manifest, written last: an archive without one is not a backup
 *   .partial/<prefix>/<queue>/<job id>/   work in progress of one job, renamed into place only when complete
 *   .in-use/<id>@<queue>.<job id>   a job (restore, verify, rehearsal) is reading backup <id>: prune keeps it
 * Prefix and job id are encoded (job-ids.ts): any id BullMQ accepts names a directory, and back.
 * Directories are 0700 and files 0600 whatever the umask: a backup holds the whole database.
 */

const PARTIAL = '.partial';
const IN_USE = '.in-use';
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

export interface InUseMark {
  backupId: string;
  /** The job reading the backup; absent in marks written before dbops recorded it (kept, never judged). */
  job?: JobRef;
  pid: number;
  host: string;
}

/** Creates a directory (and its parents) readable by the owner only. */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  await chmod(dir, DIR_MODE);
}

/**
 * `<env>-<time>-<random>`; a backup of another database on the environment's server (--all-databases)
 * also names it: `<env>-<database>-<time>-<random>` (lower case, other characters as dashes).
 */
export function newBackupId(env: string, now = new Date(), otherDatabase?: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'z').toLowerCase();
  const database = otherDatabase ? `${otherDatabase.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'db'}-` : '';
  return `${env}-${database}${stamp}-${randomBytes(3).toString('hex')}`;
}

export function archiveName(id: string, format: BackupFormat): string {
  return format === 'custom' ? `${id}.dump` : `${id}.d`;
}

export class BackupStore {
  constructor(readonly dir: string) {}

  /** The archive's path: always inside the store (the manifest schema allows a bare archive name only). */
  archivePath(manifest: Pick<Manifest, 'archive'>): string {
    const archive = path.join(this.dir, manifest.archive);
    if (path.dirname(archive) !== this.dir) throw new PermanentError(`damaged manifest: archive "${manifest.archive}" is not a name inside the backup store`);
    return archive;
  }

  manifestPath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** A directory of the store (and the store itself), private to its owner; its path. */
  private async ownSubdir(name: string): Promise<string> {
    const dir = path.join(this.dir, name);
    await privateDir(this.dir);
    await privateDir(dir);
    return dir;
  }

  private partialPath(job: JobRef): string {
    return path.join(this.dir, PARTIAL, encodeForPath(job.prefix), encodeForPath(job.queue), encodeForPath(job.id));
  }

  /** A fresh, empty working directory for one job; whatever an earlier attempt of it left is removed. */
  async partialDir(job: JobRef): Promise<string> {
    const dir = this.partialPath(job);
    await rm(dir, { recursive: true, force: true });
    await this.ownSubdir(PARTIAL);
    // Another job's removePartial may take an empty parent away meanwhile: then make it again.
    await mkdir(dir, { recursive: true, mode: DIR_MODE }).catch(() => mkdir(dir, { recursive: true, mode: DIR_MODE }));
    return dir;
  }

  /** Removes a job's work directory, and the prefix and queue directories above it once empty. */
  async removePartial(job: JobRef): Promise<void> {
    const dir = this.partialPath(job);
    await rm(dir, { recursive: true, force: true });
    for (const parent of [path.dirname(dir), path.dirname(path.dirname(dir))]) {
      if (!(await rmdir(parent).then(() => true, () => false))) break; // not empty: another job works there
    }
  }

  /**
   * The jobs of one prefix with work in progress on disk, and whatever else lies in `.partial` that no
   * job of that prefix can be proven to own (another prefix's work, an older layout): to report, not remove.
   */
  async partialWork(prefix: string): Promise<{ jobs: JobRef[]; unknown: string[] }> {
    const root = path.join(this.dir, PARTIAL);
    const jobs: JobRef[] = [];
    const unknown: string[] = [];
    const ownPrefix = encodeForPath(prefix);
    for (const top of await readdir(root).catch(() => [] as string[])) {
      if (top !== ownPrefix) {
        unknown.push(path.join(PARTIAL, top));
        continue;
      }
      for (const queueDir of await readdir(path.join(root, top)).catch(() => [] as string[])) {
        const queue = decodeFromPath(queueDir);
        for (const idDir of await readdir(path.join(root, top, queueDir)).catch(() => [] as string[])) {
          const id = decodeFromPath(idDir);
          if (queue === undefined || id === undefined) unknown.push(path.join(PARTIAL, top, queueDir, idDir));
          else jobs.push({ prefix, queue, id });
        }
      }
    }
    return { jobs, unknown };
  }

  /**
   * Marks a backup as being read by a job until the returned function is called. Taken before the
   * manifest is read, so that a prune either sees the mark or has already removed the backup.
   */
  async markInUse(backupId: string, job: JobRef): Promise<() => Promise<void>> {
    const dir = await this.ownSubdir(IN_USE);
    const file = path.join(dir, `${backupId}@${encodeForPath(job.queue)}.${encodeForPath(job.id)}`);
    const mark: InUseMark = { backupId, job, pid: process.pid, host: os.hostname() };
    await writeFile(file, JSON.stringify(mark), { mode: FILE_MODE });
    return () => rm(file, { force: true });
  }

  async inUseMarks(): Promise<(InUseMark & { file: string })[]> {
    const dir = path.join(this.dir, IN_USE);
    const names = await readdir(dir).catch(() => [] as string[]);
    const marks: (InUseMark & { file: string })[] = [];
    for (const name of names) {
      const file = path.join(dir, name);
      const mark = await readFile(file, 'utf8').then((text) => JSON.parse(text) as InUseMark, () => undefined);
      if (mark) marks.push({ ...mark, file });
    }
    return marks;
  }

  /**
   * Keeps a server's roles (attributes and memberships, no passwords) beside its backups, under
   * `roles/<name>.json`, where `backups list` and retention do not look. Returns the file's name.
   */
  async writeRoles(name: string, roles: unknown): Promise<string> {
    const dir = await this.ownSubdir('roles');
    const file = `${name}.json`;
    await writeFile(path.join(dir, file), `${JSON.stringify(roles, null, 2)}\n`, { mode: FILE_MODE });
    return path.join('roles', file);
  }

  /** Moves a finished archive into place, then writes its manifest: the backup exists from that moment. */
  async publish(partialArchive: string, manifest: Manifest): Promise<string> {
    const archive = this.archivePath(manifest);
    await chmod(partialArchive, manifest.format === 'custom' ? FILE_MODE : DIR_MODE);
    await rename(partialArchive, archive);
    await this.writeManifest(manifest);
    return archive;
  }

  async list(filter: { env?: string } = {}): Promise<Manifest[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const manifests: Manifest[] = [];
    for (const name of names.filter((entry) => entry.endsWith('.json'))) {
      const manifest = await this.readManifest(path.join(this.dir, name)).catch(() => undefined);
      if (manifest && (!filter.env || manifest.env === filter.env)) manifests.push(manifest);
    }
    return manifests.sort((a, b) => a.completedAt.localeCompare(b.completedAt));
  }

  /** The newest backup of one environment's database whose newest check passed, if any. */
  async latestVerified(env: string, database: string): Promise<Manifest | undefined> {
    return (await this.list({ env })).filter((manifest) => manifest.database === database && lastVerification(manifest)?.ok === true).at(-1);
  }

  /** Looks a backup up by id only: ids that could name a path are refused before the disk is read. */
  async get(id: string): Promise<Manifest> {
    const parsed = backupIdSchema.safeParse(id);
    if (!parsed.success) throw new ValidationError(`invalid backup id "${id}": ${parsed.error.issues[0]?.message}`);
    const manifest = await this.readManifest(this.manifestPath(parsed.data)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw new ValidationError(`unknown backup "${id}"`, [{ path: 'backup', message: 'no such backup' }]);
      throw new PermanentError(`backup "${id}": unreadable manifest: ${error.message}`);
    });
    if (manifest.id !== parsed.data) throw new PermanentError(`backup "${id}": its manifest names another backup`);
    return manifest;
  }

  /** Adds the outcome of a check to the backup's manifest (kept to the last 20), atomically. */
  async recordVerification(id: string, verification: Verification): Promise<Manifest> {
    const manifest = await this.get(id);
    const updated: Manifest = { ...manifest, verifications: [...(manifest.verifications ?? []), verification].slice(-20) };
    await this.writeManifest(updated);
    return updated;
  }

  /** Written whole under a temporary name (not *.json, so never listed), then renamed into place. */
  private async writeManifest(manifest: Manifest): Promise<void> {
    const temporary = path.join(this.dir, `.${manifest.id}.json.${randomBytes(4).toString('hex')}`);
    await writeFile(temporary, `${JSON.stringify(manifest, null, 2)}\n`, { mode: FILE_MODE });
    await rename(temporary, this.manifestPath(manifest.id));
  }

  /** Deletes a backup: the manifest first, so that a half-deleted backup is never listed as one. */
  async remove(manifest: Manifest): Promise<void> {
    await rm(this.manifestPath(manifest.id), { force: true });
    await rm(this.archivePath(manifest), { recursive: true, force: true });
  }

  private async readManifest(file: string): Promise<Manifest> {
    const parsed = manifestSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw new Error(`damaged: ${issue?.path.join('.') || 'manifest'}: ${issue?.message ?? 'invalid'}`);
  }

  /** Recomputes the archive's sha256 and compares it with the manifest; describes the damage if any. */
  async checkIntegrity(manifest: Manifest): Promise<{ ok: true } | { ok: false; reason: string }> {
    const archive = this.archivePath(manifest);
    const info = await stat(archive).catch(() => undefined);
    if (!info) return { ok: false, reason: `archive ${manifest.archive} is missing` };
    if (manifest.format === 'custom') {
      if (!info.isFile()) return { ok: false, reason: `archive ${manifest.archive} is not a file` };
      if (info.size !== manifest.sizeBytes) {
        return { ok: false, reason: `archive is ${info.size} bytes, the manifest says ${manifest.sizeBytes}` };
      }
      const digest = await sha256File(archive);
      return digest.sha256 === manifest.sha256 ? { ok: true } : { ok: false, reason: 'sha256 does not match the manifest' };
    }
    const digest = await sha256Directory(archive);
    if (digest.sha256 === manifest.sha256) return { ok: true };
    const expected = new Map((manifest.files ?? []).map((file) => [file.name, file.sha256]));
    const changed = digest.files.filter((file) => expected.get(file.name) !== file.sha256).map((file) => file.name);
    const missing = [...expected.keys()].filter((name) => !digest.files.some((file) => file.name === name));
    return { ok: false, reason: `sha256 does not match the manifest (changed: ${[...changed, ...missing].join(', ') || 'listing'})` };
  }
}

/**
 * Removes the work in progress of this prefix's jobs that are no longer active (a killed worker's).
 * Anything else in `.partial` is left alone and logged.
 */
export async function recoverPartials({ config, logger, prefix, isJobActive }: RecoveryContext): Promise<void> {
  const store = new BackupStore(config.backupDir);
  const { jobs, unknown } = await store.partialWork(prefix);
  for (const job of jobs) {
    if (job.queue === LOCAL_QUEUE || (await isJobActive(job))) continue; // a --local run cannot be asked
    await store.removePartial(job);
    logger.info({ job }, 'removed the partial files of a dead worker');
  }
  for (const entry of unknown) logger.debug({ entry }, 'left alone: work files of no job of this prefix');
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
async function markIsStale(mark: InUseMark, { prefix, isJobActive }: RecoveryContext): Promise<boolean> {
  if (!mark.job) return false;
  if (mark.job.queue === LOCAL_QUEUE) return !markMayBeAlive(mark);
  return mark.job.prefix === prefix && !(await isJobActive(mark.job));
}

/** Removes in-use marks left by dead workers and dead local runs. */
export async function recoverInUseMarks(context: RecoveryContext): Promise<void> {
  const store = new BackupStore(context.config.backupDir);
  for (const mark of await store.inUseMarks()) {
    if (await markIsStale(mark, context)) {
      await rm(mark.file, { force: true });
      context.logger.info({ job: mark.job, backupId: mark.backupId }, 'removed the in-use mark of a dead worker');
    }
  }
}
