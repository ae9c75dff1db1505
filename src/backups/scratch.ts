import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import { connect } from '../postgres/client.js';
import { toolDirForServers } from '../postgres/binaries.js';
import {
  createScratchDatabase,
  dropCreatedDatabase,
  scratchDatabaseName,
  type DatabaseOwner,
} from '../postgres/databases.js';
import { acquireDatabaseLock } from '../postgres/lock.js';
import { withDatabase, type DatabaseTarget } from '../postgres/target.js';
import { archiveDamage, prepareArchive, restoreArchive, tocLines, tocSql, type ArchiveInput } from './archive-input.js';
import { sequenceNamesIn, tableDefinitionLines, tableRestoreLines, type TableName } from './table-toc.js';
import type { Manifest } from './manifest.js';
import type { BackupStore } from './store.js';
import type { WorkArea } from './work-area.js';

export interface ScratchRestoreOptions {
  config: Config;
  store: BackupStore;
  /** The job, and the ledger where its scratch database is recorded. */
  owner: DatabaseOwner;
  /** Where an archive from object storage is downloaded when it must be (directory format), and removed after. */
  workArea?: WorkArea;
  /** Names the connections, e.g. `dbops:verify:<job id>`. */
  holder: string;
  signal: AbortSignal;
  onLine?: (line: string) => void;
  /**
   * Restore without owners and grants (--no-owner --no-acl): the data and schema, on a server that
   * need not have the source's roles (a restore drill on a server of its own).
   */
  withoutRoles?: boolean;
  /**
   * pg_restore runs, each with these arguments beside the usual (default: one run of the whole archive),
   * e.g. every definition, then the rows of a few tables.
   */
  steps?: string[][];
  /**
   * Also check the archive against its manifest (sha256, a full read, while pg_restore runs) before
   * `use` is called: for a caller that then changes a live database with what it restored.
   */
  checkIntegrity?: boolean;
  /**
   * The tables the caller needs: only what they need is restored first (their definitions, what
   * their columns are made of, their rows), every definition and `steps` only if that fails.
   */
  onlyTables?: TableName[];
  /**
   * With onlyTables: their definitions alone, no rows (the caller reads those from the archive itself,
   * `use`'s third argument).
   */
  withoutRows?: boolean;
}

/** The archive a scratch restore read, for its caller: pg_restore's input, and its table of contents if read. */
export interface ScratchArchive {
  input: ArchiveInput;
  toc?: string[];
}

/**
 * Restores a backup into a scratch database on `server`'s server, hands it to `use`, and drops it
 * whatever happens. Nothing else is touched; a worker that dies meanwhile leaves a marked scratch
 * database that the next worker's recovery drops.
 */
export async function withScratchRestore<T>(
  server: DatabaseTarget,
  manifest: Manifest,
  options: ScratchRestoreOptions,
  use: (scratchUrl: string, scratch: string, archive: ScratchArchive) => Promise<T>,
): Promise<T> {
  const release = await options.store.markInUse(manifest.id, options.owner.job);
  try {
    return await restoreIntoScratch(server, manifest, options, use);
  } finally {
    await release();
  }
}

async function restoreIntoScratch<T>(
  server: DatabaseTarget,
  manifest: Manifest,
  options: ScratchRestoreOptions,
  use: (scratchUrl: string, scratch: string, archive: ScratchArchive) => Promise<T>,
): Promise<T> {
  const { config, store, owner, signal, workArea } = options;
  const workDir = workArea ? () => workArea.jobSubdir(owner.job, 'download') : undefined;
  try {
    const prepared = await prepareArchive(store, manifest, config, { workDir, signal });
    if (!options.checkIntegrity) return await restorePrepared(server, manifest, options, prepared.input, use);
    const damage = archiveDamage(prepared);
    const damaged = (reason: string) => new PermanentError(`the archive is damaged: ${reason}; nothing was changed`);
    return await restorePrepared(server, manifest, options, prepared.input, async (scratchUrl, scratch, archive) => {
      const reason = await damage;
      if (reason) throw damaged(reason);
      return use(scratchUrl, scratch, archive);
    }).catch(async (error: unknown) => {
      const reason = await damage;
      throw reason ? damaged(reason) : error;
    });
  } finally {
    await workArea?.removeJobSubdir(owner.job, 'download');
    if (options.onlyTables) await workArea?.removeJobSubdir(owner.job, 'toc');
  }
}

