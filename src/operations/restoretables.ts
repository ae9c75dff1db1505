import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as z from 'zod';
import { BackupCatalogue } from '../backups/catalogue.js';
import { backupIdSchema, type Manifest } from '../backups/manifest.js';
import { tocLines } from '../backups/archive-input.js';
import { withScratchRestore } from '../backups/scratch.js';
import { loadTables } from '../backups/table-load.js';
import { tableDataLines } from '../backups/table-toc.js';
import { PermanentError } from '../errors.js';
import { jobTag } from '../job-ids.js';
import { toolDirForServers } from '../postgres/binaries.js';
import { connect, withClient } from '../postgres/client.js';
import {
  QUALIFIED_NAME,
  SQL_NAME_ALONE,
  catalogName,
  parseQualifiedName,
  parseSqlName,
  partitionTrees,
  type TableRef,
} from '../postgres/catalog.js';
import { digestCheckSql } from '../postgres/compare.js';
import { acquireDatabaseLock } from '../postgres/lock.js';
import { nameWithSuffix, previousName } from '../postgres/databases.js';
import { StepTimer } from '../postgres/replace.js';
import {
  SwapRefused,
  detachForTravel,
  dropMarkedTable,
  markTable,
  relationExists,
  swapInRows,
} from '../postgres/table-restore.js';
import { resolveTarget, withDatabase } from '../postgres/target.js';
import { confirmField, envName, fieldGiven, fieldIs, implies, stepTimings, storeName, withRules } from './fields.js';
import { defineOperation } from './operation.js';

/*
 * `restore --env E --backup ID --table SCHEMA.TABLE...` with `--suffix S` or `--replace`: tables of a
 * backup come back without any other table being touched. The definitions the named tables need are
 * restored into a scratch database on the environment's server, where the tables are renamed; then,
 * under the database's lock, each table (its columns, checks and rows; no indexes, keys or triggers)
 * is made in the environment's database and loaded with the archive's rows in one transaction, which
 * commits only once their counts (or digests) match the manifest (backups/table-load.ts): as
 * `<table><S>`, beside the live one, for the team to compare and copy rows back; or, with
 * `--replace`, under a name of the job's, whose rows then replace the live table's in one more
 * transaction (postgres/table-restore.ts swapInRows), the live rows kept as `<table>_prev_<time>`.
 */

const tableName = z.string().max(200).regex(QUALIFIED_NAME, {
  message: 'expected schema.table, each name lowercase or in double quotes ("Orders")',
});

const schema = withRules(
  z.strictObject({
    env: envName,
    backup: backupIdSchema,
    tables: z
      .array(tableName)
      .min(1)
      .max(50)
      .optional()
      .meta({ description: 'the tables to bring back, as schema.table' }),
    schemas: z
      .array(
        z
          .string()
          .max(100)
          .regex(SQL_NAME_ALONE, { message: 'expected a schema name, lowercase or in double quotes ("Sales")' }),
      )
      .min(1)
      .max(20)
      .optional()
      .meta({ description: "every table the backup's manifest lists in these schemas, too" }),
    suffix: z
      .string()
      .regex(/^[a-z0-9_]{1,30}$/, { message: 'expected up to 30 lowercase letters, digits or _' })
      .optional()
      .meta({ description: 'each table comes back beside the original as <table><suffix>' }),
    replace: z.boolean().default(false).meta({
      description:
        "the backup's rows replace each table's, in one transaction; the live rows are kept as <table>_prev_<time>",
    }),
    store: storeName,
    confirm: confirmField,
  }),
  [
    {
      path: 'tables',
      message: 'name the tables (tables), or schemas whose tables come back (schemas)',
      broken: (payload) => payload.tables === undefined && payload.schemas === undefined,
      schema: { anyOf: [fieldGiven('tables'), fieldGiven('schemas')] },
    },
    {
      path: 'suffix',
      message: 'give suffix (each table comes back beside the live one) or replace: true (the rows are swapped in)',
      broken: (payload) => !payload.replace && payload.suffix === undefined,
      schema: implies({ not: fieldIs('replace', true) }, fieldGiven('suffix')),
    },
    {
      path: 'replace',
      message: 'replace swaps the rows into the live table: it does not go with suffix',
      broken: (payload) => payload.replace && payload.suffix !== undefined,
      schema: implies(fieldIs('replace', true), { not: fieldGiven('suffix') }),
    },
  ],
);

