import path from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as z from 'zod';
import type pg from 'pg';
import { countTocEntries, inputFor, prepareArchive, type ArchiveInput } from '../backups/archive-input.js';
import { BackupCatalogue } from '../backups/catalogue.js';
import type { BackupStore } from '../backups/store.js';
import { diskFailure } from '../backups/file-store.js';
import { FanOut } from '../backups/fan-out.js';
import { HashingStream, sha256Directory } from '../backups/checksum.js';
import { ENCRYPTION_ALGORITHM, EncryptStream, keyId } from '../backups/encryption.js';
import { PermanentError, ValidationError, errorMessage } from '../errors.js';
import { backupFormatSchema } from '../backups/manifest.js';
import type { Manifest } from '../backups/manifest.js';
import { archiveName, newBackupId, type ArchiveWriter } from '../backups/store.js';
import { toolDirFor, serverMajor } from '../postgres/binaries.js';
import { countUserTables, partitionTrees } from '../postgres/catalog.js';
import { readIdentity, rolesOf } from '../postgres/identity.js';
import { rolesNeeded, userRoleNames, type RoleRecord } from '../postgres/roles.js';
import { backupableDatabases, serverVersionText } from '../postgres/databases.js';
import { readSchemaVersion } from '../postgres/schema-version.js';
import { connect, exportSnapshot, releaseSnapshot } from '../postgres/client.js';
import { countRows, digestTables } from '../postgres/compare.js';
import { resolveTarget, withDatabase, type DatabaseTarget } from '../postgres/target.js';
import { boundedName } from '../job-ids.js';
import { StderrTail, finishTool, startTool, toolVersion } from '../postgres/tools.js';
import { defineOperation, type OperationContext } from './operation.js';
import { envName, fieldGiven, fieldIs, implies, parallelJobs, withRules } from './fields.js';

const schema = withRules(
  z.strictObject({
    env: envName.meta({ description: 'the environment to back up' }),
    format: backupFormatSchema.default('custom').meta({ description: 'archive format' }),
    jobs: parallelJobs.default(1).meta({ description: 'parallel dump jobs (directory format)' }),
    compress: z.number().int().min(0).max(9).optional().meta({ description: 'compression level 0-9' }),
    /** Another database on the environment's server (what allDatabases backs up, one child job each). */
    database: z
      .string()
      .min(1)
      .max(63)
      .refine((value) => !value.includes('\0'), { message: 'must not contain NUL' })
      .optional()
      .meta({ description: "another database on env's server, instead of env's own" }),
    allDatabases: z.boolean().default(false).meta({
      description:
        "every connectable, non-template database on env's server: one child backup job each; the result lists them",
    }),
    digests: z.boolean().default(false).meta({
      description:
        "also a content digest of every table, read in the dump's snapshot, in the manifest: what a table restore checks its rows against (costs a read of every row)",
    }),
  }),
  [
    {
      path: 'jobs',
      message: 'parallel dumps (jobs > 1) need format "directory"',
      broken: (payload) => payload.jobs !== 1 && payload.format !== 'directory',
      schema: implies({ properties: { jobs: { minimum: 2 } }, required: ['jobs'] }, fieldIs('format', 'directory')),
    },
    {
      path: 'database',
      message: 'allDatabases goes without database',
      broken: (payload) => payload.allDatabases && payload.database !== undefined,
      schema: { not: { allOf: [fieldIs('allDatabases', true), fieldGiven('database')] } },
    },
  ],
);

const single = z.object({
  backupId: z.string(),
  path: z.string().meta({
    description:
      "the archive's absolute path on the worker in the first file store (a file, or a directory for the directory format); without a file store, its URL in the first store",
  }),
  stores: z.array(z.string()).meta({ description: 'the backup stores that hold it (BACKUP_STORES names)' }),
  sizeBytes: z.number().int(),
  sha256: z.string(),
  env: z.string(),
  database: z.string(),
  format: backupFormatSchema,
  tableCount: z.number().int(),
  durationMs: z.number(),
  schemaVersion: z
    .object({ tool: z.string(), revisions: z.array(z.string()) })
    .nullable()
    .optional()
    .meta({ description: "the migration state at the dump: Alembic's revision(s) or node-pg-migrate's last file" }),
});
export type BackupResult = z.infer<typeof single>;

const allResult = z.object({
  env: z.string(),
  allDatabases: z.literal(true),
  backups: z.array(single).meta({ description: 'one backup per database, by database name' }),
  roles: z.array(z.string()).meta({
    description: "the server's roles (each backup's manifest records those it needs, attributes and memberships)",
  }),
  rolesFile: z.string().meta({
    description: "where the server's roles (attributes, memberships, no passwords) are kept in the backup store",
  }),
});
export type AllDatabasesResult = z.infer<typeof allResult>;

