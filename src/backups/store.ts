import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PermanentError, ValidationError } from '../errors.js';
import type { RecoveryContext } from '../operations/operation.js';
import { sha256Directory, sha256File } from './checksum.js';
import { backupIdSchema, manifestSchema, type BackupFormat, type Manifest, type Verification } from './manifest.js';

/*
 * BACKUP_DIR layout:
 *   <id>.dump | <id>.d/      the archive (custom format file, or directory format)
 *   <id>.json                its manifest, written last: an archive without one is not a backup
 *   .partial/<job id>/       work in progress of one job, renamed into place only when complete
 *   .in-use/<id>@<job id>    a job (restore, verify, rehearsal) is reading backup <id>: prune keeps it
 */

const PARTIAL = '.partial';
const IN_USE = '.in-use';

export interface InUseMark {
  backupId: string;
  jobId: string;
  pid: number;
  host: string;
}

export function newBackupId(env: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'z').toLowerCase();
  return `${env}-${stamp}-${randomBytes(3).toString('hex')}`;
}

export function archiveName(id: string, format: BackupFormat): string {
  return format === 'custom' ? `${id}.dump` : `${id}.d`;
}

export class BackupStore {
  constructor(readonly dir: string) {}

  archivePath(manifest: Pick<Manifest, 'archive'>): string {
    return path.join(this.dir, manifest.archive);
  }

  manifestPath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** A fresh, empty working directory for one job; whatever an earlier attempt of it left is removed. */
  async partialDir(jobId: string): Promise<string> {
    const dir = path.join(this.dir, PARTIAL, jobId.replace(/[^A-Za-z0-9_-]/g, '_'));
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    return dir;
  }

  async removePartial(jobId: string): Promise<void> {
    await rm(path.join(this.dir, PARTIAL, jobId.replace(/[^A-Za-z0-9_-]/g, '_')), { recursive: true, force: true });
  }

  /** Job ids that have work in progress on disk. */
  async partialJobIds(): Promise<string[]> {
    return readdir(path.join(this.dir, PARTIAL)).catch(() => []);
  }

  /**
   * Marks a backup as being read by a job until the returned function is called. Taken before the
   * manifest is read, so that a prune either sees the mark or has already removed the backup.
   */
  async markInUse(backupId: string, jobId: string): Promise<() => Promise<void>> {
    const dir = path.join(this.dir, IN_USE);
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `${backupId}@${jobId.replace(/[^A-Za-z0-9_.:-]/g, '_')}`);
    const mark: InUseMark = { backupId, jobId, pid: process.pid, host: os.hostname() };
    await writeFile(file, JSON.stringify(mark));
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

  /** Moves a finished archive into place, then writes its manifest: the backup exists from that moment. */
  async publish(partialArchive: string, manifest: Manifest): Promise<string> {
    const archive = this.archivePath(manifest);
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

  /** Looks a backup up by id only: ids that could name a path are refused before the disk is read. */
  async get(id: string): Promise<Manifest> {
    const parsed = backupIdSchema.safeParse(id);
    if (!parsed.success) throw new ValidationError(`invalid backup id "${id}": ${parsed.error.issues[0]?.message}`);
    const manifest = await this.readManifest(this.manifestPath(parsed.data)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw new ValidationError(`unknown backup "${id}" in ${this.dir}`);
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
    await writeFile(temporary, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(temporary, this.manifestPath(manifest.id));
  }

  /** Deletes a backup: the manifest first, so that a half-deleted backup is never listed as one. */
  async remove(manifest: Manifest): Promise<void> {
    await rm(this.manifestPath(manifest.id), { force: true });
    await rm(this.archivePath(manifest), { recursive: true, force: true });
  }

  private async readManifest(file: string): Promise<Manifest> {
    return manifestSchema.parse(JSON.parse(await readFile(file, 'utf8')));
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

/** At worker start: removes work in progress whose job no live worker holds (a killed worker's). */
export async function recoverPartials({ config, logger, isJobActive }: RecoveryContext): Promise<void> {
  const store = new BackupStore(config.backupDir);
  for (const jobId of await store.partialJobIds()) {
    if (!(await isJobActive(jobId))) {
      await store.removePartial(jobId);
      logger.info({ jobId }, 'removed the partial files of a dead worker');
    }
  }
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

/** Removes in-use marks left by dead workers (their job is no longer active) and dead local runs. */
export async function recoverInUseMarks({ config, logger, isJobActive }: RecoveryContext): Promise<void> {
  const store = new BackupStore(config.backupDir);
  for (const mark of await store.inUseMarks()) {
    const stale = mark.jobId.startsWith('local-') ? !markMayBeAlive(mark) : !(await isJobActive(mark.jobId));
    if (stale) {
      await rm(mark.file, { force: true });
      logger.info({ jobId: mark.jobId, backupId: mark.backupId }, 'removed the in-use mark of a dead worker');
    }
  }
}
