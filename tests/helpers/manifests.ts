import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FileStore } from '../../src/backups/file-store.js';
import type { Manifest } from '../../src/backups/manifest.js';
import { sealFor } from '../../src/backups/signing.js';

/**
 * Changes a manifest in a file store as dbops itself would have written it (signed with the store's
 * key): for tests of what dbops does with a manifest of its own that describes a damaged archive.
 * A test of a forged manifest writes the file without this.
 */
export async function rewriteOwnManifest(
  backupDir: string,
  backupId: string,
  change: (manifest: Record<string, unknown>) => void,
): Promise<void> {
  const file = path.join(backupDir, `${backupId}.json`);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  change(manifest);
  const seal = await sealFor({ backupDir, signingKey: undefined });
  writeFileSync(file, JSON.stringify(seal.sign('manifest', manifest)));
}

/** The test's backup directory as dbops' own file store (its manifests checked with its key). */
export function ownFileStore(backupDir: string): FileStore {
  return new FileStore(backupDir, () => sealFor({ backupDir, signingKey: undefined }));
}

/** Writes a manifest into a file store as dbops would (signed with the store's key). */
export async function writeOwnManifest(backupDir: string, manifest: { id: string }): Promise<void> {
  await ownFileStore(backupDir).writeManifest(manifest as Manifest);
}
