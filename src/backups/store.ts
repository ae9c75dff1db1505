import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PermanentError, ValidationError } from '../errors.js';
import type { RecoveryContext } from '../operations/operation.js';
import { sha256Directory, sha256File } from './checksum.js';
import { backupIdSchema, manifestSchema, type BackupFormat, type Manifest } from './manifest.js';

/*
 * BACKUP_DIR layout:
 *   <id>.dump | <id>.d/      the archive (custom format file, or directory format)
 *   <id>.json                its manifest, written last: an archive without one is not a backup
 *   .partial/<job id>/       work in progress of one job, renamed into place only when complete
 */

const PARTIAL = '.partial';

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

  /** Moves a finished archive into place, then writes its manifest: the backup exists from that moment. */
  async publish(partialArchive: string, manifest: Manifest): Promise<string> {
    const archive = this.archivePath(manifest);
    await rename(partialArchive, archive);
    const temporary = path.join(path.dirname(partialArchive), `${manifest.id}.json`);
    await writeFile(temporary, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(temporary, this.manifestPath(manifest.id));
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
