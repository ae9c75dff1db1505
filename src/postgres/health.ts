import type pg from 'pg';
import type { TableRef } from './catalog.js';
import { withClient } from './client.js';

/*
 * The statements of maintenance: a database's health figures (sizes, tuples, vacuum and analyze times,
 * index use, sessions), the VACUUM / ANALYZE / REINDEX of one table, and the session settings around them.
 */

/** SQLSTATE 55P03: a lock not granted within lock_timeout. */
export const LOCK_NOT_AVAILABLE = '55P03';

export const isLockNotAvailable = (error: unknown): boolean => (error as { code?: string }).code === LOCK_NOT_AVAILABLE;

/** How long this session waits for any lock before its statement fails with 55P03. */
export async function setLockTimeout(client: pg.ClientBase, ms: number): Promise<void> {
  await client.query(`SET lock_timeout = ${Math.trunc(ms)}`);
}

/** How long one statement of this session may run. */
export async function setStatementTimeout(client: pg.ClientBase, ms: number): Promise<void> {
  await client.query(`SET statement_timeout = ${Math.trunc(ms)}`);
}

export async function serverVersionNumber(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
  return Number(rows[0]?.v ?? 0);
}

/**
 * Exact size of a relation, or the planner's estimate (relpages) when its lock does not come at once:
 * a report must never wait behind, or hold up, anyone's lock.
 */
export async function relationSize(
  client: pg.ClientBase,
  oid: number,
  fn: 'pg_total_relation_size' | 'pg_relation_size' | 'pg_indexes_size',
  estimate: number,
): Promise<{ bytes: number; estimated: boolean }> {
  try {
    const { rows } = await client.query<{ size: string }>(`SELECT ${fn}($1::oid) AS size`, [oid]);
    return { bytes: Number(rows[0]?.size ?? 0), estimated: false };
  } catch (error) {
    if (!isLockNotAvailable(error)) throw error;
    return { bytes: estimate, estimated: true };
  }
}

export interface TableStats {
  relid: number;
  table: string;
  relpages: number;
  live: number;
  dead: number;
  last_vacuum: Date | null;
  last_analyze: Date | null;
  index_pages: number;
}
export interface IndexStats {
  indexrelid: number;
  index: string;
  table: string;
  relpages: number;
  scans: number;
  unique: boolean;
}
export interface SessionStats {
  pid: number;
  user: string | null;
  state: string;
  seconds: number;
  in_state: number;
  query: string;
}

/** The figures a health report is made of; waits at most 200 ms for any lock from here on. */
export async function readHealthStats(client: pg.ClientBase): Promise<{
  sizeBytes: number;
  blockSize: number;
  tables: TableStats[];
  indexes: IndexStats[];
  sessions: SessionStats[];
}> {
  await client.query("SET lock_timeout = '200ms'");
  const size = await client.query<{ size: string }>('SELECT pg_database_size(current_database()) AS size');
  const blockSize = Number(
    (await client.query<{ b: string }>("SELECT current_setting('block_size') AS b")).rows[0]?.b ?? 8192,
  );
  const tables = await client.query<TableStats>(
    `SELECT s.relid, format('%I.%I', s.schemaname, s.relname) AS table, c.relpages, n_live_tup AS live, n_dead_tup AS dead,
            greatest(last_vacuum, last_autovacuum) AS last_vacuum, greatest(last_analyze, last_autoanalyze) AS last_analyze,
            (SELECT coalesce(sum(ic.relpages), 0) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = s.relid) AS index_pages
       FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid`,
  );
  const indexes = await client.query<IndexStats>(
    `SELECT s.indexrelid, format('%I.%I', s.schemaname, s.indexrelname) AS index, format('%I.%I', s.schemaname, s.relname) AS table,
            c.relpages, s.idx_scan AS scans, i.indisunique OR i.indisprimary AS unique
       FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid JOIN pg_class c ON c.oid = s.indexrelid`,
  );
  const sessions = await client.query<SessionStats>(
    `SELECT pid, usename AS user, state, extract(epoch FROM now() - coalesce(xact_start, query_start))::int AS seconds,
            extract(epoch FROM now() - state_change)::int AS in_state, left(query, 200) AS query
       FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()`,
  );
  return {
    sizeBytes: Number(size.rows[0]?.size ?? 0),
    blockSize,
    tables: tables.rows,
    indexes: indexes.rows,
    sessions: sessions.rows,
  };
}

export type MaintenanceAction = 'vacuum' | 'analyze' | 'reindex';

/** The statement that maintains one table (its name quoted from the catalog). */
function maintenanceStatement(
  action: MaintenanceAction,
  table: TableRef,
  options: { full?: boolean; analyze?: boolean; concurrently?: boolean },
): string {
  if (action === 'analyze') return `ANALYZE ${table.sql}`;
  if (action === 'reindex') return `REINDEX TABLE ${options.concurrently ? 'CONCURRENTLY ' : ''}${table.sql}`;
  const flags = [options.full ? 'FULL' : '', options.analyze ? 'ANALYZE' : ''].filter(Boolean);
  return `VACUUM ${flags.length ? `(${flags.join(', ')}) ` : ''}${table.sql}`;
}

/** Vacuums, analyzes or reindexes one table. */
export async function maintainTable(
  client: pg.ClientBase,
  action: MaintenanceAction,
  table: TableRef,
  options: { full?: boolean; analyze?: boolean; concurrently?: boolean },
): Promise<void> {
  await client.query(maintenanceStatement(action, table, options));
}

/** This session's server process id. */
export async function backendPid(client: pg.ClientBase): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** Cancels the statement a server process runs, from another connection to `url`. */
export async function cancelBackend(url: string, pid: number): Promise<void> {
  await withClient(url, (admin) => admin.query('SELECT pg_cancel_backend($1)', [pid]));
}
