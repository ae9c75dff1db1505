import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { chmod, cp, mkdir, open, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PermanentError } from '../errors.js';
import { LOCAL_QUEUE, encodeForPath, type JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';
import { sha256Directory, sha256File } from './checksum.js';
import { listingOf, ownManifest, type BackupFormat, type Manifest, type ManifestListing } from './manifest.js';
import type { Seal } from './signing.js';
import {
  archiveName,
  markIsStale,
  newInUseMark,
  newUnpublishedMarker,
  openUnpublishedMarker,
  parseInUseMark,
  pitrKey,
  type ArchiveWriter,
  type BackupStore,
  type InUseMark,
  type Integrity,
} from './store.js';
import { DIR_MODE, FILE_MODE, WorkArea } from './work-area.js';

/*
 * A directory as a backup store:
 *   <id>.dump | <id>.d/      the archive
 *   <id>.json                its manifest, written last
 *   .partial/…               the work area (work-area.ts): an archive is written there, then renamed into place
 *   .in-use/<id>@<queue>.<job id>   a job (restore, verify, rehearsal) is reading backup <id>: prune keeps it
 *   .unpublished/<archive>.json   an archive moved into place whose manifest is not written yet: which job
 *                                 (signed); removed once published, or, with the archive, when the job is gone
 *   roles/<name>.json        a server's roles (--all-databases)
 */

const IN_USE = '.in-use';
const UNPUBLISHED = '.unpublished';
/** A file written beside its final name, then renamed into place: `.<name>.<8 hex>` (temporaryFor). */
const TEMPORARY = /^\.(.+)\.[0-9a-f]{8}$/;
const temporaryFor = (file: string): string =>
  path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}`);
/** The job's work subdirectory a base backup's tree crosses on its way into `pitr/` (putTree). */
const TREE_ON_ITS_WAY = 'pitr-base';

/** Errors writing to a store directory, in one line that names it by its variable (no server path leaves the worker). */
export function diskFailure(error: unknown, variable = 'BACKUP_DIR'): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const reasons: Record<string, string> = {
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    EACCES: 'permission denied',
    EROFS: 'read-only file system',
  };
  const reason = code ? reasons[code] : undefined;
  return reason ? new PermanentError(`cannot write the backup to ${variable}: ${reason}`) : (error as Error);
}

/** Flushes a file to disk, as pg_dump -f does: the archive is on disk before it is called a backup. */
async function syncFile(file: string): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class FileStore implements BackupStore {
  readonly kind = 'file';
  readonly location: string;
  private readonly work: WorkArea;

  constructor(
    readonly dir: string,
    /** The key that signs and checks this store's manifests (signing.ts). */
    private readonly seal: () => Promise<Seal>,
    readonly name = 'file',
    /** The variable that names the directory, for messages that must not show the path. */
    private readonly variable = 'BACKUP_DIR',
  ) {
    this.location = `file://${dir}`;
    this.work = new WorkArea(dir);
  }

  /** The archive's path: always inside the store (the manifest schema allows a bare archive name only). */
  archivePath(manifest: Pick<Manifest, 'archive'>): string {
    const archive = path.join(this.dir, manifest.archive);
    if (path.dirname(archive) !== this.dir)
      throw new PermanentError(`damaged manifest: archive "${manifest.archive}" is not a name inside the backup store`);
    return archive;
  }

  localArchive(manifest: Manifest): string {
    return this.archivePath(manifest);
  }
  private pitrPath(key: string): string {
    return path.join(this.dir, 'pitr', pitrKey(key));
  }

  async putObject(key: string, body: Readable | Buffer | string, signal?: AbortSignal): Promise<void> {
    const file = this.pitrPath(key);
    const temporary = temporaryFor(file);
    try {
      await this.privateParents(path.dirname(file));
      const source = typeof body === 'string' || Buffer.isBuffer(body) ? Readable.from([Buffer.from(body)]) : body;
      await pipeline(source, createWriteStream(temporary, { mode: FILE_MODE, highWaterMark: 1 << 20 }), { signal });
      await syncFile(temporary);
      await rename(temporary, file);
    } catch (error) {
      await rm(temporary, { force: true });
      throw diskFailure(error, this.variable);
    }
  }

  /** `pitr/` and the directories under it, each private. */
  private async privateParents(dir: string): Promise<void> {
    const root = path.join(this.dir, 'pitr');
    await this.work.ownSubdir('pitr');
    let current = root;
    for (const part of path.relative(root, dir).split(path.sep).filter(Boolean)) {
      current = path.join(current, part);
      await mkdir(current, { mode: DIR_MODE }).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
    }
  }

  async getObject(key: string): Promise<Readable | undefined> {
    const file = this.pitrPath(key);
    const handle = await open(file, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    return handle?.createReadStream({ highWaterMark: 1 << 20 });
  }

  async listObjects(prefix: string): Promise<{ name: string; size: number }[]> {
    const dir = prefix ? this.pitrPath(prefix) : path.join(this.dir, 'pitr');
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const found: { name: string; size: number }[] = [];
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const info = await stat(path.join(dir, entry.name)).catch(() => undefined);
      if (info) found.push({ name: entry.name, size: info.isFile() ? info.size : 0 });
    }
    return found;
  }

  async sweepTemporaries(prefix: string, names: RegExp, olderThanMs: number): Promise<string[]> {
    const dir = this.pitrPath(prefix);
    const swept: string[] = [];
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const object = TEMPORARY.exec(entry.name)?.[1];
      if (!entry.isFile() || object === undefined || !names.test(object)) continue;
      const file = path.join(dir, entry.name);
      const info = await stat(file).catch(() => undefined);
      if (!info || Date.now() - info.mtimeMs < olderThanMs) continue;
      await rm(file, { force: true });
      swept.push(object);
    }
    return swept;
  }

  async removeObject(key: string): Promise<void> {
    await rm(this.pitrPath(key), { recursive: true, force: true });
  }

  async putTree(job: JobRef, key: string, localDir: string, mayTake: boolean): Promise<void> {
    const final = this.pitrPath(key);
    try {
      const temporary = path.join(await this.work.jobSubdir(job, TREE_ON_ITS_WAY), 'tree');
      await this.privateParents(path.dirname(final));
      const moved =
        mayTake &&
        (await rename(localDir, temporary).then(
          () => true,
          () => false,
        ));
      if (!moved) await cp(localDir, temporary, { recursive: true });
      await rename(temporary, final);
    } catch (error) {
      throw diskFailure(error, this.variable);
    } finally {
      await this.work.removeJobSubdir(job, TREE_ON_ITS_WAY);
    }
  }

  async treePath(key: string): Promise<string | undefined> {
    const dir = this.pitrPath(key);
    return (await stat(dir).catch(() => undefined))?.isDirectory() ? dir : undefined;
  }

  private manifestPath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  async beginArchive(job: JobRef, id: string, format: BackupFormat): Promise<ArchiveWriter> {
    const sub = `store-${this.name}`;
    const archive = archiveName(id, format);
    const partial = path.join(await this.work.jobSubdir(job, sub), archive);
    const final = this.archivePath({ archive });
    const marker = path.join(this.dir, UNPUBLISHED, `${archive}.json`);
    const variable = this.variable;
    let file: WriteStream | undefined;
    return {
      sink: () => (file ??= createWriteStream(partial, { highWaterMark: 1 << 20, mode: FILE_MODE })),
      putDirectory: async (localDir, _signal, mayTake) => {
        // Moved where it may be (the last store to take it, on the same file system), else copied.
        const moved =
          mayTake &&
          (await rename(localDir, partial).then(
            () => true,
            () => false,
          ));
        if (!moved) {
          await cp(localDir, partial, { recursive: true }).catch((error: unknown) => {
            throw diskFailure(error, variable);
          });
        }
      },
      complete: async () => {
        try {
          if (format === 'custom') await syncFile(partial);
          await chmod(partial, format === 'custom' ? FILE_MODE : DIR_MODE);
          // Said first, so that a job that dies before its manifest is written leaves nothing unowned.
          const said = JSON.stringify(newUnpublishedMarker(await this.seal(), job, id, archive));
          // Another job's publish may take the emptied directory away meanwhile: then it is made again.
          const write = async () => {
            await this.work.ownSubdir(UNPUBLISHED);
            await writeFile(marker, said, { mode: FILE_MODE });
          };
          await write().catch(write);
          await rename(partial, final);
        } catch (error) {
          throw diskFailure(error, variable);
        }
        await this.work.removeJobSubdir(job, sub);
      },
      published: async () => {
        await this.forgetMarker(marker);
      },
      abort: async () => {
        file?.destroy();
        await this.work.removeJobSubdir(job, sub);
        await this.removeUnpublished(archive, marker);
      },
    };
  }

  async markInUse(backupId: string, job: JobRef): Promise<() => Promise<void>> {
    const dir = await this.work.ownSubdir(IN_USE);
    const file = path.join(dir, `${backupId}@${encodeForPath(job.queue)}.${encodeForPath(job.id)}`);
    await writeFile(file, JSON.stringify(newInUseMark(backupId, job)), { mode: FILE_MODE });
    return () => rm(file, { force: true });
  }

  private async marksWithFiles(): Promise<(InUseMark & { file: string })[]> {
    const dir = path.join(this.dir, IN_USE);
    const marks: (InUseMark & { file: string })[] = [];
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const file = path.join(dir, name);
      const mark = await readFile(file, 'utf8').then(parseInUseMark, () => undefined);
      if (mark) marks.push({ ...mark, file });
    }
    return marks;
  }

  inUseMarks(): Promise<InUseMark[]> {
    return this.marksWithFiles();
  }

  async writeRoles(name: string, roles: unknown): Promise<string> {
    const dir = await this.work.ownSubdir('roles');
    const file = `${name}.json`;
    await writeFile(path.join(dir, file), `${JSON.stringify(roles, null, 2)}\n`, { mode: FILE_MODE });
    return path.join('roles', file);
  }

  async list(): Promise<ManifestListing> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((entry) => entry.endsWith('.json'));
    const objects: { name: string; text: string }[] = [];
    for (const name of names) {
      const text = await readFile(path.join(this.dir, name), 'utf8').catch(() => undefined);
      if (text !== undefined) objects.push({ name, text }); // else removed meanwhile, or a directory
    }
    return listingOf(this.name, objects, await this.seal());
  }

  async read(id: string): Promise<Manifest | undefined> {
    let text: string;
    try {
      text = await readFile(this.manifestPath(id), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new PermanentError(`backup "${id}": unreadable manifest: ${(error as Error).message}`);
    }
    return ownManifest(text, id, this.name, await this.seal());
  }

  /** Signed, written whole under a temporary name (not *.json, so never listed), then renamed into place. */
  async writeManifest(manifest: Manifest): Promise<void> {
    const signed = (await this.seal()).sign('manifest', manifest);
    const temporary = temporaryFor(this.manifestPath(manifest.id));
    await writeFile(temporary, `${JSON.stringify(signed, null, 2)}\n`, { mode: FILE_MODE });
    await rename(temporary, this.manifestPath(manifest.id));
  }

  async remove(manifest: Manifest): Promise<void> {
    await rm(this.manifestPath(manifest.id), { force: true });
    await rm(this.archivePath(manifest), { recursive: true, force: true });
  }

  async openArchive(manifest: Manifest): Promise<Readable> {
    return createReadStream(this.archivePath(manifest), { highWaterMark: 1 << 20 });
  }

  async download(manifest: Manifest, dir: string): Promise<{ path: string }> {
    const copy = path.join(dir, manifest.archive);
    await cp(this.archivePath(manifest), copy, { recursive: true });
    return { path: copy };
  }

  async checkIntegrity(manifest: Manifest): Promise<Integrity> {
    return checkLocalArchive(this.archivePath(manifest), manifest);
  }

  /** Removes an archive that never got its manifest, then its marker; an archive with a manifest is a backup and stays. */
  private async removeUnpublished(archive: string, marker: string): Promise<void> {
    const id = archive.replace(/\.(dump|d)$/, '');
    const hasManifest = await stat(this.manifestPath(id)).then(
      () => true,
      (error: NodeJS.ErrnoException) => error.code !== 'ENOENT',
    );
    if (!hasManifest) await rm(this.archivePath({ archive }), { recursive: true, force: true });
    await this.forgetMarker(marker);
  }

  /** Removes a marker, and its directory once empty (bookkeeping only while an archive waits for its manifest). */
  private async forgetMarker(marker: string): Promise<void> {
    await rm(marker, { force: true });
    await rmdir(path.dirname(marker)).catch(() => undefined);
  }

  async recover(context: RecoveryContext): Promise<void> {
    await this.work.recover(context);
    const dir = path.join(this.dir, UNPUBLISHED);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const file = path.join(dir, name);
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const marker = openUnpublishedMarker(text, await this.seal());
      if ('refused' in marker || name !== `${marker.archive}.json`) {
        context.logger.warn(
          { file: name, store: this.name, reason: 'refused' in marker ? marker.refused : 'misnamed' },
          "left alone: an unpublished-archive marker that is not dbops' own",
        );
        continue;
      }
      const stale =
        marker.job.queue === LOCAL_QUEUE
          ? await markIsStale({ backupId: '', ...marker }, context, LOCAL_QUEUE)
          : marker.job.prefix === context.prefix && !(await context.isJobActive(marker.job));
      if (!stale) continue;
      await this.removeUnpublished(marker.archive, file);
      context.logger.info(
        { job: marker.job, archive: marker.archive, store: this.name },
        'removed the unpublished archive of a dead worker',
      );
    }
    for (const mark of await this.marksWithFiles()) {
      if (await markIsStale(mark, context, LOCAL_QUEUE)) {
        await rm(mark.file, { force: true });
        context.logger.info(
          { job: mark.job, backupId: mark.backupId, store: this.name },
          'removed the in-use mark of a dead worker',
        );
      }
    }
  }
}