async function restorePrepared<T>(
  server: DatabaseTarget,
  manifest: Manifest,
  options: ScratchRestoreOptions,
  input: ArchiveInput,
  use: (scratchUrl: string, scratch: string, archive: ScratchArchive) => Promise<T>,
): Promise<T> {
  const { config, owner, holder, signal } = options;
  const maintenanceUrl = withDatabase(server.url, config.PG_MAINTENANCE_DB);
  const binDir = await toolDirForServers([maintenanceUrl], config.PG_BIN_DIR, holder);
  const extraArgs = options.withoutRoles ? ['--no-owner', '--no-acl'] : [];
  // With onlyTables, first only what those tables need; should that fail, every definition.
  const attempts = [options.steps ?? [[]]];
  const narrow = options.onlyTables && (await narrowList(input, options, binDir));
  if (narrow) attempts.unshift([[`--use-list=${narrow.list}`]]);
  for (let attempt = 0; ; attempt += 1) {
    const scratch = scratchDatabaseName();
    const lock = await acquireDatabaseLock(
      { ...server, database: scratch },
      { maintenanceDb: config.PG_MAINTENANCE_DB, holder, signal },
    );
    const maintenance = await connect(maintenanceUrl, holder);
    try {
      await createScratchDatabase(maintenance, scratch, server.database, owner);
      try {
        const scratchUrl = withDatabase(server.url, scratch);
        try {
          for (const step of attempts[attempt]!)
            await restoreArchive(input, scratchUrl, {
              binDir,
              jobs: 2,
              signal,
              onLine: options.onLine,
              extraArgs: [...extraArgs, ...step],
            });
        } catch (error) {
          if (attempt + 1 >= attempts.length || signal.aborted) throw error;
          options.onLine?.(
            `the tables' own definitions did not restore alone (${(error as Error).message.split('\n')[0]}): restoring every definition`,
          );
          continue;
        }
        return await use(scratchUrl, scratch, { input, toc: narrow?.toc });
      } finally {
        await dropCreatedDatabase(maintenance, scratch, owner.ledger).catch(() => undefined);
      }
    } finally {
      await maintenance.end().catch(() => undefined);
      await lock.release();
      if (narrow && attempt === 0) await rm(narrow.list, { force: true });
    }
  }
}

/**
 * A `pg_restore --use-list` file of what `onlyTables` need (backups/table-toc.ts), in the job's work
 * area; undefined when there is none to write it in, or the archive's table of contents cannot be read
 * (the full restore then says why).
 */
async function narrowList(
  input: ArchiveInput,
  options: ScratchRestoreOptions,
  binDir: string | undefined,
): Promise<{ list: string; toc: string[] } | undefined> {
  if (!options.workArea || !options.onlyTables) return undefined;
  try {
    const dir = await options.workArea.jobSubdir(options.owner.job, 'toc');
    const toc = await tocLines(input, binDir, options.signal);
    const definitions = path.join(dir, 'definitions.list');
    await writeFile(definitions, `${tableDefinitionLines(toc, options.onlyTables).join('\n')}\n`);
    const sequences = sequenceNamesIn(await tocSql(input, definitions, binDir, options.signal));
    const list = path.join(dir, 'tables.list');
    const lines = tableRestoreLines(toc, options.onlyTables, sequences, !options.withoutRows);
    await writeFile(list, `${lines.join('\n')}\n`);
    options.onLine?.(
      `restoring what ${options.onlyTables.length} table(s) need: ${lines.length} of the archive's ${toc.length} entries`,
    );
    return { list, toc };
  } catch (error) {
    if (options.signal.aborted) throw error;
    return undefined;
  }
}
