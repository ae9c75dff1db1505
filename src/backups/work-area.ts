import { chmod, mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { LOCAL_QUEUE, decodeFromPath, encodeForPath, type JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';

/*
 * A directory's work area: `.partial/<prefix>/<queue>/<job id>/`, one job's work in progress (a dump
 * being written, a stream's FIFO, a download), removed when the job ends and by recovery when its
 * worker died. Prefix and job id are encoded (job-ids.ts): any id BullMQ accepts names a directory.
 * Directories are 0700 and files 0600 whatever the umask: what lies here holds whole databases.
 */

const PARTIAL = '.partial';
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** Creates a directory (and its parents) readable by the owner only. */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  await chmod(dir, DIR_MODE);
}

export class WorkArea {
  constructor(readonly dir: string) {}

  /** A directory of `dir` (and `dir` itself), private to its owner; its path. */
  async ownSubdir(name: string): Promise<string> {
    const sub = path.join(this.dir, name);
    await privateDir(this.dir);
    await privateDir(sub);
    return sub;
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

  /**
   * A fresh, empty directory `name` inside a job's working directory, leaving the rest of it alone
   * (a store's part of a backup job, when the store's directory is also the job's work area).
   */
  async jobSubdir(job: JobRef, name: string): Promise<string> {
    const dir = path.join(this.partialPath(job), name);
    await rm(dir, { recursive: true, force: true });
    await this.ownSubdir(PARTIAL);
    await mkdir(dir, { recursive: true, mode: DIR_MODE }).catch(() => mkdir(dir, { recursive: true, mode: DIR_MODE }));
    return dir;
  }

  /** Removes a job's work directory, and the prefix and queue directories above it once empty. */
  async removePartial(job: JobRef): Promise<void> {
    const dir = this.partialPath(job);
    await rm(dir, { recursive: true, force: true });
    await this.removeEmptyParents(dir);
  }

  /** Removes `name` of a job's working directory, and the directories above it once empty. */
  async removeJobSubdir(job: JobRef, name: string): Promise<void> {
    const dir = path.join(this.partialPath(job), name);
    await rm(dir, { recursive: true, force: true });
    if (
      await rmdir(path.dirname(dir)).then(
        () => true,
        () => false,
      )
    )
      await this.removeEmptyParents(path.dirname(dir));
  }

  private async removeEmptyParents(dir: string): Promise<void> {
    for (const parent of [path.dirname(dir), path.dirname(path.dirname(dir))]) {
      if (
        !(await rmdir(parent).then(
          () => true,
          () => false,
        ))
      )
        break; // not empty: another job works there
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
   * Removes the work in progress of this prefix's jobs that are no longer active (a killed worker's).
   * Anything else in `.partial` is left alone and logged.
   */
  async recover({
    logger,
    prefix,
    isJobActive,
  }: Pick<RecoveryContext, 'logger' | 'prefix' | 'isJobActive'>): Promise<void> {
    const { jobs, unknown } = await this.partialWork(prefix);
    for (const job of jobs) {
      if (job.queue === LOCAL_QUEUE || (await isJobActive(job))) continue; // a --local run cannot be asked
      await this.removePartial(job);
      logger.info({ job }, 'removed the partial files of a dead worker');
    }
    for (const entry of unknown) logger.debug({ entry }, 'left alone: work files of no job of this prefix');
  }
}