const result = z.union([single, allResult]);

/**
 * Streams the dump (encrypted, with a key) to every store's sink at once while hashing it: one pass,
 * memory flat whatever the database's size, and as slow as the slowest store.
 */
async function streamToStores(
  source: NodeJS.ReadableStream,
  sinks: Writable[],
  key: Buffer | undefined,
): Promise<{ sha256: string; sizeBytes: number }> {
  const hashing = new HashingStream();
  const fanOut = new FanOut(sinks);
  await (key ? pipeline(source, new EncryptStream(key), hashing, fanOut) : pipeline(source, hashing, fanOut));
  return { sha256: hashing.digest(), sizeBytes: hashing.bytes };
}

function resultOf(manifest: Manifest, location: string, stores: string[]): BackupResult {
  return {
    backupId: manifest.id,
    path: location,
    stores,
    sizeBytes: manifest.sizeBytes,
    sha256: manifest.sha256,
    env: manifest.env,
    database: manifest.database,
    format: manifest.format,
    tableCount: manifest.tableCount,
    durationMs: manifest.durationMs,
    schemaVersion: manifest.schemaVersion ?? null,
  };
}

/** Where a backup's archive is, for the result: its path in the first file store, else its URL in the first store. */
function locationOf(catalogue: BackupCatalogue, manifest: Manifest, stores: string[]): string {
  const holding = catalogue.stores.filter((store) => stores.includes(store.name));
  const local = holding.map((store) => store.localArchive(manifest)).find(Boolean);
  return local ?? `${holding[0]?.location ?? ''}/${manifest.archive}`;
}

type BackupPayload = z.output<typeof schema>;

/** pg_restore reads the archive's table of contents back: what pg_dump wrote is an archive. */
async function readBackToc(input: ArchiveInput, binDir: string | undefined, signal: AbortSignal): Promise<void> {
  await countTocEntries(input, binDir, signal).catch((error: unknown) => {
    throw new PermanentError(`pg_dump wrote an archive pg_restore cannot read back: ${errorMessage(error)}`);
  });
}

/**
 * pg_dump in the snapshot `client` exports, while `client` counts every table's rows in it; then the
 * archive's table of contents is read back, and the backup published with its manifest.
 */
