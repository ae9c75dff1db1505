import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

const compress = promisify(gzip);

/** What an archived WAL file holds: its gzip bytes, and the size and sha256 of what they decompress to. */
export interface CompressedWal {
  compressed: Buffer;
  bytes: number;
  sha256: string;
}

/**
 * The WAL segment being received, compressed as it grows: each round compresses only the bytes received
 * since the last, as a gzip member of their own (gzip readers, Node's and gunzip alike, read a file's
 * members one after another as one stream). Storing the partial segment every round then costs the new
 * bytes, not the whole segment again; and so does the complete segment, once its first bytes are checked
 * against what was added.
 */
export class GrowingSegment {
  private readonly members: Buffer[] = [];
  private readonly hash: Hash = createHash('sha256');
  /** How many of the segment's bytes were added. */
  length = 0;

  constructor(readonly name: string) {}

  /** Adds the file's bytes from `length` up to `upTo`. */
  async extend(file: string, upTo: number): Promise<void> {
    if (upTo <= this.length) return;
    const handle = await open(file, 'r');
    try {
      const bytes = Buffer.alloc(upTo - this.length);
      const { bytesRead } = await handle.read(bytes, 0, bytes.length, this.length);
      if (bytesRead !== bytes.length)
        throw new Error(`${file}: ${bytesRead} bytes where ${bytes.length} were expected`);
      this.members.push(await compress(bytes, { level: 1 }));
      this.hash.update(bytes);
      this.length = upTo;
    } finally {
      await handle.close();
    }
  }

  current(): CompressedWal {
    return { compressed: Buffer.concat(this.members), bytes: this.length, sha256: this.hash.copy().digest('hex') };
  }

  /**
   * The complete segment `file` (`size` bytes), when its first bytes are the ones added (their sha256
   * compared); undefined when they are not, and it is to be compressed whole.
   */
  async complete(file: string, size: number): Promise<CompressedWal | undefined> {
    if (size < this.length) return undefined;
    const handle = await open(file, 'r');
    try {
      const prefix = createHash('sha256');
      const chunk = Buffer.alloc(1 << 20);
      for (let at = 0; at < this.length;) {
        const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, this.length - at), at);
        if (bytesRead === 0) return undefined;
        prefix.update(chunk.subarray(0, bytesRead));
        at += bytesRead;
      }
      if (prefix.digest('hex') !== this.hash.copy().digest('hex')) return undefined;
    } finally {
      await handle.close();
    }
    await this.extend(file, size);
    return this.current();
  }
}
