import type pg from 'pg';
import { ValidationError } from '../errors.js';
import { quoteIdent } from './client.js';

/*
 * Names given by users are looked up in the catalog with bound parameters, and only the catalog's own
 * values, quoted, ever reach SQL text. A name with quotes, semicolons or unicode is a name: it matches
 * an object of that exact name or nothing.
 */

export interface TableRef {
  schema: string;
  table: string;
  /** `"schema"."table"`, safe to put in SQL. */
  sql: string;
}

export function tableRef(schema: string, table: string): TableRef {
  return { schema, table, sql: `${quoteIdent(schema)}.${quoteIdent(table)}` };
}

/** A name as SQL writes it: lowercase, unquoted; or any other in double quotes (`""` for a quote). */
const SQL_NAME = String.raw`(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")`;
/** `schema.table` as SQL writes it: each name lowercase, or quoted (as `format('%I.%I')` gives it). */
export const QUALIFIED_NAME = new RegExp(String.raw`^${SQL_NAME}\.${SQL_NAME}$`);
/** One name as SQL writes it. */
export const SQL_NAME_ALONE = new RegExp(`^${SQL_NAME}$`);

/** The name that starts at `at` (SQL_NAME), unquoted, and where it ends. */
function nameAt(text: string, at: number): { name: string; end: number } | undefined {
  if (text[at] !== '"') {
    const plain = /^[a-z_][a-z0-9_$]*/.exec(text.slice(at))?.[0];
    return plain ? { name: plain, end: at + plain.length } : undefined;
  }
  let name = '';
  for (let from = at + 1; ;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return undefined;
    name += text.slice(from, quote);
    if (text[quote + 1] !== '"') return name ? { name, end: quote + 1 } : undefined;
    name += '"';
    from = quote + 2;
  }
}

/** One name as SQL writes it (SQL_NAME_ALONE), unquoted; undefined when it is not one. */
export function parseSqlName(text: string): string | undefined {
  const found = nameAt(text, 0);
  return found && found.end === text.length ? found.name : undefined;
}

/** `schema.table` as SQL writes it (QUALIFIED_NAME): the table, its names unquoted; undefined when it is not one. */
export function parseQualifiedName(text: string): TableRef | undefined {
  const schema = nameAt(text, 0);
  if (!schema || text[schema.end] !== '.') return undefined;
  const table = parseSqlName(text.slice(schema.end + 1));
  return table === undefined ? undefined : tableRef(schema.name, table);
}

/** A table named as the catalog queries here name it, `schema.table` unquoted: split at the first dot. */
export function tableRefOf(name: string): TableRef {
  const dot = name.indexOf('.');
  return tableRef(name.slice(0, dot), name.slice(dot + 1));
}

/**
 * Finds a table by `schema.table` (or `table`, searched in `public`): the text is matched against
 * `schema.table` as written, quoted or not; never parsed as SQL.
 */
export async function findTable(client: pg.ClientBase, name: string): Promise<TableRef> {
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f')
        AND (n.nspname || '.' || c.relname = $1 OR format('%I.%I', n.nspname, c.relname) = $1
             OR (n.nspname = 'public' AND (c.relname = $1 OR quote_ident(c.relname) = $1)))`,
    [name],
  );
  if (rows.length === 0) throw new ValidationError(`no table "${name}" (name it as schema.table)`);
  if (rows.length > 1)
    throw new ValidationError(
      `"${name}" names several tables: ${rows.map((row) => `${row.schema}.${row.table}`).join(', ')}`,
    );
  return tableRef(rows[0]!.schema, rows[0]!.table);
}

/** Relations (`c`, in schema `n`) outside system schemas and extensions: add a condition on c.relkind. */
const USER_RELATIONS = `pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

/**
 * Tables outside system schemas and extensions, of the given kinds: r ordinary (partitions included),
 * p partitioned parents, m materialized views.
 */
export async function listTables(client: pg.ClientBase, kinds: ('r' | 'p' | 'm')[] = ['r', 'm']): Promise<TableRef[]> {
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT n.nspname AS schema, c.relname AS table FROM ${USER_RELATIONS} AND c.relkind = ANY($1::"char"[]) ORDER BY 1, 2`,
    [kinds],
  );
  return rows.map((row) => tableRef(row.schema, row.table));
}

/** Ordinary tables and partitions (whose rows pg_dump dumps), as `schema.table` quoted where needed. */
export async function userTables(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM ${USER_RELATIONS} AND c.relkind = 'r' ORDER BY 1`,
  );
  return rows.map((row) => row.name);
}

/**
 * Each partitioned table outside system schemas and extensions (or only `schema.table`, when it is
 * one), with its leaf partitions, named as userTables names them.
 */