async function dumpInSnapshot(
  { payload, config, job, jobId, signal, progress, log, enqueue }: OperationContext<BackupPayload>,
  target: DatabaseTarget,
  catalogue: BackupCatalogue,
  client: pg.Client,
  startedAt: Date,
  id: string,
): Promise<BackupResult> {
  const snapshot = await exportSnapshot(client);
  const serverVersion = await serverVersionText(client);
  const tableCount = await countUserTables(client);
  const binDir = await toolDirFor(await serverMajor(client), config.PG_BIN_DIR);
  const key = config.encryptionKey;

  const work = await catalogue.workArea.partialDir(job);
  // File stores last: the last of them may take a directory-format dump over by a rename.
  const stores = [...catalogue.stores].sort((a, b) => Number(a.kind === 'file') - Number(b.kind === 'file'));
  const writers: ArchiveWriter[] = [];
  try {
    for (const store of stores) writers.push(await store.beginArchive(job, id, payload.format));
    const partial = path.join(work, archiveName(id, payload.format));
    const tail = new StderrTail();
    let dumped = 0;
    const onLine = (line: string) => {
      tail.push(line);
      log(line);
      const table = /dumping contents of table "(.+)"$/.exec(line)?.[1];
      if (table) {
        dumped += 1;
        progress(5 + (90 * dumped) / Math.max(tableCount, dumped), `dumping table ${table}`);
      }
    };
    const args = ['--verbose', '--no-password', `--format=${payload.format}`, `--snapshot=${snapshot}`];
    if (payload.compress !== undefined) args.push(`--compress=${payload.compress}`);
    if (payload.format === 'directory') args.push(`--jobs=${payload.jobs}`, `--file=${partial}`);

    progress(5, `dumping ${tableCount} tables`);
    const child = startTool('pg_dump', args, {
      url: target.url,
      signal,
      onStderrLine: onLine,
      stdout: payload.format === 'custom' ? 'pipe' : 'ignore',
      binDir,
    });
    // Counted (and hashed) by `client` in the dump's snapshot while pg_dump runs.
    const counted = countRows(client).then(async (counts) => ({
      counts,
      digests: payload.digests ? await digestTables(client) : undefined,
    }));
    counted.catch(() => undefined); // awaited after the dump; a failure there must not go unhandled meanwhile
    let digest: { sha256: string; sizeBytes: number; files?: Manifest['files'] };
    if (payload.format === 'custom') {
      const [written, finished] = await Promise.allSettled([
        streamToStores(
          child.stdout!,
          writers.map((writer) => writer.sink()),
          key,
        ),
        finishTool('pg_dump', child, tail),
      ]);
      // A full store makes pg_dump fail too (broken pipe): the store is the cause to name.
      if (written.status === 'rejected' && !signal.aborted) throw diskFailure(written.reason);
      if (finished.status === 'rejected') throw finished.reason;
      if (written.status === 'rejected') throw written.reason;
      digest = written.value;
    } else {
      await finishTool('pg_dump', child, tail);
      progress(96, 'computing checksums');
      digest = await sha256Directory(partial);
      // Read back here, while the dump is on this host (a store may take it over, or be a bucket).
      progress(96, 'reading back the table of contents');
      await readBackToc(inputFor(partial, key), binDir, signal);
      progress(96, `storing the archive in ${stores.map((store) => store.name).join(', ')}`);
      for (const [index, writer] of writers.entries())
        await writer.putDirectory(partial, signal, index === writers.length - 1);
    }
    await Promise.all(writers.map((writer) => writer.complete()));

    const { counts: rowCounts, digests: tableDigests } = await counted;
    const partitions = await partitionTrees(client);
    // Read in the same snapshot: what a restore onto a new server, or with sourceSettings, needs.
    const identity = await readIdentity(client, target.database);
    const roles = await rolesNeeded(client, identity ? rolesOf(identity) : []);
    const schemaVersion = await readSchemaVersion(client);
    await releaseSnapshot(client);

    if (payload.format === 'custom') {
      progress(97, 'reading back the table of contents');
      // Streamed, the dump exists only in the stores: the first one's copy is read back (a bucket's
      // streamed; pg_restore stops reading after the table of contents). Only what reading needs is given.
      const stored = {
        id,
        archive: archiveName(id, 'custom'),
        format: 'custom',
        encryption: key ? { algorithm: ENCRYPTION_ALGORITHM, keyId: keyId(key) } : undefined,
      } as Manifest;
      await readBackToc(
        (
          await prepareArchive(
            catalogue.stores[0]!,
            stored,
            { decryptionKeys: key ? [key] : [], encryptionKey: key },
            { signal },
          )
        ).input,
        binDir,
        signal,
      );
    }
    progress(98, 'writing manifests');
    const completedAt = new Date();
    const manifest: Manifest = {
      manifestVersion: 1,
      id,
      env: target.env,
      database: target.database,
      format: payload.format,
      compress: payload.compress,
      archive: archiveName(id, payload.format),
      sizeBytes: digest.sizeBytes,
      sha256: digest.sha256,
      files: digest.files,
      tableCount,
      startedAt: startedAt.toISOString(),
      completedAt: completedAt.toISOString(),
      durationMs: completedAt.getTime() - startedAt.getTime(),
      pgDumpVersion: await toolVersion('pg_dump', binDir),
      serverVersion,
      jobId,
      job,
      rowCounts,
      ...(Object.keys(partitions).length > 0 && { partitions }),
      tableDigests: tableDigests && Object.fromEntries(tableDigests.map((table) => [table.table, table.hash])),
      identity,
      roles,
      schemaVersion,
      encryption: key ? { algorithm: ENCRYPTION_ALGORITHM, keyId: keyId(key) } : undefined,
      verifications: [{ at: completedAt.toISOString(), level: 'toc', ok: true, jobId }],
      stores: stores.map((store) => store.name),
    };
    // Every store holds the whole archive now: only then is the backup published, in each of them.
    const publishedIn: BackupStore[] = [];
    try {
      for (const store of stores) {
        await store.writeManifest(manifest);
        publishedIn.push(store);
      }
    } catch (error) {
      // A store that cannot take the manifest (its disk turned read-only): the backup is in none, not
      // in the stores that took it before (they would hold a backup the others lack).
      for (const store of publishedIn) await store.remove(manifest).catch(() => undefined);
      throw error;
    }
    await Promise.all(writers.map((writer) => writer.published()));
    writers.length = 0;
    progress(100, `backup ${id} complete`);
    if (config.retentionFor(target.env)) {
      // Retention runs as its own job after each backup; the backup stands whether or not it can be queued.
      // It applies the operator's configured policy, so it confirms for the environment the backup is of.
      await enqueue('prune', { env: target.env, confirm: target.env }, { jobId: `prune-after-${id}` }).catch(
        (error: unknown) => log(`retention not applied: ${errorMessage(error)}`),
      );
    }
    return resultOf(manifest, locationOf(catalogue, manifest, manifest.stores!), manifest.stores!);
  } finally {
    await Promise.all(writers.map((writer) => writer.abort().catch(() => undefined)));
    await catalogue.workArea.removePartial(job);
  }
}

