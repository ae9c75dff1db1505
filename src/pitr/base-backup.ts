import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import type { JobRef } from '../job-ids.js';
import { connect } from '../postgres/client.js';
import { serverBinDir } from '../postgres/binaries.js';
import { StderrTail, finishTool, startTool, type PgTool } from '../postgres/tools.js';
import { userTablespaces, serverFacts, type Tablespace } from '../postgres/wal.js';
import { PitrArchive, type BaseManifest } from './wal-archive.js';
import { formatLsn, parseLsn, parseSegmentName, segmentOf } from './wal-names.js';

/*
 * A base backup: pg_basebackup of the whole server (plain format, with the WAL it needs, its tablespaces
 * as directories pg_tblspc/<oid> inside), checked with pg_verifybackup against its own backup_manifest
 * before it is kept, then put into every store and described by a signed manifest written last.
 */

export function newBaseId(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'z')
    .toLowerCase();
  return `base-${stamp}-${randomBytes(6).toString('hex')}`;
}

export interface BaseBackupOptions {
  config: Config;
  /** The environment whose server is backed up, its URL, and every environment on that server. */
  env: string;
  url: string;
  envs: Record<string, string>;
  /** The job, and a private, empty directory on this host for its work. */
  job: JobRef;
  workDir: string;
  signal: AbortSignal;
  progress(percent: number, step: string): void;
  mark(step: string): void;
}

export async function takeBaseBackup(options: BaseBackupOptions): Promise<BaseManifest> {
  const { config, url, workDir, signal } = options;
  const startedAt = new Date();
  const client = await connect(url, 'dbops:basebackup', options.env);
  let facts;
  let tablespaces: Tablespace[];
  try {
    facts = await serverFacts(client);
    tablespaces = await userTablespaces(client);
  } finally {
    await client.end().catch(() => undefined);
  }
  const binDir = await serverBinDir(facts.major, config.PG_BIN_DIR, 'pg_basebackup');
  const data = path.join(workDir, 'data');
  // Each tablespace is written beside the data directory, not into its path on the server's host (on
  // that host, the live server's), and moved into the data directory once checked: see tablespace-records.ts.
  const mapped = tablespaces
    .filter((space) => path.isAbsolute(space.location))
    .map((space) => ({ ...space, into: path.join(workDir, 'tablespaces', String(space.oid)) }));
  const stopCheck = new AbortController();
  const check = (manifest: string) =>
    verifyBaseDirectory(binDir, data, AbortSignal.any([signal, stopCheck.signal]), manifest);
  let checking: Promise<void> | undefined;
  options.progress(2, 'pg_basebackup');
  try {
    await runTool(
      'pg_basebackup',
      binDir,
      url,
      signal,
      [
        '--pgdata',
        data,
        '--format=plain',
        '--wal-method=stream',
        ...mapped.map((space) => `--tablespace-mapping=${escapeMapping(space.location)}=${escapeMapping(space.into)}`),
        '--checkpoint=fast',
        '--no-password',
        '--progress',
        '--verbose',
      ],
      (line) => {
        const match = /\((\d+)%\)/.exec(line);
        if (match) options.progress(2 + Math.round(Number(match[1]) * 0.7), 'pg_basebackup');
        // Once pg_basebackup syncs, every file and the WAL are written, and the manifest is complete under
        // its temporary name (renamed after the sync): the check reads them from the page cache while the
        // disk writes them, instead of after.
        if (checking === undefined && /syncing data to disk/.test(line)) {
          checking = check('backup_manifest.tmp');
          checking.catch(() => undefined);
        }
      },
    );
  } catch (error) {
    stopCheck.abort();
    await checking?.catch(() => undefined);
    throw error;
  }
  options.mark('pg_basebackup');
  options.progress(73, 'pg_verifybackup');
  await (checking ?? check('backup_manifest'));
  options.mark('pg_verifybackup');
  for (const space of mapped) {
    const link = path.join(data, 'pg_tblspc', String(space.oid));
    await rm(link);
    await rename(space.into, link);
  }
  const ranges = JSON.parse(await readFile(path.join(data, 'backup_manifest'), 'utf8')) as {
    'WAL-Ranges'?: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[];
    Files?: { Size: number }[];
  };
  const range = ranges['WAL-Ranges']?.at(-1);
  if (!range) throw new PermanentError('the base backup has no WAL range in its backup_manifest');
  const sizeBytes = (ranges.Files ?? []).reduce((sum, file) => sum + file.Size, 0);
  const id = newBaseId(startedAt);
  const archive = await PitrArchive.of(config);
  // S3 stores read the directory first (as a tar); the last file store may then take it as it is.
  const stores = [...archive.stores].sort((a, b) => Number(a.kind === 'file') - Number(b.kind === 'file'));
  const stored: Pick<BaseManifest, 'storage' | 'sha256' | 'encryption'>[] = [];
  for (const [index, store] of stores.entries()) {
    options.progress(75 + Math.round((20 * index) / stores.length), `storing in ${store.name}`);
    stored.push(
      await archive.putBase(
        options.job,
        store,
        facts.systemId,
        id,
        data,
        () => tarOf(data, signal),
        index === stores.length - 1,
        signal,
      ),
    );
  }
  options.mark('store');
  const completedAt = new Date();
  const base: Omit<BaseManifest, 'storage' | 'sha256' | 'encryption'> = {
    kind: 'dbops-base-backup',
    id,
    server: facts.systemId,
    major: facts.major,
    timeline: range.Timeline,
    startLsn: formatLsn(parseLsn(range['Start-LSN'])),
    stopLsn: formatLsn(parseLsn(range['End-LSN'])),
    walSegmentBytes: facts.walSegmentBytes,
    startedAt: startedAt.toISOString(),
    completedAt: completedAt.toISOString(),
    durationMs: completedAt.getTime() - startedAt.getTime(),
    sizeBytes,
    envs: options.envs,
  };
  let manifest: BaseManifest | undefined;
  for (const [index, store] of stores.entries()) {
    const one: BaseManifest = { ...base, ...stored[index]! };
    await archive.writeBaseManifest(store, one);
    manifest ??= one;
  }
  return manifest!;
}