const result = z.object({
  env: z.string(),
  backupId: z.string(),
  database: z.string(),
  tables: z.array(
    z.object({
      table: z.string(),
      restoredAs: z.string().meta({
        description:
          'with suffix: the new table; with replace: the table itself (for a partition, its partitioned table, whose rows it came back through)',
      }),
      rows: z.number().int(),
      partitionOf: z
        .string()
        .optional()
        .meta({ description: 'a partition brought back with its partitioned table, attached to it as in the backup' }),
      checked: z.enum(['content digest', 'row count', 'nothing']).meta({
        description:
          "what the restored rows were checked against in the backup's manifest: its digest of the table (backups made with digests), else its row count",
      }),
      replaced: z
        .object({
          keptAs: z.string().meta({ description: 'the live rows, as they were, in a new table <table>_prev_<time>' }),
          foreignKeys: z.array(z.string()).meta({ description: 'foreign keys from and to the table, validated again' }),
          views: z.array(z.string()).meta({ description: 'views reading the table: they read the restored rows' }),
          grants: z.array(z.string()).meta({ description: "the table's grants, kept" }),
          triggers: z.array(z.string()).meta({
            description:
              "the table's triggers (and a partitioned table's partitions' own, as partition.trigger), paused for the swap",
          }),
          sequences: z.array(z.string()).meta({ description: 'sequences it owns, kept with their values' }),
        })
        .optional(),
    }),
  ),
  durationMs: z.number(),
  steps: stepTimings,
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
    {
      payload: {
        env: 'production',
        backup: 'production-20261201t020000z-0a1b2c3d4e5f',
        tables: ['public.orders'],
        replace: true,
        confirm: 'production',
      },
    },
    {
      payload: { env: 'staging', backup: 'staging-20261201t020000z-0a1b2c3d4e5f', tables: ['public.orders'] },
      refused:
        'suffix: give suffix (each table comes back beside the live one) or replace: true (the rows are swapped in)',
    },
  ],
  async process(context): Promise<RestoreTablesResult> {
    const { payload, config, jobId, signal, progress, log } = context;
    const startedAt = Date.now();
    const timer = new StepTimer();
    const holder = `dbops:restoretables:${jobId}`;
    const target = resolveTarget(config, payload.env);
    const catalogue = BackupCatalogue.of(config);
    const { manifest, store } = await catalogue.get(payload.backup, payload.store);
    // With --replace, each table travels under a name of this job's, marked so that only its next attempt may drop it.
    const mark = `dbops restoretables ${jobId}: rows on their way in`;
    const restoredName = (table: string) =>
      payload.replace ? nameWithSuffix(table, `_dbops_${jobTag(jobId)}`) : `${table}${payload.suffix}`;
    const wanted: WantedTable[] = [];
    await withClient(
      target.url,
      async (live) => {
        // Each table once, named as the manifest names it (format('%I.%I')), however it was written.
        for (const written of [...(payload.tables ?? []), ...tablesOfSchemas(manifest, payload.schemas ?? [])]) {
          const ref = parseQualifiedName(written)!;
          const name = await catalogName(live, ref.schema, ref.table);
          if (!wanted.some((table) => table.name === name))
            wanted.push({ name, schema: ref.schema, table: ref.table, restoredAs: restoredName(ref.table) });
        }
        // A partitioned table comes back whole: itself, and its partitions attached to it as the backup holds them.
        for (const table of [...wanted]) {
          const leaves = manifest.partitions?.[table.name];
          if (leaves === undefined) continue;
          table.leaves = leaves;
          for (const leaf of leaves) {
            const known = wanted.find((other) => other.name === leaf);
            if (known) {
              known.partitionOf = table.name;
              continue;
            }
            const ref = manifestTable(leaf, manifest);
            wanted.push({
              name: leaf,
              schema: ref.schema,
              table: ref.table,
              restoredAs: restoredName(ref.table),
              partitionOf: table.name,
            });
          }
        }
        for (const table of wanted)
          if (Buffer.byteLength(table.restoredAs) > 63)
            throw new PermanentError(`${table.name}${payload.suffix}: longer than PostgreSQL's 63-byte names`);
        const missing = wanted.filter(
          (table) => !table.leaves && manifest.rowCounts && manifest.rowCounts[table.name] === undefined,
        );
        for (const table of missing) {
          const leaves = Object.values(await partitionTrees(live, table))[0];
          if (leaves === undefined) continue;
          // A backup made before dbops recorded partitions: which partitions it held is not known for sure.
          const held = leaves.filter((leaf) => manifest.rowCounts?.[leaf] !== undefined);
          throw new PermanentError(
            `${table.name} is a partitioned table, and backup ${manifest.id} was made before dbops recorded partitions: ` +
              'name its partitions, each brought back as a table of its own' +
              (held.length
                ? ` (${held.map((leaf) => `--table ${leaf}`).join(' ')})`
                : ` (the backup holds none of today's)`) +
              '; nothing was changed',
          );
        }
        if (missing.length)
          throw new PermanentError(
            `backup ${manifest.id} has no table ${missing.map((table) => table.name).join(', ')}; nothing was changed`,
          );
        const problems = [];
        for (const table of wanted) {
          if (payload.replace) {
            // A partition's rows go through its partitioned table, into whichever live partition takes them.
            if (!table.partitionOf && !(await relationExists(live, table.schema, table.table)))
              problems.push(`${table.name} is not in ${target.env}: --replace replaces a table that exists`);
            else await dropMarkedTable(live, table.schema, table.restoredAs, mark).catch(refusal);
          } else if (await relationExists(live, table.schema, table.restoredAs))
            problems.push(`${table.schema}.${table.restoredAs} already exists in ${target.env}: choose another suffix`);
        }
        if (problems.length) throw new PermanentError(`${problems.join('; ')}; nothing was changed`);
      },
      holder,
      target.env,
    );

    timer.mark('checks');
    progress(5, `restoring ${manifest.id}'s definitions of ${wanted.length} table(s) into a scratch database`);
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
        checkIntegrity: true,
        onlyTables: wanted.map((table) => ({
          schema: table.schema,
          table: table.table,
          ...(table.partitionOf && { attached: true }),
        })),
        withoutRows: true,
        steps: [['--section=pre-data']],
      },
      async (scratchUrl, _scratch, archive) => {
        timer.mark('scratch restore');
        const binDir = await toolDirForServers(
          [withDatabase(target.url, config.PG_MAINTENANCE_DB)],
          config.PG_BIN_DIR,
          holder,
        );
        // Each table renamed in the scratch database, cut loose from its sequences, and how its rows are checked.
        const renamed = new Map<WantedTable, string>();
        let checks = '';
        const scratch = await connect(scratchUrl, holder);
        try {
          for (const table of wanted) {
            if (!(await relationExists(scratch, table.schema, table.table)))
              throw new PermanentError(`backup ${manifest.id} has no table ${table.name}; nothing was changed`);
            await detachForTravel(scratch, table.schema, table.table, table.restoredAs);
            if (payload.replace) await markTable(scratch, table.schema, table.restoredAs, mark);
            const name = await catalogName(scratch, table.schema, table.restoredAs);
            renamed.set(table, name);
            const digest = manifest.tableDigests?.[table.name];
            if (digest !== undefined && !table.leaves)
              checks += await digestCheckSql(scratch, name, name, digest, digestDiffers(table.name));
          }
        } finally {
          await scratch.end().catch(() => undefined);
        }
        const toc = archive.toc ?? (await tocLines(archive.input, binDir, signal));
        const dataList = path.join(await catalogue.workArea.jobSubdir(context.job, 'toc'), 'rows.list');
        await writeFile(dataList, `${tableDataLines(toc, wanted).join('\n')}\n`);
        timer.mark('definitions renamed');

        progress(40, `loading ${wanted.length} table(s) into ${target.env}`);
        const lock = await acquireDatabaseLock(target, { maintenanceDb: config.PG_MAINTENANCE_DB, holder, signal });
        const counted: RestoreTablesResult['tables'] = [];
        try {
          timer.mark('lock');
          const withRows = wanted.filter((table) => !table.leaves);
          const loaded = await loadTables({
            liveUrl: target.url,
            scratchUrl,
            binDir,
            signal,
            onLine: log,
            archive: archive.input,
            dataList,
            targets: new Map(withRows.map((table) => [table.name, renamed.get(table)!])),
            definitions: wanted.map((table) => renamed.get(table)!),
            checks,
            beforeCommit: (rows: Map<string, number>) => {
              for (const table of withRows) {
                const got = rows.get(renamed.get(table)!) ?? 0;
                const expected = manifest.rowCounts?.[table.name];
                if (expected !== undefined && got !== expected)
                  throw new PermanentError(
                    `${table.name} restored with ${got} rows where the backup's manifest says ${expected}; nothing was changed`,
                  );
              }
            },
          }).catch((error: unknown) => {
            const differing = wanted.find((table) => (error as Error).message.includes(digestDiffers(table.name)));
            throw differing ? new PermanentError(`${digestDiffers(differing.name)}; nothing was changed`) : error;
          });
          const entries = new Map<WantedTable, RestoreTablesResult['tables'][number]>();
          for (const table of withRows) {
            const digest = manifest.tableDigests?.[table.name] !== undefined;
            const expected = manifest.rowCounts?.[table.name] !== undefined;
            entries.set(table, {
              table: table.name,
              restoredAs: renamed.get(table)!,
              rows: loaded.get(renamed.get(table)!) ?? 0,
              ...(table.partitionOf && { partitionOf: table.partitionOf }),
              checked: digest ? 'content digest' : expected ? 'row count' : 'nothing',
            });
          }
          for (const table of wanted) {
            if (!table.leaves) {
              counted.push(entries.get(table)!);
              continue;
            }
            // A partitioned table: the rows of its partitions, checked as the least checked of them.
            const parts = [...entries.values()].filter((part) => part.partitionOf === table.name);
            counted.push({
              table: table.name,
              restoredAs: renamed.get(table)!,
              rows: parts.reduce((sum, part) => sum + part.rows, 0),
              checked:
                (['nothing', 'row count', 'content digest'] as const).find((level) =>
                  parts.some((part) => part.checked === level),
                ) ?? 'nothing',
            });
          }
          timer.mark(payload.replace ? 'load beside the tables' : 'load into the database');
          if (payload.replace) {
            const now = new Date();
            progress(85, `swapping the backup's rows into ${wanted.map((table) => table.name).join(', ')}`);
            await withClient(
              target.url,
              async (live) => {
                try {
                  // A partitioned table's partitions come in with it: their rows are swapped through it.
                  const swapped = wanted.filter((table) => !table.partitionOf);
                  const reports = await swapInRows(
                    live,
                    swapped.map((table) => ({
                      schema: table.schema,
                      table: table.table,
                      incoming: table.restoredAs,
                      keptAs: previousName(table.table, now),
                      note: `dbops: the rows of ${table.name} before job ${jobId} replaced them with backup ${manifest.id}'s, at ${now.toISOString()}`,
                    })),
                  ).catch(refusal);
                  timer.mark('swap');
                  for (const [index, report] of reports.entries())
                    Object.assign(
                      counted.find((entry) => entry.table === swapped[index]!.name)!,
                      {
                        restoredAs: swapped[index]!.name,
                        replaced: report,
                      },
                    );
                  for (const entry of counted) if (entry.partitionOf) entry.restoredAs = entry.partitionOf;
                } finally {
                  for (const table of wanted)
                    await dropMarkedTable(live, table.schema, table.restoredAs, mark).catch(() => undefined);
                }
              },
              holder,
              target.env,
            );
          }
        } finally {
          await lock.release();
        }
        return counted;
      },
    );
    for (const table of restored)
      log(
        table.replaced
          ? `replaced the rows of ${table.table} with the backup's ${table.rows}; the live rows are kept as ${table.replaced.keptAs}`
          : `restored ${table.table} as ${table.restoredAs} (${table.rows} rows)`,
      );
    return {
      env: target.env,
      backupId: manifest.id,
      database: target.database,
      tables: restored,
      durationMs: Date.now() - startedAt,
      steps: timer.steps,
    };
  },
  describe: (result) =>
    `restored from ${result.backupId} into ${result.env} (database "${result.database}"): ` +
    result.tables
      .map((table) =>
        table.replaced
          ? `${table.table} replaced (${table.rows} rows; the live rows kept as ${table.replaced.keptAs})`
          : `${table.table} as ${table.restoredAs} (${table.rows} rows)`,
      )
      .join(', '),
});

