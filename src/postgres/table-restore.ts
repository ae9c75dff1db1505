import type pg from 'pg';
import { catalogName, tableRef } from './catalog.js';
import { quoteIdent, quoteLiteral } from './client.js';

/*
 * A table restored into a scratch database, made ready to travel alone into a live database under
 * another name: renamed, and cut loose from the sequences it shares a name with there (a column's
 * default from one, an identity, a sequence it owns), so that its dump creates the table and its rows
 * and nothing else. Its indexes, constraints to other tables and triggers were never restored (only
 * the definitions and the rows were), so none of their names can collide either.
 */

/** Whether `schema.table` exists (as any relation) in the database `client` is connected to. */
export async function relationExists(client: pg.ClientBase, schema: string, table: string): Promise<boolean> {
  const { rows } = await client.query<{ found: boolean }>(
    'SELECT to_regclass(format($3, $1::text, $2::text)) IS NOT NULL AS found',
    [schema, table, '%I.%I'],
  );
  return rows[0]!.found;
}

export async function detachForTravel(
  client: pg.ClientBase,
  schema: string,
  table: string,
  newName: string,
): Promise<void> {
  const relation = tableRef(schema, table).sql;
  const { rows: identities } = await client.query<{ name: string }>(
    `SELECT attname AS name FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attidentity <> ''`,
    [relation],
  );
  for (const { name } of identities)
    await client.query(`ALTER TABLE ${relation} ALTER COLUMN ${quoteIdent(name)} DROP IDENTITY`);
  const { rows: sequenced } = await client.query<{ name: string }>(
    `SELECT a.attname AS name FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
      WHERE d.adrelid = $1::regclass AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'`,
    [relation],
  );
  for (const { name } of sequenced)
    await client.query(`ALTER TABLE ${relation} ALTER COLUMN ${quoteIdent(name)} DROP DEFAULT`);
  const { rows: owned } = await client.query<{ sequence: string }>(
    `SELECT d.objid::regclass::text AS sequence FROM pg_depend d
      WHERE d.refobjid = $1::regclass AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'
        AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'`,
    [relation],
  );
  for (const { sequence } of owned) await client.query(`ALTER SEQUENCE ${sequence} OWNED BY NONE`);
  await client.query(`ALTER TABLE ${relation} RENAME TO ${quoteIdent(newName)}`);
}

/** A column as a table has it: what must agree between a live table and the backup's copy of it. */
interface ColumnShape {
  name: string;
  type: string;
  generated: boolean;
}

async function columnShapes(client: pg.ClientBase, relation: string): Promise<ColumnShape[]> {
  const { rows } = await client.query<ColumnShape>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attgenerated <> '' AS generated
       FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [relation],
  );
  return rows;
}

/** Where the backup's table and the live one differ in their columns, one phrase each; none when they agree. */
function columnDifferences(live: ColumnShape[], restored: ColumnShape[]): string[] {
  const theirs = new Map(restored.map((column) => [column.name, column]));
  const found: string[] = [];
  for (const column of live) {
    const twin = theirs.get(column.name);
    if (!twin) found.push(`column ${column.name} is not in the backup`);
    else if (twin.type !== column.type)
      found.push(`column ${column.name} is ${column.type}, in the backup ${twin.type}`);
    theirs.delete(column.name);
  }
  for (const name of theirs.keys()) found.push(`column ${name} is only in the backup`);
  return found;
}

/** What swapping a table's rows touched, by name: the result lists it. */
export interface SwapReport {
  keptAs: string;
  /** Foreign keys from and to the table, dropped for the swap and added back, each validated. */
  foreignKeys: string[];
  /** Views and materialized views reading the table: they read the new rows. */
  views: string[];
  /** The table's grants, as `grantee: PRIVILEGE`: kept, since the table stays the same relation. */
  grants: string[];
  /**
   * The table's own triggers, paused for the swap (a restore is not an application's insert) and put
   * back as they were; a partitioned table's also its partitions' own, as `partition.trigger`.
   */
  triggers: string[];
  /** Sequences the table owns: kept with their values (never rewound, so new rows cannot reuse an id). */
  sequences: string[];
}

/** A failed swap's cause, for the caller to word: nothing of it was committed. */
export class SwapRefused extends Error {}

const ENABLE_AGAIN: Record<string, string> = {
  O: 'ENABLE TRIGGER',
  A: 'ENABLE ALWAYS TRIGGER',
  R: 'ENABLE REPLICA TRIGGER',
};

export interface SwapTarget {
  schema: string;
  table: string;
  /** A table beside it, in its schema, holding the rows to swap in. */
  incoming: string;
  /** The new table the live rows are kept in. */
  keptAs: string;
  /** The kept table's comment: whose rows, replaced when and by what. */
  note: string;
}

interface TableFacts {
  oid: string;
  /** A partitioned table: its rows are its partitions', and the backup's are routed into the live partitions. */
  partitioned: boolean;
  columns: ColumnShape[];
  views: string[];
  grants: string[];
  /** Each on its relation (the table, or one of its partitions), with how it was enabled. */
  triggers: { name: string; enabled: string; relation: string; label: string }[];
  sequences: string[];
  /** Checks added NOT VALID: the live rows need not hold them, so the kept copy gets them as they are. */
  unvalidatedChecks: { name: string; definition: string }[];
}

