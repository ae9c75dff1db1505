import { createHash, type Hash } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';

export interface FileDigest {
  name: string;
  sizeBytes: number;
  sha256: string;
}

/** Passes bytes through unchanged while hashing and counting them (one pass over a streamed dump). */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Reads in large blocks: several times faster than a read stream's small chunks on big archives. */
export async function sha256File(file: string): Promise<FileDigest> {
  const hash = createHash('sha256');
  const handle = await open(file, 'r');
  const buffer = Buffer.allocUnsafe(8 << 20);
  let sizeBytes = 0;
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      sizeBytes += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return { name: path.basename(file), sizeBytes, sha256: hash.digest('hex') };
}

/**
 * A directory-format archive's digest: the sha256 of its `sha256sum`-style listing (one line per file,
 * sorted by name), so that one value covers every file and each file can be checked on its own.
 */
export function directoryDigest(files: FileDigest[]): string {
  const listing = [...files]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((file) => `${file.sha256}  ${file.name}\n`)
    .join('');
  return createHash('sha256').update(listing).digest('hex');
}

export async function sha256Directory(
  dir: string,
): Promise<{ sha256: string; sizeBytes: number; files: FileDigest[] }> {
  const names = (await readdir(dir)).sort();
  const files: FileDigest[] = [];
  for (const name of names) {
    const full = path.join(dir, name);
    if ((await stat(full)).isFile()) files.push(await sha256File(full));
  }
  return { sha256: directoryDigest(files), sizeBytes: files.reduce((sum, file) => sum + file.sizeBytes, 0), files };
}
