import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { acquireDatabaseLock, tryDatabaseLock, type DatabaseLock } from '../../src/postgres/lock.js';
import { PG_ADMIN_URL, pgUrl } from './services.js';

/** Pagila, kept in the repository (see its README for where it comes from). */
export const PAGILA_DIR = path.resolve(import.meta.dirname, '../fixtures/pagila');

export async function sql<T extends pg.QueryResultRow = Record<string, unknown>>(
  database: string,
  text: string,
  params: unknown[] = [],
): Promise<T[]> {
  // The database by name, not in a URL: any name works (the driver would leave %3F… in a URL's path encoded).
  const client = new pg.Client({ ...parseIntoClientConfig(PG_ADMIN_URL), database });
  await client.connect();
  try {
    return (await client.query<T>(text, params)).rows;
  } finally {
    await client.end();
  }
}

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

export async function createDatabase(name: string): Promise<void> {
  await sql('postgres', `CREATE DATABASE ${ident(name)}`);
}

export async function dropDatabase(name: string): Promise<void> {
  await sql('postgres', `DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
}

export async function databaseExists(name: string): Promise<boolean> {
  return (await sql('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [name])).length > 0;
}

export async function databasesLike(pattern: string): Promise<string[]> {
  const rows = await sql<{ datname: string }>(
    'postgres',
    'SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1',
    [pattern],
  );
  return rows.map((row) => row.datname);
}

/** Databases carrying dbops' shadow mark whose comment field `field` matches `condition` ($1 is `value`). */
async function markedDatabases(
  field: 'target' | 'scratchOf',
  condition: 'LIKE' | '=',
  value: string,
): Promise<string[]> {
  const rows = await sql<{ datname: string }>(
    'postgres',
    `SELECT d.datname FROM pg_database d JOIN pg_shdescription s ON s.objoid = d.oid
      WHERE s.description LIKE '{"mark":"dbops-shadow"%' AND (s.description::jsonb ->> '${field}') ${condition} $1`,
    [value],
  );
  return rows.map((row) => row.datname);
}

/** Shadow databases (made by restore/copy) whose comment names a target starting with `prefix`. */
export function shadowDatabasesFor(prefix: string): Promise<string[]> {
  return markedDatabases('target', 'LIKE', `${prefix}%`);
}

/** Scratch databases (rehearsals, full verifications) made for `database`. */
export function scratchDatabasesOf(database: string): Promise<string[]> {
  return markedDatabases('scratchOf', '=', database);
}

export async function loadPagila(database: string): Promise<void> {
  await createDatabase(database);
  const psql = ['-q', '-v', 'ON_ERROR_STOP=1', '-d', pgUrl(database)];
  await execa('psql', [...psql, '-f', path.join(PAGILA_DIR, 'pagila-schema.sql')]);
  await execa('psql', psql, { input: gunzipSync(readFileSync(path.join(PAGILA_DIR, 'pagila-data.sql.gz'))) });
}

export interface Fingerprint {
  schema: string;
  tables: Record<string, { rows: number; md5: string | null }>;
  sequences: Record<string, string>;
}

/**
 * What must be equal after a round trip: the schema as pg_dump prints it, and for every table,
 * partition and materialized view its row count and a hash of its sorted rows; sequence positions.
 */
export async function fingerprint(database: string): Promise<Fingerprint> {
  const { stdout } = await execa('pg_dump', ['--schema-only', '-d', pgUrl(database)]);
  const schema = stdout
    .split('\n')
    .filter((line) => !line.startsWith('--') && !/^\\(un)?restrict /.test(line))
    .join('\n');
  const relations = await sql<{ name: string; populated: boolean }>(
    database,
    `SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relispopulated AS populated FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      ORDER BY 1`,
  );
  const tables: Fingerprint['tables'] = {};
  for (const { name, populated } of relations) {
    if (!populated) {
      tables[name] = { rows: -1, md5: 'not populated' };
      continue;
    }
    const [row] = await sql<{ rows: number; md5: string | null }>(
      database,
      `SELECT count(*)::int AS rows, md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS md5 FROM ${name} t`,
    );
    tables[name] = row!;
  }
  const sequenceRows = await sql<{ name: string }>(
    database,
    `SELECT format('%I.%I', schemaname, sequencename) AS name FROM pg_sequences ORDER BY 1`,
  );
  const sequences: Fingerprint['sequences'] = {};
  for (const { name } of sequenceRows) {
    const [row] = await sql<{ v: string }>(database, `SELECT last_value || ':' || is_called AS v FROM ${name}`);
    sequences[name] = row!.v;
  }
  return { schema, tables, sequences };
}

/** Takes a database's per-database lock as a job would (holder: the application_name jobs see). */
export function holdDatabaseLock(database: string, holder = 'test'): Promise<DatabaseLock> {
  return acquireDatabaseLock({ env: 'test', database, url: pgUrl(database) }, { maintenanceDb: 'postgres', holder });
}

/** Whether a database's lock is free now (taken and given back at once). */
export async function databaseLockIsFree(database: string): Promise<boolean> {
  const lock = await tryDatabaseLock(
    { env: 'test', database, url: pgUrl(database) },
    { maintenanceDb: 'postgres', holder: 'test' },
  );
  await lock?.release();
  return lock !== undefined;
}
