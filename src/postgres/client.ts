import type pg from 'pg';

/**
 * A connected client. Keepalive makes a dead peer visible; application_name makes us visible. The driver
 * is loaded at the first connection: a CLI command that only enqueues never needs it.
 */
export async function connect(url: string, applicationName = 'dbops', env?: string): Promise<pg.Client> {
  const [{ default: driver }, { parseIntoClientConfig }] = await Promise.all([
    import('pg'),
    import('pg-connection-string'),
  ]);
  const fromUrl = parseIntoClientConfig(url);
  // The driver reads the database with decodeURI, which leaves %2F, %3F, %23, %3D, %3B… encoded: the
  // name is decoded in full here, as libpq (pg_dump, psql) decodes it, so both reach the same database.
  const pathname = new URL(url).pathname.slice(1);
  if (pathname) fromUrl.database = decodeURIComponent(pathname);
  const client = new driver.Client({
    ...fromUrl,
    application_name: applicationName.slice(0, 63),
    keepAlive: true,
    connectionTimeoutMillis: 15_000,
  });
  // An idle client whose server goes away emits 'error'; without a listener that would crash the process.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    throw unreachable(error, url, env);
  }
  return client;
}

/**
 * A failed connection, in one line that says which server (the environment, host, port and database;
 * never the password), keeping the driver's code so that a refused connection stays retryable.
 */
function unreachable(error: unknown, url: string, env: string | undefined): Error {
  let where = 'PostgreSQL';
  try {
    const parsed = new URL(url);
    const host = parsed.hostname || parsed.searchParams.get('host') || 'the local socket';
    where = `${env ? `${env}'s ` : ''}PostgreSQL at ${host}${parsed.port ? `:${parsed.port}` : ''} (database ${decodeURIComponent(parsed.pathname.slice(1)) || 'default'})`;
  } catch {
    // not a URL we can take apart: the driver's message alone
  }
  const cause = error as NodeJS.ErrnoException;
  return Object.assign(new Error(`cannot connect to ${where}: ${cause.message}`, { cause }), { code: cause.code });
}

export async function withClient<T>(
  url: string,
  fn: (client: pg.Client) => Promise<T>,
  applicationName?: string,
  env?: string,
): Promise<T> {
  const client = await connect(url, applicationName, env);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The session settings that shape a value's text (dates, intervals, floats), fixed as pg_dump fixes
 * them: two sessions that must read each other's text, or compare it, both set these.
 */
export const TEXT_FORMAT_SETTINGS = 'SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3';

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Runs `fn` in a transaction: committed if it succeeds, rolled back if it throws. */
export async function inTransaction<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Runs SQL a user wrote (a sanitising script, a trigger's definition) as it is, all of it at once. */
export async function runScript(client: pg.ClientBase, sql: string): Promise<void> {
  await client.query(sql);
}

/**
 * Opens a repeatable-read transaction on `client` (read-only unless `access` says otherwise: a subset's
 * lists are temporary tables) and exports its snapshot: other sessions (pg_dump --snapshot, parallel
 * COPY streams) then see exactly what it sees, while it stays open.
 */
export async function exportSnapshot(
  client: pg.ClientBase,
  access: 'READ ONLY' | 'READ WRITE' = 'READ ONLY',
): Promise<string> {
  await client.query(`BEGIN ISOLATION LEVEL REPEATABLE READ ${access}`);
  return (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
}

/** Ends the transaction exportSnapshot opened. */
export async function releaseSnapshot(client: pg.ClientBase): Promise<void> {
  await client.query('COMMIT');
}
