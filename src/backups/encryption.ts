import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PermanentError } from '../errors.js';

/*
 * Encryption at rest: AES-256-GCM over 1 MiB chunks, each with its own authentication tag, so a
 * stream is checked as it is read (nothing unauthenticated ever reaches pg_restore) and memory stays
 * flat. The chunk's nonce is a random per-archive prefix, the chunk's number and a last-chunk flag
 * (the STREAM construction), so a truncated, reordered or spliced archive fails to decrypt.
 *
 *   header:  "DBOPSAE1" (8 bytes) | nonce prefix (7 bytes)
 *   chunks:  ciphertext (CHUNK bytes, fewer for the last) | tag (16 bytes)
 */

export const ENCRYPTION_ALGORITHM = 'aes-256-gcm-chunked';
const MAGIC = Buffer.from('DBOPSAE1');
const PREFIX_BYTES = 7;
const HEADER_BYTES = MAGIC.length + PREFIX_BYTES;
const CHUNK = 1 << 20;
const TAG = 16;

/** A short, public name for a key (in manifests and errors), from which the key cannot be recovered. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('dbops key id\0').update(key).digest('hex').slice(0, 16);
}

function nonce(prefix: Buffer, counter: number, last: boolean): Buffer {
  const value = Buffer.alloc(12);
  prefix.copy(value, 0);
  value.writeUInt32BE(counter, PREFIX_BYTES);
  value[11] = last ? 1 : 0;
  return value;
}

/** Encrypts a stream; holds one chunk back so that the last one can be marked as such. */
export class EncryptStream extends Transform {
  private readonly prefix = randomBytes(PREFIX_BYTES);
  private readonly header = Buffer.concat([MAGIC, this.prefix]);
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private counter = 0;

  constructor(private readonly key: Buffer) {
    super();
    this.push(this.header);
  }

  private seal(plain: Buffer, last: boolean): Buffer {
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce(this.prefix, this.counter++, last));
    cipher.setAAD(this.header);
    return Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    // Seal full chunks only while more data follows them: the last chunk is sealed in _flush.
    while (this.pendingBytes > CHUNK) {
      const all = Buffer.concat(this.pending);
      this.push(this.seal(all.subarray(0, CHUNK), false));
      const rest = all.subarray(CHUNK);
      this.pending = [rest];
      this.pendingBytes = rest.length;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.push(this.seal(Buffer.concat(this.pending), true));
    callback();
  }
}

/** The error for an archive that does not decrypt: which, of key or archive, is at fault is unknowable. */
function undecryptable(detail: string): PermanentError {
  return new PermanentError(
    `cannot decrypt the archive (${detail}): wrong BACKUP_ENCRYPTION_KEY, or the archive is damaged`,
  );
}

/** Decrypts and authenticates a stream chunk by chunk; fails on the first chunk that does not check. */
export class DecryptStream extends Transform {
  private header: Buffer | undefined;
  private prefix: Buffer | undefined;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private counter = 0;

  constructor(private readonly key: Buffer) {
    super();
  }

  private open(sealed: Buffer, last: boolean): Buffer {
    if (sealed.length < TAG) throw undecryptable('truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, nonce(this.prefix!, this.counter, last));
    decipher.setAAD(this.header!);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG));
    try {
      const plain = Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG)), decipher.final()]);
      this.counter += 1;
      return plain;
    } catch {
      throw undecryptable(
        this.counter === 0 ? 'the first block does not authenticate' : `block ${this.counter} does not authenticate`,
      );
    }
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.buffered.push(chunk);
      this.bufferedBytes += chunk.length;
      const needed = this.header ? CHUNK + TAG : HEADER_BYTES;
      if (this.bufferedBytes <= needed) return callback(); // copy only once there is work to do
      let all = Buffer.concat(this.buffered);
      if (!this.header) {
        if (all.length < HEADER_BYTES) return callback();
        if (!all.subarray(0, MAGIC.length).equals(MAGIC))
          throw new PermanentError('the archive is not encrypted by dbops (no dbops encryption header)');
        this.header = Buffer.from(all.subarray(0, HEADER_BYTES));
        this.prefix = this.header.subarray(MAGIC.length);
        all = all.subarray(HEADER_BYTES);
      }
      // A full sealed chunk is known not to be the last only once more bytes follow it.
      while (all.length > CHUNK + TAG) {
        this.push(this.open(all.subarray(0, CHUNK + TAG), false));
        all = all.subarray(CHUNK + TAG);
      }
      this.buffered = [all];
      this.bufferedBytes = all.length;
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (!this.header) throw undecryptable('truncated: no header');
      this.push(this.open(Buffer.concat(this.buffered), true));
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }
}
