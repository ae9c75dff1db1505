import { createReadStream } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa, type ResultPromise } from 'execa';
import type { Config } from '../config.js';
import { ArchiveProblem, PermanentError, errorMessage } from '../errors.js';
import { startTrackedTool, toolPath } from '../postgres/tools.js';
import { DecryptStream, keyId } from './encryption.js';
import type { Manifest } from './manifest.js';
import { checkLocalArchive } from './file-store.js';
import type { BackupStore, Integrity } from './store.js';

/** Permanent failures while reading an archive are the archive's; transient ones (connections) are not. */
function blameArchive(error: unknown): unknown {
  return error instanceof PermanentError && !(error instanceof ArchiveProblem)
    ? new ArchiveProblem(error.message)
    : error;
}

/**
 * How pg_restore reads an archive: by path, or (encrypted archives) decrypted on the fly into its
 * stdin, never as plaintext on disk. Reading from stdin, pg_restore cannot restore in parallel.
 */
export interface ArchiveInput {
  /** pg_restore's archive argument: the path, or none (stdin). */
  args: string[];
  /** Set for stdin input: pipes the decrypted archive into the tool; rejects if it does not decrypt. */
  feed?: (stdin: Writable) => Promise<void>;
  parallel: boolean;
}

/**
 * Refuses, before anything is touched, an encrypted archive this process has no key for, and, with
 * BACKUP_ENCRYPTION_KEY set, an archive that is not encrypted: encryption is then also the proof that
 * an archive is dbops' own, and pg_restore runs whatever SQL an archive holds.
 */
export function checkKey(
  manifest: Manifest,
  config: Pick<Config, 'decryptionKeys' | 'encryptionKey'>,
): Buffer | undefined {
  if (!manifest.encryption) {
    if (config.encryptionKey) {
      throw new PermanentError(
        `backup ${manifest.id} is not encrypted, and BACKUP_ENCRYPTION_KEY is set: dbops refuses unencrypted archives while encryption is on`,
      );
    }
    return undefined;
  }
  const wanted = manifest.encryption.keyId;
  const key = config.decryptionKeys.find((candidate) => keyId(candidate) === wanted);
  if (key) return key;
  if (config.decryptionKeys.length === 0)
    throw new PermanentError(
      `backup ${manifest.id} is encrypted (key id ${wanted}): set BACKUP_ENCRYPTION_KEY (or BACKUP_DECRYPTION_KEYS) to its key`,
    );
  const have =
    config.decryptionKeys.length === 1
      ? `BACKUP_ENCRYPTION_KEY is key id ${keyId(config.decryptionKeys[0]!)}`
      : `the keys set have ids ${config.decryptionKeys.map(keyId).join(', ')}`;
  throw new PermanentError(
    `backup ${manifest.id} was encrypted with another key (key id ${wanted}); ${have} (earlier keys go in BACKUP_DECRYPTION_KEYS)`,
  );
}

/** A backup's archive made ready for pg_restore, and how to check it against its manifest. */
export interface PreparedArchive {
  input: ArchiveInput;
  checkIntegrity(): Promise<Integrity>;
}

/**
 * What is wrong with the archive, checked against its manifest (a full read of it), or undefined when
 * it is whole; never rejects, so a caller can start it and ask later.
 */
export function archiveDamage(prepared: PreparedArchive): Promise<string | undefined> {
  return prepared.checkIntegrity().then(
    (integrity) => (integrity.ok ? undefined : integrity.reason),
    (error: unknown) => `cannot read it (${errorMessage(error)})`,
  );
}

/**
 * Makes a backup's archive readable by pg_restore: in place in a file store; streamed from object
 * storage (custom format); or, for a directory-format archive or a parallel restore from object
 * storage, downloaded into `workDir` first (checked there before anything else is touched).
 */
export async function prepareArchive(
  store: BackupStore,
  manifest: Manifest,
  config: Pick<Config, 'decryptionKeys' | 'encryptionKey'>,
  options: { workDir?: () => Promise<string>; parallel?: boolean; signal?: AbortSignal; onDownload?: () => void } = {},
): Promise<PreparedArchive> {
  const key = checkKey(manifest, config); // an encrypted archive without its key stops here
  const local = store.localArchive(manifest);
  if (local) return { input: inputFor(local, key), checkIntegrity: () => store.checkIntegrity(manifest) };
  const needsFiles = manifest.format === 'directory' || (options.parallel === true && !key);
  if (needsFiles) {
    if (!options.workDir)
      throw new PermanentError(
        `backup ${manifest.id} must be downloaded from the ${store.name} store first, and this job has no work area`,
      );
    options.onDownload?.();
    const copy = await store.download(manifest, await options.workDir(), options.signal);
    return {
      input: inputFor(copy.path, key),
      checkIntegrity: async () => copy.integrity ?? checkLocalArchive(copy.path, manifest),
    };
  }
  return {
    input: streamedInput(() => store.openArchive(manifest, options.signal), key),
    checkIntegrity: () => store.checkIntegrity(manifest),
  };
}

