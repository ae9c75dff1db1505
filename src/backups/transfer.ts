import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { PermanentError, ValidationError } from '../errors.js';
import type { JobRef } from '../job-ids.js';
import type { BackupCatalogue } from './catalogue.js';
import { HashingStream } from './checksum.js';
import { checkLocalArchive } from './file-store.js';
import type { Manifest, SkippedManifest } from './manifest.js';
import type { BackupStore } from './store.js';

/**
 * Writes a custom-format archive, as stored (encrypted ones stay encrypted), to `outFile`; its sha256
 * is checked against the manifest as it streams, and a file that does not match is removed.
 */
export async function downloadArchive(
  catalogue: BackupCatalogue,
  id: string,
  outFile: string,
  storeName?: string,
): Promise<{ manifest: Manifest; store: string }> {
  const { manifest, store } = await catalogue.get(id, storeName);
  if (manifest.format !== 'custom') {
    throw new ValidationError(
      `backup ${manifest.id} is a directory archive: only custom-format archives download as one file`,
    );
  }
  const hashing = new HashingStream();
  try {
    await pipeline(
      await store.openArchive(manifest),
      hashing,
      createWriteStream(outFile, { flags: 'wx', mode: 0o600 }),
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw new ValidationError(`${outFile} exists already: name a new file`);
    await rm(outFile, { force: true });
    throw error;
  }
  if (hashing.digest() !== manifest.sha256 || hashing.bytes !== manifest.sizeBytes) {
    await rm(outFile, { force: true });
    throw new PermanentError(
      `backup ${manifest.id} in the ${store.name} store does not match its manifest (sha256): nothing was kept`,
    );
  }
  return { manifest, store: store.name };
}

export interface SyncedBackup {
  id: string;
  from: string;
  to: string;
  ok: boolean;
  reason?: string;
}

/** Copies one backup's archive into `to`, checked against the manifest on the way, then its manifest. */
async function copyBackup(
  catalogue: BackupCatalogue,
  manifest: Manifest,
  from: BackupStore,
  to: BackupStore,
  job: JobRef,
): Promise<void> {
  const writer = await to.beginArchive(job, manifest.id, manifest.format);
  try {
    if (manifest.format === 'custom') {
      const hashing = new HashingStream();
      await pipeline(await from.openArchive(manifest), hashing, writer.sink());
      if (hashing.digest() !== manifest.sha256)
        throw new PermanentError(`the ${from.name} store's copy does not match its manifest (sha256)`);
    } else {
      const dir = await catalogue.workArea.jobSubdir(job, 'sync');
      try {
        const local = (await from.download(manifest, dir)).path;
        const integrity = await checkLocalArchive(local, manifest);
        if (!integrity.ok) throw new PermanentError(`the ${from.name} store's copy is damaged: ${integrity.reason}`);
        await writer.putDirectory(local, new AbortController().signal, true);
      } finally {
        await catalogue.workArea.removeJobSubdir(job, 'sync');
      }
    }
    await writer.complete();
    await to.writeManifest({ ...manifest, stores: [...new Set([...(manifest.stores ?? []), to.name])] });
    await writer.published();
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

/**
 * Copies every backup that a store lacks from a store that holds it (`from`, or the first that does),
 * so that a store added later holds what the others do. A damaged copy is reported, never spread.
 */
export async function syncStores(
  catalogue: BackupCatalogue,
  options: {
    from?: string;
    to?: string;
    env?: string;
    job: JobRef;
    onCopied?: (item: SyncedBackup) => void;
    onSkipped?: (skipped: SkippedManifest[]) => void;
  },
): Promise<SyncedBackup[]> {
  const sources = catalogue.select(options.from);
  const targets = catalogue.select(options.to);
  const done: SyncedBackup[] = [];
  // Only backups dbops can prove its own are spread; the rest is named, never copied.
  const { backups, skipped } = await catalogue.listing({ env: options.env });
  options.onSkipped?.(skipped);
  for (const { manifest, stores } of backups) {
    const from = sources.find((store) => stores.includes(store.name));
    if (!from) continue;
    for (const to of targets.filter((store) => !stores.includes(store.name) && store !== from)) {
      let item: SyncedBackup = { id: manifest.id, from: from.name, to: to.name, ok: true };
      try {
        await copyBackup(catalogue, manifest, from, to, options.job);
      } catch (error) {
        item = { ...item, ok: false, reason: (error as Error).message };
      }
      done.push(item);
      options.onCopied?.(item);
    }
  }
  return done;
}