async function readFacts(client: pg.ClientBase, live: string, incoming: string, name: string): Promise<TableFacts> {
  const { rows: kind } = await client.query<{ relkind: string; oid: string }>(
    'SELECT relkind, oid::text AS oid FROM pg_class WHERE oid = $1::regclass',
    [live],
  );
  if (kind[0]?.relkind !== 'r' && kind[0]?.relkind !== 'p') throw new SwapRefused(`${name} is not a table`);
  const columns = await columnShapes(client, live);
  const differences = columnDifferences(columns, await columnShapes(client, incoming));
  if (differences.length)
    throw new SwapRefused(`the columns of ${name} changed since the backup (${differences.join('; ')})`);
  const { rows: views } = await client.query<{ name: string }>(
    `SELECT DISTINCT r.ev_class::regclass::text AS name FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
      WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1::regclass AND r.ev_class <> $1::regclass ORDER BY 1`,
    [live],
  );
  const { rows: grants } = await client.query<{ grant: string }>(
    `SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ': ' || string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS grant
       FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1::regclass GROUP BY a.grantee ORDER BY 1`,
    [live],
  );
  // The table's triggers; a partitioned table's are cloned onto its partitions (tgparentid set) and
  // pausing them pauses the clones, but a trigger a partition has of its own fires for the rows routed
  // to it: those too.
  const { rows: triggers } = await client.query<{ name: string; enabled: string; relation: string; label: string }>(
    `SELECT t.tgname AS name, t.tgenabled AS enabled, t.tgrelid::regclass::text AS relation,
            CASE WHEN t.tgrelid = $1::regclass THEN t.tgname::text ELSE format('%s.%I', t.tgrelid::regclass, t.tgname) END AS label
       FROM pg_trigger t
      WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
        AND (t.tgrelid = $1::regclass
             OR t.tgparentid = 0 AND t.tgrelid IN (SELECT relid FROM pg_partition_tree($1::regclass)))
      ORDER BY t.tgrelid <> $1::regclass, 3, 1`,
    [live],
  );
  const { rows: unvalidatedChecks } = await client.query<{ name: string; definition: string }>(
    `SELECT conname AS name, pg_get_constraintdef(oid) AS definition FROM pg_constraint
      WHERE conrelid = $1::regclass AND contype = 'c' AND NOT convalidated ORDER BY 1`,
    [live],
  );
  const { rows: sequences } = await client.query<{ name: string }>(
    `SELECT d.objid::regclass::text AS name FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      WHERE d.classid = 'pg_class'::regclass AND d.refobjid = $1::regclass AND d.deptype IN ('a', 'i') ORDER BY 1`,
    [live],
  );
  return {
    oid: kind[0].oid,
    partitioned: kind[0].relkind === 'p',
    columns,
    views: views.map((view) => view.name),
    grants: grants.map((row) => row.grant),
    triggers,
    sequences: sequences.map((sequence) => sequence.name),
    unvalidatedChecks,
  };
}

/**
 * Replaces the rows of each live table with those of its `incoming` table (the same columns, restored
 * beside it), all in one transaction: the live rows are first kept in a new table `keptAs`, the
 * foreign keys from and to the tables are dropped and added back (validated: a row elsewhere that
 * references a row the backup does not hold fails the swap), and each `incoming` is dropped. Each
 * table stays the same relation, so its views, grants, policies, indexes and sequences are those it
 * had. A partitioned table's rows go into its live partitions (the `incoming` one is partitioned as
 * the backup was): a row no live partition takes fails the swap. Waits at most `lockTimeout` for the
 * applications' locks on them.
 */