/** An archive read from a stream into pg_restore's stdin (decrypted on the way with `key`): one job, no parallel restore. */
function streamedInput(open: () => Promise<NodeJS.ReadableStream>, key: Buffer | undefined): ArchiveInput {
  return {
    args: [],
    parallel: false,
    feed: async (stdin) => {
      try {
        const source = await open();
        await (key ? pipeline(source, new DecryptStream(key), stdin) : pipeline(source, stdin));
      } catch (error) {
        // pg_restore closing its stdin early (it failed, or --list has read enough) is its own story.
        if (
          (error as NodeJS.ErrnoException).code === 'EPIPE' ||
          (error as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE'
        )
          return;
        throw error;
      }
    },
  };
}

/** The archive at `archive`, decrypted with `key` when given. */
export function inputFor(archive: string, key: Buffer | undefined): ArchiveInput {
  if (!key) return { args: [archive], parallel: true };
  return streamedInput(async () => createReadStream(archive, { highWaterMark: 1 << 20 }), key);
}

/** What pg_restore writes on stdout reading the archive with `args` (a listing, or SQL). */
async function readWithPgRestore(
  input: ArchiveInput,
  args: string[],
  binDir: string | undefined,
  signal?: AbortSignal,
): Promise<string> {
  const child = execa(toolPath('pg_restore', binDir), [...args, ...input.args], {
    cancelSignal: signal,
    stdin: input.feed ? 'pipe' : 'ignore',
  });
  const [listed, fed] = await Promise.allSettled([child, input.feed?.(child.stdin!)]);
  if (fed.status === 'rejected') throw blameArchive(fed.reason); // it does not decrypt: that, not pg_restore's EOF, is the story
  if (listed.status === 'fulfilled') return listed.value.stdout;
  const error = listed.reason as { isCanceled?: boolean; stderr?: string };
  if (error.isCanceled) throw error;
  const stderr = String(error.stderr ?? '')
    .trim()
    .split('\n')
    .pop();
  throw new ArchiveProblem(`the archive is damaged: pg_restore cannot read its table of contents (${stderr})`);
}

/** The entries of an archive's table of contents, one line each (`pg_restore --list`); an ArchiveProblem if unreadable. */
export async function tocLines(
  input: ArchiveInput,
  binDir: string | undefined,
  signal?: AbortSignal,
): Promise<string[]> {
  return (await readWithPgRestore(input, ['--list'], binDir, signal))
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith(';'));
}

/** Number of entries in an archive's table of contents; a PermanentError if pg_restore cannot read it. */
export async function countTocEntries(
  input: ArchiveInput,
  binDir: string | undefined,
  signal?: AbortSignal,
): Promise<number> {
  return (await tocLines(input, binDir, signal)).length;
}

/** The SQL of the entries a `pg_restore --list` file names, as pg_restore would run it (no database). */
export async function tocSql(
  input: ArchiveInput,
  listFile: string,
  binDir: string | undefined,
  signal?: AbortSignal,
): Promise<string> {
  return readWithPgRestore(input, [`--use-list=${listFile}`, '--file=-'], binDir, signal);
}

/**
 * pg_restore writing the SQL script of what `args` select (e.g. `--data-only --use-list=…`) on its
 * stdout, for the caller to read; `done` settles when it has ended, a decryption failure the error
 * reported.
 */
export function archiveScript(
  input: ArchiveInput,
  args: string[],
  options: Pick<RestoreArchiveOptions, 'binDir' | 'signal' | 'onLine'>,
): { script: Readable; done: Promise<void> } {
  const { child, done } = runPgRestore(input, ['--no-password', '--exit-on-error', '--file=-', ...args], {
    ...options,
    stdout: 'pipe',
  });
  return { script: child.stdout!, done };
}

export interface RestoreArchiveOptions {
  binDir: string | undefined;
  /** Parallel jobs; 1 whatever is asked when the archive comes through stdin. */
  jobs: number;
  signal: AbortSignal;
  /** Each line pg_restore prints (its --verbose output and errors). */
  onLine?: (line: string) => void;
  /** More pg_restore options, e.g. --no-owner. */
  extraArgs?: string[];
}

/** pg_restore of a whole archive into the database at `url`; a decryption failure is the error reported. */
export async function restoreArchive(input: ArchiveInput, url: string, options: RestoreArchiveOptions): Promise<void> {
  const args = [
    '--verbose',
    '--no-password',
    '--exit-on-error',
    `--jobs=${input.parallel ? options.jobs : 1}`,
    ...(options.extraArgs ?? []),
  ];
  await runPgRestore(input, args, { ...options, url }).done;
}

/**
 * pg_restore of `input` with `args`, the archive fed into its stdin where it comes that way; `done`
 * settles when both have ended, a failure to feed it (an archive that does not decrypt) the error
 * reported before pg_restore's own, and any permanent failure the archive's.
 */
function runPgRestore(
  input: ArchiveInput,
  args: string[],
  options: Pick<RestoreArchiveOptions, 'binDir' | 'signal' | 'onLine'> & { url?: string; stdout?: 'pipe' },
): { child: ResultPromise; done: Promise<void> } {
  const { child, finished } = startTrackedTool('pg_restore', [...args, ...input.args], {
    url: options.url,
    signal: options.signal,
    binDir: options.binDir,
    stdin: input.feed ? 'pipe' : 'ignore',
    stdout: options.stdout,
    onStderrLine: options.onLine,
  });
  const fed = input.feed?.(child.stdin!).catch((error: unknown) => {
    child.kill(); // what it has read is authenticated, but the rest never will be
    throw error;
  });
  const done = Promise.allSettled([finished, fed]).then(([restored, feeding]) => {
    if (feeding.status === 'rejected') throw blameArchive(feeding.reason);
    if (restored.status === 'rejected') throw blameArchive(restored.reason);
  });
  return { child, done };
}
