import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { eachLimited } from '../concurrency.js';
import { PermanentError } from '../errors.js';
import { LOCAL_QUEUE, decodeFromPath, encodeForPath, type JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';
import { describeStore, type S3Settings, type StoreSpec } from '../store-specs.js';
import { HashingStream, directoryDigest, type FileDigest } from './checksum.js';
import {
  ARCHIVE_NAME,
  listingOf,
  ownManifest,
  type BackupFormat,
  type Manifest,
  type ManifestListing,
} from './manifest.js';
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
  type UnpublishedMarker,
} from './store.js';

/*
 * A bucket and key prefix as a backup store, in the file store's layout:
 *   <prefix>/<id>.dump | <prefix>/<id>.d/<file>   the archive (a multipart upload appears only once complete)
 *   <prefix>/<id>.json                            its manifest, written last
 *   <prefix>/.partial/<prefix>/<queue>/<job>.json  an upload in progress: which job, which archive
 *   <prefix>/.in-use/<id>@<queue>.<job>            a job is reading backup <id>: prune keeps it
 *   <prefix>/roles/<name>.json
 * Credentials, region and endpoint come from the AWS SDK's own sources (AWS_* variables, profiles).
 */

const PART_SIZE = 8 << 20;
/** Parts in flight per upload: memory stays at about PART_SIZE × (QUEUE_SIZE + 1) whatever the archive's size. */
const QUEUE_SIZE = 2;
/** Files of a directory-format archive moved at once. */
const FILE_CONCURRENCY = 4;

type S3Spec = Extract<StoreSpec, { kind: 's3' }>;

type ClientS3 = typeof import('@aws-sdk/client-s3');
/** The SDK is loaded when a store is first used (it costs a third of a second to load): commands that touch no bucket do not pay it. */
const loadSdk = () => Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]);

/** An error the S3 service answered with (S3ServiceException, told apart without loading the SDK). */
function serviceError(error: unknown): { name: string; message: string; status: number } | undefined {
  const metadata = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  if (!metadata || !(error instanceof Error)) return undefined;
  return { name: error.name, message: error.message, status: metadata.httpStatusCode ?? 0 };
}

/** Whether S3 answered that the object (or bucket key) is not there: itself, or the S3 error a failure() wraps. */
const isMissing = (error: unknown): boolean => {
  const service = serviceError(error) ?? serviceError((error as { cause?: unknown } | null)?.cause);
  return (
    service !== undefined && (service.name === 'NoSuchKey' || service.name === 'NotFound' || service.status === 404)
  );
};