/** Recomputes a local archive's sha256 and compares it with the manifest; describes the damage if any. */
export async function checkLocalArchive(archive: string, manifest: Manifest): Promise<Integrity> {
  const info = await stat(archive).catch(() => undefined);
  if (!info) return { ok: false, reason: `archive ${manifest.archive} is missing` };
  if (manifest.format === 'custom') {
    if (!info.isFile()) return { ok: false, reason: `archive ${manifest.archive} is not a file` };
    if (info.size !== manifest.sizeBytes)
      return { ok: false, reason: `archive is ${info.size} bytes, the manifest says ${manifest.sizeBytes}` };
    const digest = await sha256File(archive);
    return digest.sha256 === manifest.sha256
      ? { ok: true }
      : { ok: false, reason: 'sha256 does not match the manifest' };
  }
  const digest = await sha256Directory(archive);
  if (digest.sha256 === manifest.sha256) return { ok: true };
  const expected = new Map((manifest.files ?? []).map((file) => [file.name, file.sha256]));
  const changed = digest.files.filter((file) => expected.get(file.name) !== file.sha256).map((file) => file.name);
  const missing = [...expected.keys()].filter((name) => !digest.files.some((file) => file.name === name));
  return {
    ok: false,
    reason: `sha256 does not match the manifest (changed: ${[...changed, ...missing].join(', ') || 'listing'})`,
  };
}
