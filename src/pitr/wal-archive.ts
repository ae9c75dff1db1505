import { createWriteStream } from 'node:fs';
import { open, truncate } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import * as z from 'zod';
import { eachLimited } from '../concurrency.js';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import { HashingStream } from '../backups/checksum.js';
import { DecryptStream, EncryptStream, keyId } from '../backups/encryption.js';
import { sealFor, signatureSchema, type Seal, type SealPurpose } from '../backups/signing.js';
import type { BackupStore } from '../backups/store.js';
import type { JobRef } from '../job-ids.js';
import type { CompressedWal } from './growing-segment.js';
import { HISTORY_NAME, SEGMENT_NAME, parseLsn } from './wal-names.js';

/*
 * The WAL archive in each backup store, under `pitr/<server>/` (server: the system identifier):
 *   wal/<segment>.gz, wal/<segment>.json          a WAL segment (gzip, encrypted when BACKUP_ENCRYPTION_KEY
 *                                                 is set) and its signed sidecar: size, sha256, when archived
 *   wal/<segment>.<flush>.partial.gz, .json       the segment being written, as far as it was received
 *                                                 (flush: the position, 16 hex digits); never overwritten
 *   wal/<timeline>.history.gz, .json              a timeline's history
 *   base/<id>.json, base/<id>/ | base/<id>.tar.gz  a base backup: its signed manifest, then its files
 *   status.json                                   the archiver's last word: what is archived, when
 * Nothing here is acted on unless its sidecar or manifest is signed with this host's key.
 */

const SERVER_ID = /^\d{1,20}$/;
/** The objects under `wal/`: a segment, a kept partial segment or a timeline history, and their sidecars (walKey). */
const WAL_OBJECT = /^([0-9A-F]{24}(\.[0-9A-F]{16}\.partial)?|[0-9A-F]{8}\.history)\.(gz|json)$/;
const SHA256 = /^[0-9a-f]{64}$/;
export const BASE_ID = /^base-\d{8}t\d{6}z-[0-9a-f]{12}$/;

export const walEntrySchema = z.object({
  kind: z.literal('dbops-wal'),
  server: z.string().regex(SERVER_ID),
  /** A segment's or history file's name, as PostgreSQL names it. */
  name: z.string().refine((name) => SEGMENT_NAME.test(name) || HISTORY_NAME.test(name)),
  /** The segment being written: complete up to flushLsn, zeros after. */
  partial: z.boolean(),
  flushLsn: z.string().optional(),
  bytes: z.number().int().nonnegative(),
  /** Of the segment's own bytes (before compression and encryption). */
  sha256: z.string().regex(SHA256),
  archivedAt: z.iso.datetime(),
  encryption: z.string().optional(),
  signature: signatureSchema.optional(),
});
export type WalEntry = z.infer<typeof walEntrySchema>;

export const baseManifestSchema = z.object({
  kind: z.literal('dbops-base-backup'),
  id: z.string().regex(BASE_ID),
  server: z.string().regex(SERVER_ID),
  major: z.number().int(),
  timeline: z.number().int().positive(),
  startLsn: z.string(),
  stopLsn: z.string(),
  walSegmentBytes: z.number().int().positive(),
  startedAt: z.iso.datetime(),
  completedAt: z.iso.datetime(),
  durationMs: z.number(),
  sizeBytes: z.number().int().nonnegative(),
  /** `tree`: the data directory as files (a file store, unencrypted); `tar`: one gzip'd tar (sha256 of its stored bytes). */
  storage: z.enum(['tree', 'tar']),
  sha256: z.string().regex(SHA256).optional(),
  encryption: z.string().optional(),
  /** The environments whose databases live on this server, as configured when it was taken. */
  envs: z.record(z.string(), z.string()),
  signature: signatureSchema.optional(),
});
export type BaseManifest = z.infer<typeof baseManifestSchema>;

export const serverStatusSchema = z.object({
  kind: z.literal('dbops-wal-status'),
  server: z.string().regex(SERVER_ID),
  envs: z.record(z.string(), z.string()),
  walSegmentBytes: z.number().int().positive(),
  timeline: z.number().int().positive(),
  /** How far the WAL in this store goes. */
  archivedLsn: z.string(),
  /** The last time the store held everything the server had written (the recovery point). */
  caughtUpAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
  signature: signatureSchema.optional(),
});
export type ServerStatus = z.infer<typeof serverStatusSchema>;

/** Where a WAL file's objects live (without .gz / .json): a partial segment's name carries how far it goes. */
export function walKey(entry: Pick<WalEntry, 'server' | 'name' | 'partial' | 'flushLsn'>): string {
  const flush = entry.partial
    ? `.${parseLsn(entry.flushLsn ?? '0/0')
        .toString(16)
        .toUpperCase()
        .padStart(16, '0')}.partial`
    : '';
  return `${entry.server}/wal/${entry.name}${flush}`;
}

