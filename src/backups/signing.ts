import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as z from 'zod';
import type { Config } from '../config.js';
import { ConfigError } from '../errors.js';
import { parseKey } from '../secrets.js';
import { readTrustedFile } from '../trusted-files.js';
import { keyId } from './encryption.js';

/*
 * Everything dbops acts on in a store (a manifest, an upload marker) carries an HMAC-SHA256 over its
 * canonical JSON, made with a key dbops holds and the store does not: BACKUP_SIGNING_KEY; else a key
 * derived from BACKUP_ENCRYPTION_KEY; else a key dbops makes once in BACKUP_DIR (`.dbops/signing.key`,
 * 0600, trusted only when it is this user's and nobody else can write it). Someone who can write to a
 * bucket or a store directory can then delete or damage backups, never make dbops take one of theirs
 * for its own: restore, verify, prune, sync and recovery skip what does not carry a valid signature.
 */

export const signatureSchema = z.object({
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  hmac: z.string().regex(/^[0-9a-f]{64}$/),
});
export type Signature = z.infer<typeof signatureSchema>;

/** What a signature is for: a manifest can never be passed off as a marker, or the reverse. */
export type SealPurpose = 'manifest' | 'upload-marker' | 'wal-segment' | 'base-backup' | 'wal-status';

export const KEY_FILE = path.join('.dbops', 'signing.key');

/** JSON with object keys in a fixed order and undefined members left out: the same value, the same text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, member]) => member !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, member]) => `${JSON.stringify(key)}:${canonicalJson(member)}`).join(',')}}`;
}

export class Seal {
  readonly keyId: string;
  /** Every key a signature is checked with, by id: the signing key, and those of before a rotation. */
  private readonly keys: Map<string, Buffer>;

  constructor(
    private readonly key: Buffer,
    /** Where the key came from, for messages: BACKUP_SIGNING_KEY, BACKUP_ENCRYPTION_KEY, or the key file. */
    readonly source: string,
    older: Buffer[] = [],
  ) {
    this.keyId = keyId(key);
    this.keys = new Map([...older, key].map((one) => [keyId(one), one]));
  }

  /** Whether a signature made with key `id` is checked with a key of this host (a wrong one is then a change, not another key). */
  knowsKey(id: string): boolean {
    return this.keys.has(id);
  }

  private hmac(purpose: SealPurpose, value: object, key = this.key): string {
    const { signature: _signature, ...content } = value as { signature?: unknown };
    return createHmac('sha256', key).update(`dbops ${purpose}\0`).update(canonicalJson(content)).digest('hex');
  }

  sign<T extends object>(purpose: SealPurpose, value: T): T & { signature: Signature } {
    const { signature: _old, ...content } = value as T & { signature?: unknown };
    return { ...(content as T), signature: { keyId: this.keyId, hmac: this.hmac(purpose, content) } };
  }

  /** Why `value` is not dbops' own (signed with one of its keys), or undefined when it is. */
  check(purpose: SealPurpose, value: object & { signature?: Signature }): string | undefined {
    const { signature } = value;
    if (!signature)
      return 'unsigned (made before dbops signed its backups, or not by dbops: `manage-db backups sign` vouches for it)';
    const key = this.keys.get(signature.keyId);
    if (!key) {
      const hint = this.source.includes('BACKUP_ENCRYPTION_KEY')
        ? 'made with another BACKUP_ENCRYPTION_KEY? earlier keys go in BACKUP_DECRYPTION_KEYS'
        : 'every host needs the same BACKUP_SIGNING_KEY (or BACKUP_ENCRYPTION_KEY)';
      return `signed with key ${signature.keyId}, not with a key of this host (${this.keyId}, ${this.source}): ${hint}`;
    }
    const expected = Buffer.from(this.hmac(purpose, value, key), 'hex');
    const given = Buffer.from(signature.hmac, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected)
      ? undefined
      : 'its signature does not match its content: it was changed after dbops wrote it';
  }
}

/** The key from the configuration, when it names one. */
function configuredKey(config: Pick<Config, 'signingKey'>): Seal | undefined {
  return config.signingKey
    ? new Seal(config.signingKey.key, config.signingKey.source, config.signingKey.older)
    : undefined;
}

/** The key file in BACKUP_DIR, made once (atomically: two processes starting at once agree on one key). */
async function keyFileSeal(backupDir: string): Promise<Seal> {
  const file = path.join(backupDir, KEY_FILE);
  const read = () => {
    const found = readTrustedFile(file);
    if (found && 'refused' in found)
      throw new ConfigError(`the backup signing key ${file} is not trusted: ${found.refused}`);
    if (!found) return undefined;
    const key = parseKey(found.text);
    if (!key) throw new ConfigError(`the backup signing key ${file} is damaged (expected 64 hex digits)`);
    return new Seal(key, `${KEY_FILE} in BACKUP_DIR`);
  };
  const existing = read();
  if (existing) return existing;
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${randomBytes(6).toString('hex')}`;
  await writeFile(temporary, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    await link(temporary, file).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error; // another process made it first: theirs is the key
    });
  } finally {
    await rm(temporary, { force: true });
  }
  return read()!;
}

const seals = new WeakMap<object, Promise<Seal>>();

/** This configuration's seal, resolved once (the key file is read or made on first use only). */
export function sealFor(config: Pick<Config, 'signingKey' | 'backupDir'>): Promise<Seal> {
  let seal = seals.get(config);
  if (!seal) {
    const configured = configuredKey(config);
    seal = configured ? Promise.resolve(configured) : keyFileSeal(config.backupDir);
    seal.catch(() => seals.delete(config));
    seals.set(config, seal);
  }
  return seal;
}