/**
 * pg_verifybackup of a base backup's directory against its backup_manifest (or `manifest`, another
 * name for it in the directory): every file's size and checksum, the manifest's own, and the WAL.
 */
export async function verifyBaseDirectory(
  binDir: string | undefined,
  data: string,
  signal: AbortSignal,
  manifest = 'backup_manifest',
): Promise<void> {
  // pg_verifybackup reads the WAL with pg_waldump, which comes with the server's package, not the client's.
  const waldump = existsSync(path.join(binDir ?? '/usr/bin', 'pg_waldump'));
  await runTool('pg_verifybackup', binDir, undefined, signal, [
    '--quiet',
    ...(waldump ? [] : ['--no-parse-wal']),
    ...(manifest === 'backup_manifest' ? [] : [`--manifest-path=${path.join(data, manifest)}`, `--ignore=${manifest}`]),
    data,
  ]);
}

/** A directory as --tablespace-mapping takes it: `=` escaped, as it separates the two. */
function escapeMapping(dir: string): string {
  return dir.replace(/=/g, '\\=');
}

/** The directory as a tar stream (GNU tar from the host). */
function tarOf(dir: string, signal: AbortSignal): Readable {
  const child = execa('tar', ['-C', dir, '-cf', '-', '.'], { cancelSignal: signal, buffer: false, stdout: 'pipe' });
  child.catch((error: unknown) => child.stdout.destroy(error as Error));
  return child.stdout;
}

async function runTool(
  tool: PgTool,
  binDir: string | undefined,
  url: string | undefined,
  signal: AbortSignal,
  args: string[],
  onLine?: (line: string) => void,
): Promise<void> {
  const tail = new StderrTail();
  const child = startTool(tool, args, {
    ...(url ? { url } : {}),
    binDir,
    signal,
    onStderrLine: (line) => {
      for (const part of line.split('\r')) {
        if (onLine) onLine(part);
        if (!/\(\d+%\)/.test(part)) tail.push(part);
      }
    },
  });
  await finishTool(tool, child, tail);
}

/**
 * Retention of the point-in-time archive in one store: the newest `keep` base backups stay, and any
 * older one a restore is reading (its in-use mark, see recovery-instance.ts), with every WAL file from
 * the oldest kept one's end on (before it, the base backup holds its own WAL); older base backups and
 * WAL go.
 */
export async function prunePhysical(
  archive: PitrArchive,
  storeIndex: number,
  server: string,
  keep: number,
): Promise<{ bases: string[]; walFiles: number; inUse: string[] }> {
  const store = archive.stores[storeIndex]!;
  const { bases } = await archive.baseListing(store, server);
  if (bases.length <= keep) return { bases: [], walFiles: 0, inUse: [] };
  const removed: string[] = [];
  const inUse: string[] = [];
  for (const base of bases.slice(0, -keep)) {
    // Looked at right before each removal: a restore marks its base backup before it reads it.
    if ((await store.inUseMarks()).some((mark) => mark.backupId === base.id)) {
      inUse.push(base.id);
      continue;
    }
    await archive.removeBase(store, base);
    removed.push(base.id);
  }
  // The listing is oldest first: the oldest base backup left is the first in use, else the first kept.
  const oldest = bases.find((base) => inUse.includes(base.id)) ?? bases.at(-keep)!;
  const first = segmentOf(parseLsn(oldest.stopLsn), oldest.timeline, oldest.walSegmentBytes);
  const { entries } = await archive.walListing(store, server);
  let walFiles = 0;
  for (const entry of entries) {
    if (!/^[0-9A-F]{24}$/.test(entry.name)) continue;
    const segment = parseSegmentName(entry.name, oldest.walSegmentBytes);
    const older =
      segment.timeline < first.timeline || (segment.timeline === first.timeline && segment.number < first.number);
    if (older) {
      await archive.removeWal(store, entry);
      walFiles += 1;
    }
  }
  return { bases: removed, walFiles, inUse };
}