/** Backs up one database: the environment's own, or `database` on its server. */
export async function backupDatabase(context: OperationContext<BackupPayload>): Promise<BackupResult> {
  const { payload, config, job, jobId, progress } = context;
  const own = resolveTarget(config, payload.env);
  const target = payload.database
    ? { ...own, database: payload.database, url: withDatabase(own.url, payload.database) }
    : own;
  const catalogue = BackupCatalogue.of(config);
  const startedAt = new Date();

  // An earlier attempt of this job may have finished its backup without the queue hearing of it
  // (Redis went away at that moment): that backup is the result, not a second one.
  const done = (await catalogue.listWithStores({ env: target.env })).find(
    ({ manifest }) =>
      manifest.job?.prefix === job.prefix && manifest.job.queue === job.queue && manifest.job.id === job.id,
  );
  if (done) {
    progress(100, `backup ${done.manifest.id} was already made by an earlier attempt`);
    return resultOf(done.manifest, locationOf(catalogue, done.manifest, done.stores), done.stores);
  }

  progress(0, `connecting to ${target.env}`);
  // One snapshot for pg_dump and the row counts: the manifest's counts are exactly what the archive
  // holds, for `backups verify --full` to compare with.
  // Another database of the server than the environment's own is named in the backup's id.
  const id = newBackupId(target.env, startedAt, target.database === own.database ? undefined : target.database);
  const snapshotClient = await connect(target.url, `dbops:backup:${jobId}`, target.env);
  try {
    return await dumpInSnapshot(context, target, catalogue, snapshotClient, startedAt, id);
  } finally {
    await snapshotClient.end().catch(() => undefined);
  }
}

/** The databases an all-databases backup covers: every connectable, non-template one but dbops' own transient ones. */
/**
 * --all-databases: one child backup job per database on the environment's server (each an ordinary
 * backup, retried on its own), listed afresh at every run; this job succeeds once they all have.
 */
async function backupAllDatabases(context: OperationContext<BackupPayload>): Promise<AllDatabasesResult> {
  const { payload, config, job, progress } = context;
  const server = resolveTarget(config, payload.env);
  const maintenance = await connect(
    withDatabase(server.url, config.PG_MAINTENANCE_DB),
    `dbops:backup:${job.id}`,
    server.env,
  );
  let results = context.childResults;
  let roles: RoleRecord[];
  try {
    roles = await rolesNeeded(maintenance, await userRoleNames(maintenance));
    if (results.length === 0) {
      const databases = await backupableDatabases(maintenance);
      progress(5, `backing up ${databases.length} databases of ${server.env}'s server, one job each`);
      const { allDatabases: _all, ...options } = payload;
      results = await context.awaitChildren(
        databases.map((database) => ({
          type: 'backup',
          payload: { ...options, database },
          jobId: `backup-all-${boundedName(job.id, 48)}-${boundedName(database)}`,
        })),
      );
    }
  } finally {
    await maintenance.end().catch(() => undefined);
  }
  const backups = (results as BackupResult[]).sort((a, b) => a.database.localeCompare(b.database));
  progress(100, `backed up ${backups.length} databases`);
  const rolesName = newBackupId(server.env);
  let rolesFile = '';
  for (const store of BackupCatalogue.of(config).stores) rolesFile = await store.writeRoles(rolesName, roles);
  return { env: server.env, allDatabases: true, backups, roles: roles.map((role) => role.name), rolesFile };
}

export const backup = defineOperation({
  type: 'backup',
  summary: 'pg_dump an environment into every backup store (BACKUP_STORES), with a manifest and sha256',
  schema,
  result,
  precheck(payload, config) {
    resolveTarget(config, payload.env);
    if (config.encryptionKey && payload.format !== 'custom') {
      throw new ValidationError('encrypted backups (BACKUP_ENCRYPTION_KEY) are custom format only', [
        { path: 'format', message: 'must be "custom" with encryption' },
      ]);
    }
  },
  examples: [
    { payload: { env: 'production' } },
    { payload: { env: 'staging', format: 'directory', jobs: 4 } },
    { payload: { env: 'staging', jobs: 4 }, refused: 'jobs: parallel dumps (jobs > 1) need format "directory"' },
    {
      payload: { env: 'staging', allDatabases: true, database: 'app' },
      refused: 'database: allDatabases goes without database',
    },
  ],
  process: (context): Promise<BackupResult | AllDatabasesResult> =>
    context.payload.allDatabases ? backupAllDatabases(context) : backupDatabase(context),
  recover: (context) => BackupCatalogue.of(context.config).recover(context),
  describe: (result) =>
    'allDatabases' in result
      ? [
          `${result.backups.length} databases of ${result.env}'s server backed up:`,
          ...result.backups.map((one) => `  ${one.database}: ${one.backupId} (${one.sizeBytes} bytes)`),
        ].join('\n')
      : `backup ${result.backupId}: ${result.path} (${result.sizeBytes} bytes, sha256 ${result.sha256}; in ${result.stores.join(', ')})`,
});