// The SDK warns on stderr, once per process, that its releases after January 2027 need Node.js 22.
// The pinned version runs on Node.js 20; that warning would break the CLI's one-line errors. (Upgrade
// Node.js before the SDK: package.json's engines and docs/deployment.md say so.)
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export class S3Store implements BackupStore {
  readonly kind = 's3';
  readonly name: string;
  readonly location: string;
  private connection?: Promise<{
    sdk: ClientS3;
    Upload: typeof import('@aws-sdk/lib-storage').Upload;
    client: S3Client;
  }>;

  constructor(
    private readonly spec: S3Spec,
    /** The key that signs and checks this store's manifests and upload markers (signing.ts). */
    private readonly seal: () => Promise<Seal>,
    private readonly settings: S3Settings = {},
  ) {
    this.name = spec.name;
    this.location = describeStore(spec);
  }

  private connect() {
    this.connection ??= loadSdk().then(([sdk, storage]) => {
      const endpoint = this.spec.endpoint ?? this.settings.endpoint;
      const region = this.spec.region ?? this.settings.region;
      const client = new sdk.S3Client({
        forcePathStyle: this.spec.forcePathStyle,
        ...(endpoint ? { endpoint } : {}),
        // An endpoint of one's own (MinIO…) often has no region; the SDK needs one to sign with.
        ...(region ? { region } : endpoint ? { region: 'us-east-1' } : {}),
        ...(this.settings.credentials ? { credentials: this.settings.credentials } : {}),
        // S3-compatible servers (MinIO, Ceph, s3rver) do not all take the newer default checksums.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 4,
      });
      return { sdk, Upload: storage.Upload, client };
    });
    return this.connection;
  }

  /** Runs `use` with the loaded SDK and this store's client. */
  private async with<T>(use: (sdk: ClientS3, client: S3Client) => Promise<T>): Promise<T> {
    const { sdk, client } = await this.connect();
    return use(sdk, client);
  }

  private key(name: string): string {
    return this.spec.prefix ? `${this.spec.prefix}/${name}` : name;
  }

  /** An S3 failure in one line that names the store; a refusal (credentials, bucket) is permanent. */
  private failure(error: unknown, doing: string): Error {
    const service = serviceError(error);
    if (service) {
      const { status } = service;
      const text = `${this.name} store (${this.location}): ${doing}: ${service.name}${service.message && service.message !== service.name ? `: ${service.message}` : ''}`;
      const failed =
        status >= 400 && status < 500 && status !== 408 && status !== 429 ? new PermanentError(text) : new Error(text);
      return Object.assign(failed, { cause: error });
    }
    const message = error instanceof Error ? error.message : String(error);
    return new Error(`${this.name} store (${this.location}): ${doing}: ${message}`, { cause: error });
  }

  private async call<T>(doing: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw this.failure(error, doing);
    }
  }

  private async getText(key: string): Promise<string | undefined> {
    try {
      const answer = await this.with((sdk, client) =>
        client.send(new sdk.GetObjectCommand({ Bucket: this.spec.bucket, Key: key })),
      );
      return await answer.Body!.transformToString('utf8');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw this.failure(error, `reading ${key}`);
    }
  }

  private putText(key: string, text: string): Promise<unknown> {
    return this.call(`writing ${key}`, () =>
      this.with((sdk, client) =>
        client.send(
          new sdk.PutObjectCommand({ Bucket: this.spec.bucket, Key: key, Body: text, ContentType: 'application/json' }),
        ),
      ),
    );
  }

  private deleteKey(key: string): Promise<unknown> {
    return this.call(`deleting ${key}`, () =>
      this.with((sdk, client) => client.send(new sdk.DeleteObjectCommand({ Bucket: this.spec.bucket, Key: key }))),
    );
  }

  /** Keys (with sizes) under `prefix`; with `shallow`, not below the next slash. */
  private async listKeys(prefix: string, shallow = false): Promise<{ key: string; size: number }[]> {
    const found: { key: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(`listing ${prefix || 'the bucket'}`, () =>
        this.with((sdk, client) =>
          client.send(
            new sdk.ListObjectsV2Command({
              Bucket: this.spec.bucket,
              Prefix: prefix,
              ContinuationToken: token,
              ...(shallow ? { Delimiter: '/' } : {}),
            }),
          ),
        ),
      );
      for (const item of page.Contents ?? []) if (item.Key) found.push({ key: item.Key, size: item.Size ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return found;
  }

  /** The "folders" directly under `prefix` (common prefixes, with their trailing slash). */
  private async listFolders(prefix: string): Promise<string[]> {
    const found: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(`listing ${prefix}`, () =>
        this.with((sdk, client) =>
          client.send(
            new sdk.ListObjectsV2Command({
              Bucket: this.spec.bucket,
              Prefix: prefix,
              Delimiter: '/',
              ContinuationToken: token,
            }),
          ),
        ),
      );
      for (const item of page.CommonPrefixes ?? []) if (item.Prefix) found.push(item.Prefix);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return found;
  }

  private async deletePrefix(prefix: string): Promise<void> {
    const keys = (await this.listKeys(prefix)).map((item) => item.key);
    for (let start = 0; start < keys.length; start += 1000) {
      const batch = keys.slice(start, start + 1000);
      await this.call(`deleting ${prefix}`, () =>
        this.with((sdk, client) =>
          client.send(
            new sdk.DeleteObjectsCommand({
              Bucket: this.spec.bucket,
              Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
            }),
          ),
        ),
      );
    }
  }

  async list(): Promise<ManifestListing> {
    const root = this.key('');
    const keys = (await this.listKeys(root, true)).map((item) => item.key).filter((key) => key.endsWith('.json'));
    const objects: { name: string; text: string }[] = [];
    await eachLimited(keys, 8, async (key) => {
      const text = await this.getText(key);
      if (text !== undefined) objects.push({ name: key.slice(root.length), text }); // else pruned meanwhile
    });
    return listingOf(this.name, objects, await this.seal());
  }

  async read(id: string): Promise<Manifest | undefined> {
    const text = await this.getText(this.key(`${id}.json`));
    return text === undefined ? undefined : ownManifest(text, id, this.name, await this.seal());
  }

  async writeManifest(manifest: Manifest): Promise<void> {
    const signed = (await this.seal()).sign('manifest', manifest);
    await this.putText(this.key(`${manifest.id}.json`), `${JSON.stringify(signed, null, 2)}\n`);
  }

  private async removeArchive(archive: string): Promise<void> {
    if (archive.endsWith('.d')) await this.deletePrefix(this.key(`${archive}/`));
    else await this.deleteKey(this.key(archive));
  }

  async remove(manifest: Manifest): Promise<void> {
    await this.deleteKey(this.key(`${manifest.id}.json`));
    await this.removeArchive(manifest.archive);
  }

  localArchive(): undefined {
    return undefined;
  }
  private pitrObjectKey(key: string): string {
    return this.key(`pitr/${pitrKey(key)}`);
  }

  async putObject(key: string, body: Readable | Buffer | string, signal?: AbortSignal): Promise<void> {
    const full = this.pitrObjectKey(key);
    const { Upload, client } = await this.connect();
    const upload = new Upload({
      client,
      params: { Bucket: this.spec.bucket, Key: full, Body: body },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    const stop = () => void upload.abort().catch(() => undefined);
    signal?.addEventListener('abort', stop, { once: true });
    try {
      await upload.done();
    } catch (error) {
      throw this.failure(error, `uploading ${full}`);
    } finally {
      signal?.removeEventListener('abort', stop);
    }
  }

  async getObject(key: string, signal?: AbortSignal): Promise<Readable | undefined> {
    const full = this.pitrObjectKey(key);
    try {
      const answer = await this.with((sdk, client) =>
        client.send(new sdk.GetObjectCommand({ Bucket: this.spec.bucket, Key: full }), { abortSignal: signal }),
      );
      return answer.Body as Readable;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw this.failure(error, `reading ${full}`);
    }
  }

  async listObjects(prefix: string): Promise<{ name: string; size: number }[]> {
    const root = prefix ? `${this.pitrObjectKey(prefix)}/` : this.key('pitr/');
    const keys = await this.listKeys(root, true);
    const folders = await this.listFolders(root);
    return [
      ...keys.map((item) => ({ name: item.key.slice(root.length), size: item.size })),
      ...folders.map((folder) => ({ name: folder.slice(root.length).replace(/\/$/, ''), size: 0 })),
    ];
  }

  async removeObject(key: string): Promise<void> {
    await this.deleteKey(this.pitrObjectKey(key));
  }

  private async openKey(key: string, signal?: AbortSignal): Promise<Readable> {
    const answer = await this.call(`reading ${key}`, () =>
      this.with((sdk, client) =>
        client.send(new sdk.GetObjectCommand({ Bucket: this.spec.bucket, Key: key }), { abortSignal: signal }),
      ),
    );
    return answer.Body as Readable;
  }

  openArchive(manifest: Manifest, signal?: AbortSignal): Promise<Readable> {
    return this.openKey(this.key(manifest.archive), signal);
  }

  /** The files of a directory-format archive, as the manifest lists them (else as the bucket does). */
  private async archiveFiles(manifest: Manifest): Promise<string[]> {
    if (manifest.files) return manifest.files.map((file) => file.name);
    const prefix = this.key(`${manifest.archive}/`);
    return (await this.listKeys(prefix)).map((item) => item.key.slice(prefix.length));
  }

  async download(
    manifest: Manifest,
    dir: string,
    signal?: AbortSignal,
  ): Promise<{ path: string; integrity?: Integrity }> {
    const target = path.join(dir, manifest.archive);
    if (manifest.format === 'custom') {
      // Hashed on the way: the copy is checked without being read again.
      const hashing = new HashingStream();
      await pipeline(
        await this.openArchive(manifest, signal),
        hashing,
        createWriteStream(target, { mode: 0o600, highWaterMark: 1 << 20 }),
        { signal },
      );
      const integrity: Integrity =
        hashing.bytes !== manifest.sizeBytes
          ? { ok: false, reason: `archive is ${hashing.bytes} bytes, the manifest says ${manifest.sizeBytes}` }
          : hashing.digest() === manifest.sha256
            ? { ok: true }
            : { ok: false, reason: 'sha256 does not match the manifest' };
      return { path: target, integrity };
    }
    await mkdir(target, { mode: 0o700 });
    await eachLimited(await this.archiveFiles(manifest), FILE_CONCURRENCY, async (file) => {
      if (file.includes('/') || file.startsWith('.'))
        throw new PermanentError(`damaged manifest: "${file}" is no file of an archive`);
      await pipeline(
        await this.openKey(this.key(`${manifest.archive}/${file}`), signal),
        createWriteStream(path.join(target, file), { mode: 0o600 }),
        { signal },
      );
    });
    return { path: target };
  }

  private async digestOf(key: string): Promise<FileDigest> {
    const hashing = new HashingStream();
    await pipeline(
      await this.openKey(key),
      hashing,
      new Writable({ write: (_chunk, _encoding, callback) => callback() }),
    );
    return { name: path.posix.basename(key), sizeBytes: hashing.bytes, sha256: hashing.digest() };
  }

  async checkIntegrity(manifest: Manifest): Promise<Integrity> {
    if (manifest.format === 'custom') {
      const key = this.key(manifest.archive);
      let size: number;
      try {
        size =
          (
            await this.with((sdk, client) =>
              client.send(new sdk.HeadObjectCommand({ Bucket: this.spec.bucket, Key: key })),
            )
          ).ContentLength ?? -1;
      } catch (error) {
        if (isMissing(error))
          return { ok: false, reason: `archive ${manifest.archive} is missing from the ${this.name} store` };
        throw this.failure(error, `reading ${key}`);
      }
      if (size !== manifest.sizeBytes)
        return { ok: false, reason: `archive is ${size} bytes, the manifest says ${manifest.sizeBytes}` };
      const digest = await this.digestOf(key);
      return digest.sha256 === manifest.sha256
        ? { ok: true }
        : { ok: false, reason: 'sha256 does not match the manifest' };
    }
    const expected = manifest.files ?? [];
    const digests: FileDigest[] = [];
    const missing: string[] = [];
    await eachLimited(expected, FILE_CONCURRENCY, async (file) => {
      try {
        digests.push({ ...(await this.digestOf(this.key(`${manifest.archive}/${file.name}`))), name: file.name });
      } catch (error) {
        if (!isMissing(error)) throw error;
        missing.push(file.name);
      }
    });
    if (missing.length === 0 && directoryDigest(digests) === manifest.sha256) return { ok: true };
    const byName = new Map(digests.map((file) => [file.name, file.sha256]));
    const changed = expected
      .filter((file) => byName.has(file.name) && byName.get(file.name) !== file.sha256)
      .map((file) => file.name);
    return {
      ok: false,
      reason: `sha256 does not match the manifest (changed: ${[...changed, ...missing].join(', ') || 'listing'})`,
    };
  }

  private markerKey(job: JobRef): string {
    return this.key(`.partial/${encodeForPath(job.prefix)}/${encodeForPath(job.queue)}/${encodeForPath(job.id)}.json`);
  }

  /** The marker stored for `job`, when it is dbops' own (signed) and names that job; why not, else. */
  private async readMarker(key: string, job: JobRef): Promise<UnpublishedMarker | { refused: string } | undefined> {
    const text = await this.getText(key);
    return text === undefined ? undefined : openUnpublishedMarker(text, await this.seal(), job);
  }

  async beginArchive(job: JobRef, id: string, format: BackupFormat): Promise<ArchiveWriter> {
    const archive = archiveName(id, format);
    const marker = newUnpublishedMarker(await this.seal(), job, id, archive);
    // An earlier attempt of this job that died mid-upload: its archive was never published; it goes.
    const earlier = await this.readMarker(this.markerKey(job), job);
    if (earlier && !('refused' in earlier) && earlier.archive !== archive)
      await this.removeUnpublished(earlier.archive);
    await this.putText(this.markerKey(job), JSON.stringify(marker));
    const { Upload, client } = await this.connect();
    let upload: InstanceType<typeof Upload> | undefined;
    let uploaded: Promise<unknown> | undefined;
    const uploadStream = (key: string, body: Readable | PassThrough) =>
      new Upload({
        client,
        params: { Bucket: this.spec.bucket, Key: key, Body: body },
        partSize: PART_SIZE,
        queueSize: QUEUE_SIZE,
        leavePartsOnError: false,
      });
    return {
      sink: () => {
        const body = new PassThrough({ highWaterMark: 1 << 20 });
        upload = uploadStream(this.key(archive), body);
        uploaded = upload.done().catch((error: unknown) => {
          body.destroy();
          throw this.failure(error, `uploading ${archive}`);
        });
        uploaded.catch(() => undefined); // awaited by complete(); a failure meanwhile shows as the sink's
        return body;
      },
      putDirectory: async (localDir, signal) => {
        const files = (await readdir(localDir, { withFileTypes: true }))
          .filter((entry) => entry.isFile())
          .map((entry) => entry.name);
        await eachLimited(files, FILE_CONCURRENCY, async (file) => {
          signal.throwIfAborted();
          const one = uploadStream(
            this.key(`${archive}/${file}`),
            createReadStream(path.join(localDir, file), { highWaterMark: 1 << 20 }),
          );
          const stop = () => void one.abort().catch(() => undefined);
          signal.addEventListener('abort', stop, { once: true });
          try {
            await one.done();
          } catch (error) {
            throw this.failure(error, `uploading ${archive}/${file}`);
          } finally {
            signal.removeEventListener('abort', stop);
          }
        });
      },
      complete: async () => {
        await uploaded;
      },
      abort: async () => {
        await upload?.abort().catch(() => undefined);
        await uploaded?.catch(() => undefined);
        await this.removeUnpublished(archive).catch(() => undefined);
        await this.deleteKey(this.markerKey(job)).catch(() => undefined);
      },
      published: async () => {
        await this.deleteKey(this.markerKey(job));
      },
    };
  }

  /** Removes an archive that has no manifest (never published), and aborts its unfinished uploads. */
  private async removeUnpublished(archive: string): Promise<void> {
    if (!ARCHIVE_NAME.test(archive)) return; // only ever an archive's own name, never another object
    const id = archive.replace(/\.(dump|d)$/, '');
    // Any object where its manifest would be (dbops' own or not) means: not leftovers of an upload.
    if ((await this.getText(this.key(`${id}.json`)).catch(() => 'unreadable')) !== undefined) return;
    await this.removeArchive(archive);
    try {
      const uploads = await this.with((sdk, client) =>
        client.send(new sdk.ListMultipartUploadsCommand({ Bucket: this.spec.bucket, Prefix: this.key(archive) })),
      );
      for (const unfinished of uploads.Uploads ?? []) {
        await this.with((sdk, client) =>
          client.send(
            new sdk.AbortMultipartUploadCommand({
              Bucket: this.spec.bucket,
              Key: unfinished.Key,
              UploadId: unfinished.UploadId,
            }),
          ),
        );
      }
    } catch {
      // Servers without ListMultipartUploads (s3rver): a lifecycle rule (AbortIncompleteMultipartUpload) ends them.
    }
  }

  async markInUse(backupId: string, job: JobRef): Promise<() => Promise<void>> {
    const key = this.key(`.in-use/${backupId}@${encodeForPath(job.queue)}.${encodeForPath(job.id)}`);
    await this.putText(key, JSON.stringify(newInUseMark(backupId, job)));
    return async () => {
      await this.deleteKey(key);
    };
  }

  private async marksWithKeys(): Promise<(InUseMark & { key: string })[]> {
    const marks: (InUseMark & { key: string })[] = [];
    for (const { key } of await this.listKeys(this.key('.in-use/'))) {
      const text = await this.getText(key);
      const mark = text === undefined ? undefined : parseInUseMark(text);
      if (mark) marks.push({ ...mark, key });
    }
    return marks;
  }

  inUseMarks(): Promise<InUseMark[]> {
    return this.marksWithKeys();
  }

  async writeRoles(name: string, roles: unknown): Promise<string> {
    const file = `roles/${name}.json`;
    await this.putText(this.key(file), `${JSON.stringify(roles, null, 2)}\n`);
    return file;
  }

  /**
   * Uploads of this prefix's dead jobs: the archive they left (never one with a manifest) and its
   * unfinished multipart uploads go; then stale in-use marks. Another prefix's markers are left alone.
   */
  async recover(context: RecoveryContext): Promise<void> {
    const markers = this.key(`.partial/${encodeForPath(context.prefix)}/`);
    for (const { key } of await this.listKeys(markers)) {
      const [queueDir, idFile] = key.slice(markers.length).split('/');
      const queue = queueDir ? decodeFromPath(queueDir) : undefined;
      const id = idFile?.endsWith('.json') ? decodeFromPath(idFile.slice(0, -'.json'.length)) : undefined;
      if (queue === undefined || id === undefined) continue;
      const job = { prefix: context.prefix, queue, id };
      const marker = await this.readMarker(key, job);
      if (!marker) continue;
      if ('refused' in marker) {
        context.logger.warn(
          { key, store: this.name, reason: marker.refused },
          "left alone: an upload marker that is not dbops' own",
        );
        continue;
      }
      const stale =
        queue === LOCAL_QUEUE
          ? await markIsStale({ backupId: '', ...marker }, context, LOCAL_QUEUE)
          : !(await context.isJobActive(job));
      if (!stale) continue;
      await this.removeUnpublished(marker.archive);
      await this.deleteKey(key);
      context.logger.info({ job, store: this.name }, 'removed the unfinished upload of a dead worker');
    }
    for (const mark of await this.marksWithKeys()) {
      if (await markIsStale(mark, context, LOCAL_QUEUE)) {
        await this.deleteKey(mark.key);
        context.logger.info(
          { job: mark.job, backupId: mark.backupId, store: this.name },
          'removed the in-use mark of a dead worker',
        );
      }
    }
  }
}