export async function swapInRows(
  client: pg.ClientBase,
  targets: SwapTarget[],
  lockTimeout = '60s',
): Promise<SwapReport[]> {
  const sql = targets.map((target) => ({
    live: tableRef(target.schema, target.table).sql,
    incoming: tableRef(target.schema, target.incoming).sql,
    kept: tableRef(target.schema, target.keptAs).sql,
  }));
  await client.query('BEGIN');
  try {
    await client.query(`SET LOCAL lock_timeout = ${quoteLiteral(lockTimeout)}`);
    // Every name printed below comes qualified with its schema.
    await client.query('SET LOCAL search_path = pg_catalog');
    await client.query(`LOCK TABLE ${sql.map((table) => table.live).join(', ')} IN ACCESS EXCLUSIVE MODE`);
    const facts: TableFacts[] = [];
    for (const [index, target] of targets.entries())
      facts.push(await readFacts(client, sql[index]!.live, sql[index]!.incoming, `${target.schema}.${target.table}`));
    const { rows: keys } = await client.query<{
      name: string;
      owner: string;
      label: string;
      definition: string;
      touches: string[];
    }>(
      `SELECT conname AS name, conrelid::regclass::text AS owner, format('%s.%I', conrelid::regclass, conname) AS label,
              pg_get_constraintdef(oid) AS definition,
              ARRAY[conrelid::text, confrelid::text] AS touches
         FROM pg_constraint WHERE contype = 'f' AND conparentid = 0
          AND (conrelid = ANY($1::regclass[]) OR confrelid = ANY($1::regclass[]))
        ORDER BY 2, 1`,
      [sql.map((table) => table.live)],
    );

    // A partitioned table's rows are read, and truncated, through it; a plain table's alone (ONLY).
    const only = (index: number) => (facts[index]!.partitioned ? '' : 'ONLY ');
    for (const [index, target] of targets.entries()) {
      const { live, kept } = sql[index]!;
      await client.query(
        `CREATE TABLE ${kept} (LIKE ${live} INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING COMMENTS)`,
      );
      // LIKE copies a NOT VALID check as a valid one, which live rows may break: added back after them.
      const { unvalidatedChecks } = facts[index]!;
      for (const check of unvalidatedChecks)
        await client.query(`ALTER TABLE ${kept} DROP CONSTRAINT ${quoteIdent(check.name)}`);
      await client.query(`INSERT INTO ${kept} SELECT * FROM ${only(index)}${live}`);
      for (const check of unvalidatedChecks)
        await client.query(`ALTER TABLE ${kept} ADD CONSTRAINT ${quoteIdent(check.name)} ${check.definition}`);
      await client.query(`COMMENT ON TABLE ${kept} IS ${quoteLiteral(target.note)}`);
    }
    for (const key of keys) await client.query(`ALTER TABLE ${key.owner} DROP CONSTRAINT ${quoteIdent(key.name)}`);
    for (const [index, { live, incoming }] of sql.entries()) {
      for (const trigger of facts[index]!.triggers)
        await client.query(`ALTER TABLE ${trigger.relation} DISABLE TRIGGER ${quoteIdent(trigger.name)}`);
      await client.query(`TRUNCATE ${only(index)}${live}`);
      const names = facts[index]!.columns.filter((column) => !column.generated)
        .map((column) => quoteIdent(column.name))
        .join(', ');
      try {
        await client.query(
          // The incoming table is this job's own, without children: all its rows, partitioned or not.
          `INSERT INTO ${live} (${names}) OVERRIDING SYSTEM VALUE SELECT ${names} FROM ${incoming}`,
        );
      } catch (error) {
        // An integrity violation (class 23): a backup's row the live table no longer takes, such as one
        // no live partition holds (dropped since), or one a check or a key added since refuses.
        if ((error as { code?: string }).code?.startsWith('23'))
          throw new SwapRefused(
            `the backup's rows of ${targets[index]!.schema}.${targets[index]!.table} do not fit the live table: ${(error as Error).message}`,
          );
        throw error;
      }
    }
    for (const key of keys) {
      try {
        await client.query(`ALTER TABLE ${key.owner} ADD CONSTRAINT ${quoteIdent(key.name)} ${key.definition}`);
      } catch (error) {
        throw new SwapRefused(`foreign key ${key.name} of ${key.owner} would not hold: ${(error as Error).message}`);
      }
    }
    for (const [index, { incoming }] of sql.entries()) {
      for (const trigger of facts[index]!.triggers)
        await client.query(
          `ALTER TABLE ${trigger.relation} ${ENABLE_AGAIN[trigger.enabled] ?? 'ENABLE TRIGGER'} ${quoteIdent(trigger.name)}`,
        );
      await client.query(`DROP TABLE ${incoming}`);
    }
    await client.query('COMMIT');
    const reports: SwapReport[] = [];
    for (const [index, target] of targets.entries())
      reports.push({
        keptAs: await catalogName(client, target.schema, target.keptAs),
        foreignKeys: keys.filter((key) => key.touches.includes(facts[index]!.oid)).map((key) => key.label),
        views: facts[index]!.views,
        grants: facts[index]!.grants,
        triggers: facts[index]!.triggers.map((trigger) => trigger.label),
        sequences: facts[index]!.sequences,
      });
    return reports;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Marks a table dbops made for one job, so that only that job's next attempt drops it. */
export async function markTable(client: pg.ClientBase, schema: string, table: string, mark: string): Promise<void> {
  await client.query(`COMMENT ON TABLE ${tableRef(schema, table).sql} IS ${quoteLiteral(mark)}`);
}

/**
 * Drops `schema.table` if it carries `mark` (an earlier attempt of the same job left it); a table of
 * that name without the mark is someone else's, and refused.
 */
export async function dropMarkedTable(
  client: pg.ClientBase,
  schema: string,
  table: string,
  mark: string,
): Promise<void> {
  if (!(await relationExists(client, schema, table))) return;
  const relation = tableRef(schema, table).sql;
  const { rows } = await client.query<{ mark: string | null }>(
    `SELECT obj_description($1::regclass, 'pg_class') AS mark`,
    [relation],
  );
  if (rows[0]?.mark !== mark) throw new SwapRefused(`${schema}.${table} exists and is not dbops' own`);
  await client.query(`DROP TABLE ${relation}`);
}