interface WantedTable {
  /** `schema.table` as the backup's manifest names it (format('%I.%I')): its key there, and the result's name. */
  name: string;
  schema: string;
  table: string;
  restoredAs: string;
  /** A partitioned table: its leaf partitions, as the manifest names them. */
  leaves?: string[];
  /** A partition restored with its partitioned table. */
  partitionOf?: string;
}

/** A table as the manifest names it (format('%I.%I')): its names, unquoted. */
function manifestTable(key: string, manifest: Manifest): TableRef {
  const ref = parseQualifiedName(key);
  if (!ref) throw new PermanentError(`backup ${manifest.id}'s manifest names a table "${key}" that is no schema.table`);
  return ref;
}

/** The tables a backup's manifest lists in these schemas, as it names them. */
function tablesOfSchemas(manifest: Manifest, schemas: string[]): string[] {
  if (schemas.length === 0) return [];
  if (!manifest.rowCounts)
    throw new PermanentError(
      `backup ${manifest.id}'s manifest lists no tables: name them with --table; nothing was changed`,
    );
  const listed = [...Object.keys(manifest.partitions ?? {}), ...Object.keys(manifest.rowCounts)];
  const found: string[] = [];
  for (const written of schemas) {
    const schema = parseSqlName(written)!;
    // Its partitioned tables first (each comes back whole, its partitions attached), then every table with rows.
    const inSchema = listed.filter((key) => manifestTable(key, manifest).schema === schema);
    if (inSchema.length === 0)
      throw new PermanentError(`backup ${manifest.id} has no table in schema ${written}; nothing was changed`);
    found.push(...inSchema);
  }
  return found;
}

const digestDiffers = (table: string) =>
  `${table} restored with other contents than the backup's manifest records (its digest differs)`;

function refusal(error: unknown): never {
  throw error instanceof SwapRefused ? new PermanentError(`${error.message}; nothing was changed`) : error;
}