export type Opened<T> = { value: T } | { refused: string };

/** The point-in-time objects of every backup store, signed and checked with this configuration's key. */
export class PitrArchive {
  static async of(
    config: Pick<Config, 'backupStores' | 'backupDir' | 's3' | 'signingKey' | 'encryptionKey' | 'decryptionKeys'>,
  ): Promise<PitrArchive> {
    return new PitrArchive(
      BackupCatalogue.of(config).stores,
      await sealFor(config),
      config.encryptionKey,
      config.decryptionKeys,
    );
  }

  constructor(
    readonly stores: BackupStore[],
    private readonly seal: Seal,
    private readonly encryptionKey: Buffer | undefined,
    private readonly decryptionKeys: Buffer[],
  ) {}

  private decryptKey(id: string | undefined): Buffer | undefined {
    if (!id) return undefined;
    const key = this.decryptionKeys.find((candidate) => keyId(candidate) === id);
    if (!key)
      throw new PermanentError(`encrypted with key ${id}, which this host does not have (BACKUP_DECRYPTION_KEYS)`);
    return key;
  }

  private open<T extends { signature?: z.infer<typeof signatureSchema> }>(
    text: string,
    schema: z.ZodType<T>,
    purpose: SealPurpose,
  ): Opened<T> {
    let parsed;
    try {
      parsed = schema.safeParse(JSON.parse(text));
    } catch {
      return { refused: 'not JSON' };
    }
    if (!parsed.success) return { refused: `damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}` };
    const refused = this.seal.check(purpose, parsed.data);
    return refused ? { refused } : { value: parsed.data };
  }

  private async readSigned<T extends { signature?: z.infer<typeof signatureSchema> }>(
    store: BackupStore,
    key: string,
    schema: z.ZodType<T>,
    purpose: SealPurpose,
  ): Promise<Opened<T> | undefined> {
    const stream = await store.getObject(key);
    return stream ? this.open(await text(stream), schema, purpose) : undefined;
  }

  private async writeSigned(store: BackupStore, key: string, purpose: SealPurpose, value: object): Promise<void> {
    await store.putObject(key, `${JSON.stringify(this.seal.sign(purpose, value), null, 1)}\n`);
  }

  // ---- WAL ----

  /**
   * Archives one WAL file (a segment or a history) into `store`: compressed, encrypted
   * when a key is set, then its signed sidecar, which is what makes it count.
   */
  async putWal(
    store: BackupStore,
    server: string,
    file: string,
    entry: { name: string; partial: boolean; flushLsn?: string },
    signal?: AbortSignal,
  ): Promise<WalEntry> {
    const base = walKey({ server, ...entry });
    const measure = new HashingStream();
    const gzip = createGzip({ level: 1 });
    // Opened first: a file renamed meanwhile (pg_receivewal completing a segment) fails here, not mid-upload.
    const input = (await open(file, 'r')).createReadStream({ highWaterMark: 1 << 20 });
    const body = this.encryptionKey
      ? input.pipe(measure).pipe(gzip).pipe(new EncryptStream(this.encryptionKey))
      : input.pipe(measure).pipe(gzip);
    input.on('error', (error) => body.destroy(error));
    await store.putObject(`${base}.gz`, body, signal);
    return this.putWalSidecar(store, server, entry, { bytes: measure.bytes, sha256: measure.digest() });
  }

  /** Archives one WAL file compressed already (a GrowingSegment's), as `putWal` does. */
  async putCompressedWal(
    store: BackupStore,
    server: string,
    wal: CompressedWal,
    entry: { name: string; partial: boolean; flushLsn?: string },
    signal?: AbortSignal,
  ): Promise<WalEntry> {
    const body = this.encryptionKey
      ? Readable.from([wal.compressed]).pipe(new EncryptStream(this.encryptionKey))
      : wal.compressed;
    await store.putObject(`${walKey({ server, ...entry })}.gz`, body, signal);
    return this.putWalSidecar(store, server, entry, wal);
  }

  /** The signed sidecar that makes an archived WAL file count: written after its data. */
  private async putWalSidecar(
    store: BackupStore,
    server: string,
    entry: { name: string; partial: boolean; flushLsn?: string },
    measured: { bytes: number; sha256: string },
  ): Promise<WalEntry> {
    const sidecar: WalEntry = {
      kind: 'dbops-wal',
      server,
      name: entry.name,
      partial: entry.partial,
      ...(entry.flushLsn ? { flushLsn: entry.flushLsn } : {}),
      bytes: measured.bytes,
      sha256: measured.sha256,
      archivedAt: new Date().toISOString(),
      ...(this.encryptionKey ? { encryption: keyId(this.encryptionKey) } : {}),
    };
    await this.writeSigned(store, `${walKey({ server, ...entry })}.json`, 'wal-segment', sidecar);
    return sidecar;
  }

