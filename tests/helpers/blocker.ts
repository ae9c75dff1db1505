import pg from 'pg';
import { execa } from 'execa';
import { sql } from './pg.js';
import { pgUrl } from './services.js';

/**
 * Holds an ACCESS EXCLUSIVE lock on a table so that pg_dump, which needs ACCESS SHARE on every table,
 * waits at a known point: a backup that is certainly in the middle of its run, for as long as needed.
 */
export async function lockTable(database: string, table: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: pgUrl(database) });
  client.on('error', () => undefined); // cleanup may terminate it
  await client.connect();
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  return {
    async release() {
      await client.query('COMMIT').catch(() => undefined);
      await client.end().catch(() => undefined);
    },
  };
}

/** pg_dump sessions on a database (our tools set application_name dbops-<tool>). */
export async function toolSessions(database: string, tool = 'pg_dump'): Promise<{ pid: number; waiting: boolean }[]> {
  return sql<{ pid: number; waiting: boolean }>(
    'postgres',
    `SELECT pid, wait_event_type = 'Lock' AS waiting FROM pg_stat_activity WHERE datname = $1 AND application_name = $2`,
    [database, `dbops-${tool}`],
  );
}

/** Operating-system processes of a tool whose command line names the database. */
export async function toolProcesses(tool: string, database: string): Promise<string[]> {
  const { stdout } = await execa('ps', ['-eo', 'pid,args'], { reject: false });
  return String(stdout)
    .split('\n')
    .filter((line) => line.includes(tool) && line.includes(database) && !line.includes('ps -eo'));
}
