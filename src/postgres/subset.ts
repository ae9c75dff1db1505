import type pg from 'pg';
import { tableRefOf } from './catalog.js';
import { quoteIdent } from './client.js';

/*
 * A subset of a copy, cut inside its shadow database: the rows a condition chooses in the named tables,
 * plus every row they reference, transitively along foreign keys (what `rest: all` keeps of the other
 * tables counts as chosen too), so that every foreign key still holds. The foreign keys are dropped
 * while the rest is deleted and added back after, each validated: a copy whose keys do not all hold
 * fails instead of being swapped in.
 */

export interface SubsetRule {
  /** `schema.table`, unquoted. */
  table: string;
  /** An SQL condition on the table's rows. */
  where: string;
}

export interface SubsetTable {
  table: string;
  rows: number;
}

interface ForeignKey {
  name: string;
  child: string;
  parent: string;
  childColumns: string[];
  parentColumns: string[];
  definition: string;
}

const quoted = (table: string) => tableRefOf(table).sql;

/** Tables (a partitioned table once, not its partitions) and the foreign keys between them. */
async function readGraph(
  client: pg.ClientBase,
): Promise<{ tables: string[]; partitioned: Set<string>; keys: ForeignKey[] }> {
  const { rows: tables } = await client.query<{ name: string; partitioned: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS name, c.relkind = 'p' AS partitioned FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      ORDER BY 1`,
  );
  // Keys declared on a partitioned table are cloned onto each partition (conparentid set): the parent's is the one.
  const { rows: keys } = await client.query<ForeignKey>(
    `SELECT con.conname AS name,
            cn.nspname || '.' || cc.relname AS child, pn.nspname || '.' || pc.relname AS parent,
            ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                    JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.i)::text[] AS "childColumns",
            ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                    JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.i)::text[] AS "parentColumns",
            pg_get_constraintdef(con.oid) AS definition
       FROM pg_constraint con
       JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
       JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT cc.relispartition
      ORDER BY 2, 1`,
  );
  return {
    tables: tables.map((row) => row.name),
    partitioned: new Set(tables.filter((row) => row.partitioned).map((row) => row.name)),
    keys,
  };
}

/**
 * Cuts the database down to the subset. `rest`: what becomes of a table no rule names and no kept row
 * references: kept whole (`all`) or emptied (`empty`). Returns the rows each table keeps.
 */
export async function cutSubset(
  client: pg.ClientBase,
  rules: SubsetRule[],
  rest: 'all' | 'empty',
  onStep: (step: string) => void = () => undefined,
): Promise<SubsetTable[]> {
  const { tables, partitioned, keys } = await readGraph(client);
  // A table's own rows (an inheritance parent's statements must not reach its children); a partitioned table's, through it.
  const rowsOf = (table: string) => `${partitioned.has(table) ? '' : 'ONLY '}${quoted(table)}`;
  for (const rule of rules)
    if (!tables.includes(rule.table)) throw new Error(`--subset names ${rule.table}, which the copy does not have`);
  const keep = new Map(tables.map((table, index) => [table, `pg_temp.dbops_keep_${index}`]));
  const named = new Set(rules.map((rule) => rule.table));
  await client.query('BEGIN');
  try {
    // The chosen rows, by (partition, row): the seeds of the closure.
    for (const table of tables) {
      const rule = rules.filter((each) => each.table === table);
      const where = named.has(table)
        ? rule.map((each) => `(${each.where})`).join(' OR ')
        : rest === 'all'
          ? 'true'
          : 'false';
      await client.query(
        `CREATE TEMP TABLE ${keep.get(table)!.slice('pg_temp.'.length)} ON COMMIT DROP AS
           SELECT tableoid AS part, ctid AS id FROM ${rowsOf(table)} WHERE ${where}`,
      );
      await client.query(`CREATE INDEX ON ${keep.get(table)!} (part, id)`);
    }
    // Every row a kept row references is kept, until nothing more is added.
    for (let round = 1, added = 1; added > 0; round += 1) {
      onStep(`following foreign keys (round ${round})`);
      added = 0;
      for (const key of keys) {
        const join = key.childColumns
          .map((column, i) => `p.${quoteIdent(key.parentColumns[i]!)} = c.${quoteIdent(column)}`)
          .join(' AND ');
        const result = await client.query(
          `INSERT INTO ${keep.get(key.parent)!} (part, id)
           SELECT DISTINCT p.tableoid, p.ctid FROM ${rowsOf(key.parent)} p
             JOIN ${rowsOf(key.child)} c ON ${join}
             JOIN ${keep.get(key.child)!} k ON k.part = c.tableoid AND k.id = c.ctid
            WHERE NOT EXISTS (SELECT 1 FROM ${keep.get(key.parent)!} q WHERE q.part = p.tableoid AND q.id = p.ctid)`,
        );
        added += result.rowCount ?? 0;
      }
    }
    onStep('deleting the rows not kept');
    for (const key of keys)
      await client.query(`ALTER TABLE ${quoted(key.child)} DROP CONSTRAINT ${quoteIdent(key.name)}`);
    const kept: SubsetTable[] = [];
    for (const table of tables) {
      await client.query(
        `DELETE FROM ${rowsOf(table)} t
          WHERE NOT EXISTS (SELECT 1 FROM ${keep.get(table)!} k WHERE k.part = t.tableoid AND k.id = t.ctid)`,
      );
      const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${rowsOf(table)}`);
      kept.push({ table, rows: Number(rows[0]!.n) });
    }
    onStep('checking every foreign key');
    for (const key of keys)
      await client.query(`ALTER TABLE ${quoted(key.child)} ADD CONSTRAINT ${quoteIdent(key.name)} ${key.definition}`);
    await client.query('COMMIT');
    return kept;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