  /** The WAL files one store holds for `server` that are provably dbops' own; the rest with why. */
  async walListing(store: BackupStore, server: string): Promise<{ entries: WalEntry[]; skipped: string[] }> {
    const objects = await store.listObjects(`${server}/wal`);
    const names = new Set(objects.map((object) => object.name));
    const entries: WalEntry[] = [];
    const skipped: string[] = [];
    const sidecars = objects.filter((object) => object.name.endsWith('.json'));
    await eachLimited(sidecars, 16, async ({ name }) => {
      const opened = await this.readSigned(store, `${server}/wal/${name}`, walEntrySchema, 'wal-segment');
      if (!opened) return;
      if ('refused' in opened) {
        skipped.push(`${name}: ${opened.refused}`);
        return;
      }
      const expected = `${path.basename(walKey(opened.value))}.json`;
      if (opened.value.partial && !opened.value.flushLsn)
        skipped.push(`${name}: a partial segment without its position`);
      else if (name !== expected || opened.value.server !== server) skipped.push(`${name}: it names another file`);
      else if (!names.has(name.replace(/\.json$/, '.gz'))) skipped.push(`${name}: its data is missing`);
      else entries.push(opened.value);
    });
    entries.sort((a, b) => a.name.localeCompare(b.name));
    return { entries, skipped };
  }

