import path from 'node:path';
import * as z from 'zod';
import { BackupCatalogue } from '../backups/catalogue.js';
import { backupIdSchema } from '../backups/manifest.js';
import { withScratchRestore } from '../backups/scratch.js';
import { PermanentError } from '../errors.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { connect } from '../postgres/client.js';
import { tableRef, tableRefOf } from '../postgres/catalog.js';
import { acquireDatabaseLock } from '../postgres/lock.js';
import { makeFifo, pipeTools, withFifoDir } from '../postgres/pipe.js';
import { countTableRows, detachForTravel, relationExists } from '../postgres/table-restore.js';
import { resolveTarget, withDatabase } from '../postgres/target.js';
import { confirmField, envName, storeName } from './fields.js';
import { defineOperation } from './operation.js';

/*
 * `restore --env E --backup ID --table SCHEMA.TABLE... --suffix S`: tables of a backup come back beside
 * the live ones, as `<table><S>`, for the team to compare and copy rows back; no other table is touched.
 * The backup's definitions and the named tables' rows are restored into a scratch database on the
 * environment's server, their row counts checked against the manifest, then each table (its columns,
 * checks and rows; no indexes, keys or triggers) is moved into the environment's database in one
 * transaction, under the database's lock.
 */

const tableName = z
  .string()
  .regex(/^[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*$/, { message: 'expected schema.table (lowercase, unquoted)' });

const schema = z.strictObject({
  env: envName,
  backup: backupIdSchema,
  tables: z.array(tableName).min(1).max(50).meta({ description: 'the tables to bring back, as schema.table' }),
  suffix: z
    .string()
    .regex(/^[a-z0-9_]{1,30}$/, { message: 'expected up to 30 lowercase letters, digits or _' })
    .meta({ description: 'each table comes back beside the original as <table><suffix>' }),
  store: storeName,
  confirm: confirmField,
});

const result = z.object({
  env: z.string(),
  backupId: z.string(),
  database: z.string(),
  tables: z.array(z.object({ table: z.string(), restoredAs: z.string(), rows: z.number().int() })),
  durationMs: z.number(),
});
export type RestoreTablesResult = z.infer<typeof result>;

export const restoretables = defineOperation({
  type: 'restoretables',
  queue: 'restore',
  summary: 'bring tables of a backup back beside the live ones, as <table><suffix>; nothing else is touched',
  schema,
  result,
  changes: (payload) => payload.env,
  changesWhen: 'always: it adds tables to `env`',
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  examples: [
    {
      payload: {
        env: 'staging',
        backup: 'staging-20261201t020000z-0a1b2c3d4e5f',
        tables: ['public.orders'],
        suffix: '_restored',
      },
    },
  ],
  async process(context): Promise<RestoreTablesResult> {
    const { payload, config, jobId, signal, progress, log } = context;
    const startedAt = Date.now();
    const holder = `dbops:restoretables:${jobId}`;
    const target = resolveTarget(config, payload.env);
    const catalogue = BackupCatalogue.of(config);
    const { manifest, store } = await catalogue.get(payload.backup, payload.store);
    const wanted = [...new Set(payload.tables)].map((name) => ({ name, ...tableRefOf(name), restoredAs: '' }));
    for (const table of wanted) {
      table.restoredAs = `${table.table}${payload.suffix}`;
      if (table.restoredAs.length > 63)
        throw new PermanentError(`${table.name}${payload.suffix}: longer than PostgreSQL's 63-byte names`);
    }
    if (manifest.rowCounts) {
      const missing = wanted.filter((table) => manifest.rowCounts![table.name] === undefined);
      if (missing.length)
        throw new PermanentError(
          `backup ${manifest.id} has no table ${missing.map((table) => table.name).join(', ')}; nothing was changed`,
        );
    }
    const live = await connect(target.url, holder, target.env);
    try {
      const taken = [];
      for (const table of wanted)
        if (await relationExists(live, table.schema, table.restoredAs))
          taken.push(`${table.schema}.${table.restoredAs}`);
      if (taken.length)
        throw new PermanentError(
          `${taken.join(', ')} already exist${taken.length === 1 ? 's' : ''} in ${target.env}: choose another suffix; nothing was changed`,
        );
    } finally {
      await live.end().catch(() => undefined);
    }

    progress(5, `restoring ${manifest.id}'s definitions and ${wanted.length} table(s) into a scratch database`);
    const restored = await withScratchRestore(
      target,
      manifest,
      {
        config,
        store,
        workArea: catalogue.workArea,
        owner: context,
        holder,
        signal,
        onLine: log,
        withoutRoles: true,
        steps: [
          ['--section=pre-data'],
          [
            '--section=data',
            ...[...new Set(wanted.map((table) => table.schema))].map((name) => `--schema=${name}`),
            ...wanted.map((table) => `--table=${table.table}`),
          ],
        ],
      },
      async (scratchUrl) => {
        const scratch = await connect(scratchUrl, holder);
        const counted: { table: string; restoredAs: string; rows: number }[] = [];
        try {
          for (const table of wanted) {
            if (!(await relationExists(scratch, table.schema, table.table)))
              throw new PermanentError(`backup ${manifest.id} has no table ${table.name}; nothing was changed`);
            const rows = await countTableRows(scratch, table.schema, table.table);
            const expected = manifest.rowCounts?.[table.name];
            if (expected !== undefined && rows !== expected)
              throw new PermanentError(
                `${table.name} restored with ${rows} rows where the backup's manifest says ${expected}; nothing was changed`,
              );
            await detachForTravel(scratch, table.schema, table.table, table.restoredAs);
            counted.push({ table: table.name, restoredAs: `${table.schema}.${table.restoredAs}`, rows });
          }
        } finally {
          await scratch.end().catch(() => undefined);
        }
        progress(80, `moving ${wanted.length} table(s) into ${target.env}`);
        const binDir = await toolDirForServers(
          [withDatabase(target.url, config.PG_MAINTENANCE_DB)],
          config.PG_BIN_DIR,
          holder,
        );
        const lock = await acquireDatabaseLock(target, { maintenanceDb: config.PG_MAINTENANCE_DB, holder, signal });
        try {
          // Beside the scratch restore's own download directory, in the job's work area (which recovery clears).
          await withFifoDir(await catalogue.workArea.jobSubdir(context.job, 'fifo'), async (fifoDir) => {
            const fifo = path.join(fifoDir, 'stream');
            if (!(await makeFifo(fifo))) throw new Error(`cannot make a FIFO in ${fifoDir}`);
            const options = { signal, binDir, onStderrLine: log };
            await pipeTools(
              {
                tool: 'pg_dump',
                args: [
                  '--format=custom',
                  '--compress=0',
                  '--no-owner',
                  '--no-acl',
                  '--no-password',
                  '--no-sync',
                  ...wanted.map((table) => `--table=${tableRef(table.schema, table.restoredAs).sql}`),
                  `--file=${fifo}`,
                ],
                options: { ...options, url: scratchUrl },
              },
              {
                tool: 'pg_restore',
                // One transaction: every table comes, or none.
                args: [
                  '--single-transaction',
                  '--exit-on-error',
                  '--no-owner',
                  '--no-acl',
                  '--no-password',
                  '--format=custom',
                  fifo,
                ],
                options: { ...options, url: target.url },
              },
            );
          });
        } finally {
          await catalogue.workArea.removeJobSubdir(context.job, 'fifo');
          await lock.release();
        }
        return counted;
      },
    );
    for (const table of restored) log(`restored ${table.table} as ${table.restoredAs} (${table.rows} rows)`);
    return {
      env: target.env,
      backupId: manifest.id,
      database: target.database,
      tables: restored,
      durationMs: Date.now() - startedAt,
    };
  },
  describe: (result) =>
    `restored from ${result.backupId} into ${result.env} (database "${result.database}"): ` +
    result.tables.map((table) => `${table.table} as ${table.restoredAs} (${table.rows} rows)`).join(', '),
});
