import { pipeline } from 'node:stream/promises';
import type { Response } from 'express';
import type { BackupCatalogue } from '../backups/catalogue.js';
import { ValidationError } from '../errors.js';

/**
 * Sends a custom-format backup's archive as stored (encrypted ones stay so), with its sha256 and the
 * store it came from; an unknown backup (404) or a directory archive (409) goes to `refuse`, which
 * answers in the caller's own form (JSON for the API, text for the console).
 */
export async function sendArchive(
  res: Response,
  catalogue: BackupCatalogue,
  id: string,
  storeName: string | undefined,
  refuse: (status: 404 | 409, message: string) => void,
): Promise<void> {
  let found;
  try {
    found = await catalogue.get(id, storeName);
  } catch (error) {
    if (error instanceof ValidationError) return refuse(404, error.message);
    throw error;
  }
  const { manifest, store } = found;
  if (manifest.format !== 'custom')
    return refuse(
      409,
      `backup ${manifest.id} is a directory archive: only custom-format archives are served as one file`,
    );
  const archive = await store.openArchive(manifest);
  res.set({
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(manifest.sizeBytes),
    'Content-Disposition': `attachment; filename="${manifest.archive}"`,
    'X-Checksum-Sha256': manifest.sha256,
    'X-Backup-Store': store.name,
  });
  await pipeline(archive, res);
}