export async function partitionTrees(
  client: pg.ClientBase,
  only?: { schema: string; table: string },
): Promise<Record<string, string[]>> {
  const { rows } = await client.query<{ name: string; leaves: string[] | null }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name,
            (SELECT array_agg(format('%I.%I', ln.nspname, l.relname) ORDER BY ln.nspname, l.relname)
               FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
               JOIN pg_namespace ln ON ln.oid = l.relnamespace WHERE t.isleaf) AS leaves
       FROM ${USER_RELATIONS} AND c.relkind = 'p'
        AND ($1::text IS NULL OR c.oid = to_regclass(format('%I.%I', $1::text, $2::text))) ORDER BY 1`,
    [only?.schema ?? null, only?.table ?? null],
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.leaves ?? []]));
}

/** `schema.table` as userTables (and so a backup's manifest) names it: quoted where needed. */
export async function catalogName(client: pg.ClientBase, schema: string, table: string): Promise<string> {
  const { rows } = await client.query<{ name: string }>(`SELECT format('%I.%I', $1::text, $2::text) AS name`, [
    schema,
    table,
  ]);
  return rows[0]!.name;
}

/** How many ordinary tables and partitions there are: what a dump's progress counts against. */
export async function countUserTables(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${USER_RELATIONS} AND c.relkind = 'r'`,
  );
  return rows[0]?.n ?? 0;
}

/** A column as a masking policy is checked against it. */
export interface ColumnFact {
  /** `schema.table`, unquoted, as a policy names it. */
  table: string;
  column: string;
  type: string;
  nullable: boolean;
  /** In a unique index or constraint (alone or with others). */
  unique: boolean;
  /** PostgreSQL's type category: S string, D date/time, N numeric, … */
  category: string;
  /** A varchar(n)'s n; null for unbounded. */
  maxLength: number | null;
  generated: boolean;
  /** Of a partitioned table: its partitions are masked through it, and are not listed themselves. */
  partitioned: boolean;
}

/** Every column of the tables (a partitioned table once, not its partitions), in table then column order. */
export async function columnFacts(client: pg.ClientBase): Promise<ColumnFact[]> {
  const { rows } = await client.query<ColumnFact>(
    `WITH tables AS (SELECT c.oid, n.nspname, c.relname, c.relkind FROM ${USER_RELATIONS}
                       AND c.relkind IN ('r', 'p') AND NOT c.relispartition)
     SELECT r.nspname || '.' || r.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
            NOT a.attnotnull AS nullable,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = r.oid AND i.indisunique AND a.attnum = ANY (i.indkey)) AS unique,
            t.typcategory AS category,
            CASE WHEN t.typcategory = 'S' AND a.atttypmod > 4 THEN a.atttypmod - 4 END AS "maxLength",
            a.attgenerated <> '' AS generated, r.relkind = 'p' AS partitioned
       FROM tables r
       JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
      ORDER BY r.nspname, r.relname, a.attnum`,
  );
  return rows;
}

/** A table with its size on disk (heap and TOAST). */
export type SizedTable = TableRef & { bytes: number };

/** Ordinary tables and partitions with their size on disk, largest first. */
export async function tablesBySize(client: pg.ClientBase): Promise<SizedTable[]> {
  const { rows } = await client.query<{ schema: string; table: string; bytes: string }>(
    `SELECT n.nspname AS schema, c.relname AS table, pg_table_size(c.oid)::text AS bytes FROM ${USER_RELATIONS}
        AND c.relkind = 'r' AND c.relpersistence <> 't' ORDER BY pg_table_size(c.oid) DESC, 1, 2`,
  );
  return rows.map((row) => ({ ...tableRef(row.schema, row.table), bytes: Number(row.bytes) }));
}

/**
 * A table's columns as pg_dump's COPY names them: every column that holds data (not dropped, not
 * generated), quoted, in the source's order, as `("a", "b")`. A COPY that moves rows between two
 * tables names them on both sides: the target's order may differ (pg_dump recreates an inheritance
 * child with its parent's columns first), and position is not identity.
 */
export async function copyColumnList(client: pg.ClientBase, table: TableRef): Promise<string> {
  const { rows } = await client.query<{ columns: string | null }>(
    `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS columns FROM pg_attribute
      WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`,
    [table.sql],
  );
  return `(${rows[0]?.columns ?? ''})`;
}

/**
 * A row of `table` (aliased `alias`) as text that does not depend on the order of its columns: the
 * columns in order of their names, as a row value (`ROW(…)::text`, each value as its type prints it,
 * NULL told apart from an empty string). Dropped columns are not in it; generated ones are.
 */
export async function rowTextByName(client: pg.ClientBase, table: string, alias: string): Promise<string> {
  const { rows } = await client.query<{ columns: string | null }>(
    `SELECT string_agg(format('%I.%I', $2::text, attname), ', ' ORDER BY attname COLLATE "C") AS columns FROM pg_attribute
      WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`,
    [table, alias],
  );
  return `ROW(${rows[0]?.columns ?? ''})::text`;
}
