import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { rowTextByName, userTables } from './catalog.js';
import { TEXT_FORMAT_SETTINGS, quoteLiteral } from './client.js';

export interface TableDigest {
  table: string;
  rows: number;
  /**
   * md5 of the row count and the sum of a 60-bit prefix of each row's md5 (its columns' text in order
   * of their names): equal contents, equal hash; in any order, with no sort of the table's rows.
   */
  hash: string;
}

/**
 * A row's text depends on the session's DateStyle, IntervalStyle, float digits and time zone, which a
 * database's or a URL's settings may change: both sides of a comparison hash in these. (It sets them
 * on the caller's session, for the rest of it.)
 */
const DIGEST_SETTINGS = `${TEXT_FORMAT_SETTINGS}; SET TimeZone = 'UTC'`;

/** One table's digest (`table`: `schema.table` quoted as needed, as userTables gives it); its own rows (ONLY). */
export async function digestTable(client: pg.ClientBase, table: string): Promise<TableDigest> {
  await client.query(DIGEST_SETTINGS);
  return hashTable(client, table);
}

/** The digest of `table`'s rows (aliased t), `row` the text of each. */
const hashOf = (row: string) =>
  `md5(count(*) || ':' || coalesce(sum(('x' || left(md5(${row}), 15))::bit(60)::bigint), 0))`;

/** digestTable, in a session whose settings are DIGEST_SETTINGS already. */
async function hashTable(client: pg.ClientBase, table: string): Promise<TableDigest> {
  const row = await rowTextByName(client, table, 't');
  const { rows } = await client.query<{ rows: string; hash: string }>(
    `SELECT count(*) AS rows, ${hashOf(row)} AS hash FROM ONLY ${table} t`,
  );
  return { table, rows: Number(rows[0]!.rows), hash: rows[0]!.hash };
}

/**
 * SQL, for a script run elsewhere (in the transaction that loads `table`), that raises `message` unless
 * the table's rows have digestTable's `hash`; its columns are read through `client` from `columnsOf`, a
 * table with the same ones.
 */
export async function digestCheckSql(
  client: pg.ClientBase,
  columnsOf: string,
  table: string,
  hash: string,
  message: string,
): Promise<string> {
  const row = await rowTextByName(client, columnsOf, 't');
  const tag = `$dbops_${randomBytes(6).toString('hex')}$`;
  return `${DIGEST_SETTINGS};
DO ${tag} BEGIN
  IF (SELECT ${hashOf(row)} FROM ONLY ${table} t) IS DISTINCT FROM ${quoteLiteral(hash)} THEN
    RAISE EXCEPTION '%', ${quoteLiteral(message)};
  END IF;
END ${tag};
`;
}

/**
 * Row count and content hash of each table, as pgcopydb's compare does, but by column name: a table
 * whose columns stand in another order (an inheritance child pg_dump recreated) hashes the same when
 * every column holds the same values, and differently when two columns' values were swapped.
 */
export async function digestTables(
  client: pg.ClientBase,
  onTable?: (table: string, index: number, total: number) => void,
): Promise<TableDigest[]> {
  await client.query(DIGEST_SETTINGS);
  const tables = await userTables(client);
  const digests: TableDigest[] = [];
  for (const [index, table] of tables.entries()) {
    onTable?.(table, index, tables.length);
    digests.push(await hashTable(client, table));
  }
  return digests;
}

/** The tables whose digests differ, or that only one side has. */
export function differences(source: TableDigest[], target: TableDigest[]): string[] {
  const other = new Map(target.map((digest) => [digest.table, digest]));
  const found: string[] = [];
  for (const digest of source) {
    const twin = other.get(digest.table);
    if (!twin) found.push(`${digest.table}: missing in the copy`);
    else if (twin.rows !== digest.rows)
      found.push(`${digest.table}: ${digest.rows} rows in the source, ${twin.rows} in the copy`);
    else if (twin.hash !== digest.hash) found.push(`${digest.table}: same row count, different contents`);
    other.delete(digest.table);
  }
  for (const table of other.keys()) found.push(`${table}: only in the copy`);
  return found;
}

/**
 * Tables counted per query. A UNION ALL of hundreds of counts takes longer to plan than to run: on
 * 4,000 small tables, batches of 50 took 0.66 s, of 250 took 1.0 s, of 1,000 took 1.5 s.
 */
const COUNT_BATCH = 50;

/**
 * Exact rows of each table (`schema.table`, quoted as needed), each counted alone (ONLY). Without
 * parallel workers: each would open every table of the batch again, which for many small tables cost
 * more than the counts (4,000 tables: 2.4 s instead of 1.0), and a backup counts while pg_dump runs,
 * on the same cores. (It sets this on the caller's session, for the rest of it.)
 */
export async function countRows(
  client: pg.ClientBase,
  onTable?: (table: string, index: number, total: number) => void,
): Promise<Record<string, number>> {
  await client.query('SET max_parallel_workers_per_gather = 0');
  const tables = await userTables(client);
  const counts: Record<string, number> = {};
  // Fifty tables a round trip: a database of many small tables costs a few dozen queries, not one a table.
  for (let start = 0; start < tables.length; start += COUNT_BATCH) {
    const batch = tables.slice(start, start + COUNT_BATCH);
    onTable?.(batch[0]!, start, tables.length);
    const { rows } = await client.query<{ i: number; n: string }>(
      batch.map((table, i) => `SELECT ${i} AS i, count(*) AS n FROM ONLY ${table}`).join(' UNION ALL '), // quoted identifiers, see userTables
    );
    for (const row of rows) counts[batch[row.i]!] = Number(row.n);
  }
  return counts;
}

/** Where two row counts disagree, one line per table. */
export function rowCountDifferences(expected: Record<string, number>, actual: Record<string, number>): string[] {
  const found: string[] = [];
  for (const [table, rows] of Object.entries(expected)) {
    if (!(table in actual)) found.push(`${table}: missing`);
    else if (actual[table] !== rows) found.push(`${table}: ${actual[table]} rows, the manifest says ${rows}`);
  }
  for (const table of Object.keys(actual)) if (!(table in expected)) found.push(`${table}: not in the manifest`);
  return found;
}