  /** Fetches one archived WAL file into `destination`, checking its size and sha256 on the way. */
  async fetchWal(
    store: BackupStore,
    entry: WalEntry,
    destination: string,
    signal?: AbortSignal,
    /** The segment size: a partial segment is padded to it with zeros. */
    padTo?: number,
  ): Promise<void> {
    const key = `${walKey(entry)}.gz`;
    const stream = await store.getObject(key, signal);
    if (!stream) throw new PermanentError(`WAL ${entry.name} is missing from the ${store.name} store`);
    const measure = new HashingStream();
    const decryptKey = this.decryptKey(entry.encryption);
    const stages: NodeJS.ReadWriteStream[] = [
      ...(decryptKey ? [new DecryptStream(decryptKey)] : []),
      createGunzip(),
      measure,
    ];
    try {
      await pipeline([stream, ...stages, createWriteStream(destination, { mode: 0o600 })], { signal });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new PermanentError(`WAL ${entry.name} in the ${store.name} store is damaged: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const sha256 = measure.digest();
    if (measure.bytes !== entry.bytes || sha256 !== entry.sha256)
      throw new PermanentError(
        `WAL ${entry.name} in the ${store.name} store is damaged: ${measure.bytes} bytes with sha256 ${sha256.slice(0, 12)}…, its sidecar says ${entry.bytes} bytes, ${entry.sha256.slice(0, 12)}…`,
      );
    // A partial segment was kept as far as it went: PostgreSQL reads whole segments, zeros after the end.
    if (entry.partial && padTo !== undefined && measure.bytes < padTo) await truncate(destination, padTo);
  }

  async removeWal(store: BackupStore, entry: WalEntry): Promise<void> {
    const base = walKey(entry);
    await store.removeObject(`${base}.json`); // the sidecar first: a half-removed file never counts
    await store.removeObject(`${base}.gz`);
  }

  /**
   * Partial segments superseded for more than `graceMs` (a newer partial or the complete segment is
   * archived): removed, so that a restore that listed one a moment ago can still fetch it.
   */
  async prunePartials(store: BackupStore, server: string, graceMs = 60_000): Promise<number> {
    const { entries } = await this.walListing(store, server);
    const partials = entries.filter((entry) => entry.partial);
    const newest = partials.reduce<WalEntry | undefined>(
      (best, entry) => (!best || walKey(entry) > walKey(best) ? entry : best),
      undefined,
    );
    let removed = 0;
    for (const entry of partials) {
      if (entry === newest || Date.now() - Date.parse(entry.archivedAt) < graceMs) continue;
      await this.removeWal(store, entry);
      removed += 1;
    }
    return removed;
  }

  // ---- base backups ----

  async writeBaseManifest(store: BackupStore, manifest: BaseManifest): Promise<void> {
    await this.writeSigned(store, `${manifest.server}/base/${manifest.id}.json`, 'base-backup', manifest);
  }

  async baseListing(store: BackupStore, server: string): Promise<{ bases: BaseManifest[]; skipped: string[] }> {
    const objects = await store.listObjects(`${server}/base`);
    const bases: BaseManifest[] = [];
    const skipped: string[] = [];
    for (const { name } of objects.filter((object) => object.name.endsWith('.json'))) {
      const opened = await this.readSigned(store, `${server}/base/${name}`, baseManifestSchema, 'base-backup');
      if (!opened) continue;
      if ('refused' in opened) skipped.push(`base/${name}: ${opened.refused}`);
      else if (`${opened.value.id}.json` !== name || opened.value.server !== server)
        skipped.push(`base/${name}: it names another backup`);
      else bases.push(opened.value);
    }
    bases.sort((a, b) => a.completedAt.localeCompare(b.completedAt));
    return { bases, skipped };
  }

  /** Puts a checked base backup (a data directory on this host) into `store`; its manifest is written by the caller, last. */
  async putBase(
    job: JobRef,
    store: BackupStore,
    server: string,
    id: string,
    dataDir: string,
    tar: () => Readable,
    mayTake: boolean,
    signal?: AbortSignal,
  ): Promise<Pick<BaseManifest, 'storage' | 'sha256' | 'encryption'>> {
    const key = `${server}/base/${id}`;
    if (store.putTree && !this.encryptionKey) {
      await store.putTree(job, key, dataDir, mayTake);
      return { storage: 'tree' };
    }
    const measure = new HashingStream();
    const gzip = createGzip({ level: 1 });
    const source = tar();
    const body = this.encryptionKey
      ? source.pipe(gzip).pipe(new EncryptStream(this.encryptionKey)).pipe(measure)
      : source.pipe(gzip).pipe(measure);
    source.on('error', (error) => body.destroy(error));
    await store.putObject(`${key}.tar.gz`, body, signal);
    return {
      storage: 'tar',
      sha256: measure.digest(),
      ...(this.encryptionKey ? { encryption: keyId(this.encryptionKey) } : {}),
    };
  }

  /**
   * A base backup's files: the directory itself (a file store's tree), or its tar (gunzipped and
   * decrypted) as a stream for `extract`, checked against the manifest's sha256 once read.
   */
  async openBase(
    store: BackupStore,
    manifest: BaseManifest,
    extract: (tar: Readable) => Promise<void>,
    copyTree: (dir: string) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<void> {
    const key = `${manifest.server}/base/${manifest.id}`;
    if (manifest.storage === 'tree') {
      const dir = await store.treePath?.(key);
      if (!dir) throw new PermanentError(`base backup ${manifest.id} is missing from the ${store.name} store`);
      return copyTree(dir);
    }
    const stream = await store.getObject(`${key}.tar.gz`, signal);
    if (!stream) throw new PermanentError(`base backup ${manifest.id} is missing from the ${store.name} store`);
    const measure = new HashingStream();
    const decryptKey = this.decryptKey(manifest.encryption);
    const plain = decryptKey
      ? stream.pipe(measure).pipe(new DecryptStream(decryptKey)).pipe(createGunzip())
      : stream.pipe(measure).pipe(createGunzip());
    stream.on('error', (error) => plain.destroy(error));
    await extract(plain);
    if (measure.digest() !== manifest.sha256)
      throw new PermanentError(
        `base backup ${manifest.id} in the ${store.name} store is damaged: sha256 does not match its manifest`,
      );
  }

  async removeBase(store: BackupStore, manifest: BaseManifest): Promise<void> {
    const key = `${manifest.server}/base/${manifest.id}`;
    await store.removeObject(`${key}.json`);
    await store.removeObject(manifest.storage === 'tree' ? key : `${key}.tar.gz`);
  }

  // ---- servers and their status ----

  /** The servers one store holds WAL or base backups of. */
  async servers(store: BackupStore): Promise<string[]> {
    return (await store.listObjects('')).map((object) => object.name).filter((name) => SERVER_ID.test(name));
  }

  /**
   * Removes, from each file store, the temporary files an archiver killed mid-write left for this
   * server's WAL files and status: called by the archiver that holds the server's lock (the only writer
   * there), for files untouched for a minute (a write takes less than a second). Returns how many.
   */
  async sweepLeftovers(server: string): Promise<number> {
    let swept = 0;
    for (const store of this.stores) {
      swept += (await store.sweepTemporaries?.(`${server}/wal`, WAL_OBJECT, 60_000))?.length ?? 0;
      swept += (await store.sweepTemporaries?.(server, /^status\.json$/, 60_000))?.length ?? 0;
    }
    return swept;
  }

  async writeStatus(store: BackupStore, status: ServerStatus): Promise<void> {
    await this.writeSigned(store, `${status.server}/status.json`, 'wal-status', status);
  }

  async readStatus(store: BackupStore, server: string): Promise<Opened<ServerStatus> | undefined> {
    return this.readSigned(store, `${server}/status.json`, serverStatusSchema, 'wal-status');
  }
}
