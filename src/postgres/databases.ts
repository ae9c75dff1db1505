import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { JobRef } from '../job-ids.js';
import type { CreatedDatabase, DatabaseLedger } from '../ownership.js';
import { quoteIdent, quoteLiteral } from './client.js';
import { creationClause, type DatabaseIdentity } from './identity.js';

/*
 * Whole-database moves for restore and copy: build the new contents in a shadow database, then swap
 * it in by renaming, so that the target is either entirely the old database or entirely the new one.
 * Every database dbops creates is recorded in its ledger (name and OID, with the creating job); only a
 * database that matches such a record is ever dropped as a leftover. The JSON comment it also carries
 * is for people: any job that runs SQL could write one, so nothing decides on it.
 */

const SHADOW_MARK = 'dbops-shadow';
const MAX_IDENTIFIER = 63;

/** For people reading `\l+`; never trusted (see findCreatedDatabases). */
interface ShadowComment {
  mark: typeof SHADOW_MARK;
  target: string;
  job: string;
  createdAt: string;
  /** A scratch database: the database it was made for (a rehearsal or a verification of its backup). */
  scratchOf?: string;
}

async function setShadowComment(client: pg.Client, name: string, comment: ShadowComment | null): Promise<void> {
  const value = comment === null ? 'NULL' : quoteLiteral(JSON.stringify(comment));
  await client.query(`COMMENT ON DATABASE ${quoteIdent(name)} IS ${value}`);
}

/** A database's OID: what a ledger record holds beside the name, so that a database made later under that name is not it. */
async function oidOf(client: pg.ClientBase, name: string): Promise<number | undefined> {
  const { rows } = await client.query<{ oid: number }>('SELECT oid::int AS oid FROM pg_database WHERE datname = $1', [
    name,
  ]);
  return rows[0]?.oid;
}

export async function databaseExists(client: pg.Client, name: string): Promise<boolean> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  return (rowCount ?? 0) > 0;
}

/** CREATE DATABASE options: `like`'s encoding and locale, and the owner and tablespace of `identity` (else `like`'s owner). */
async function creationOptions(
  client: pg.Client,
  like: string,
  identity: DatabaseIdentity | undefined,
): Promise<string> {
  const { rows } = await client.query<{
    encoding: string;
    collate: string;
    ctype: string;
    provider: string | null;
    icu: string | null;
    owner: string;
    me: string;
  }>(
    `SELECT pg_encoding_to_char(d.encoding) AS encoding, d.datcollate AS collate, d.datctype AS ctype,
            to_jsonb(d)->>'datlocprovider' AS provider, to_jsonb(d)->>'daticulocale' AS icu,
            pg_get_userbyid(d.datdba) AS owner, current_user AS me
       FROM pg_database d WHERE datname = $1`,
    [like],
  );
  const row = rows[0];
  if (!row) {
    const me = (await client.query<{ me: string }>('SELECT current_user AS me')).rows[0]!.me;
    return creationClause(identity, me);
  }
  const parts = [
    `ENCODING ${quoteLiteral(row.encoding)} LC_COLLATE ${quoteLiteral(row.collate)} LC_CTYPE ${quoteLiteral(row.ctype)}`,
  ];
  if (row.provider === 'i' && row.icu) parts.push(`LOCALE_PROVIDER icu ICU_LOCALE ${quoteLiteral(row.icu)}`);
  if (identity) parts.push(creationClause(identity, row.me));
  else if (row.owner !== row.me) parts.push(`OWNER ${quoteIdent(row.owner)}`);
  return parts.filter(Boolean).join(' ');
}

/** The job creating a database, and where dbops records that it did. */
export interface DatabaseOwner {
  job: JobRef;
  ledger: DatabaseLedger;
}

/** dbops' database names: a random suffix, so a name never comes back for another database. */
const CREATED_NAME = /^dbops_(shadow|scratch)_[0-9a-f]{12}$/;

async function createRecorded(
  client: pg.Client,
  name: string,
  kind: CreatedDatabase['kind'],
  target: string,
  like: string,
  owner: DatabaseOwner,
  identity?: DatabaseIdentity,
): Promise<CreatedDatabase> {
  const options = await creationOptions(client, like, identity);
  await client.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0 ${options}`);
  const record: CreatedDatabase = {
    name,
    oid: (await oidOf(client, name))!,
    kind,
    target,
    job: owner.job,
    createdAt: new Date().toISOString(),
  };
  try {
    await owner.ledger.record(record);
  } catch (error) {
    await dropDatabase(client, name).catch(() => undefined); // unrecorded, it could never be cleaned up
    throw error;
  }
  await setShadowComment(client, name, {
    mark: SHADOW_MARK,
    target,
    job: owner.job.id,
    createdAt: record.createdAt,
    ...(kind === 'scratch' ? { scratchOf: like } : {}),
  });
  return record;
}

/**
 * Creates an empty shadow database for `target`, with the target's encoding and locale, and the owner and
 * tablespace of `identity` (by default, the target's owner).
 */
export async function createShadowDatabase(
  client: pg.Client,
  target: string,
  owner: DatabaseOwner,
  identity?: DatabaseIdentity,
): Promise<CreatedDatabase> {
  return createRecorded(
    client,
    `dbops_shadow_${randomBytes(6).toString('hex')}`,
    'shadow',
    target,
    target,
    owner,
    identity,
  );
}

/**
 * A scratch database (e.g. for a migration rehearsal) that no live database depends on: its own target,
 * so its job holds the lock on its own name and recovery drops it only once that job is gone.
 */
export function scratchDatabaseName(): string {
  return `dbops_scratch_${randomBytes(6).toString('hex')}`;
}

/** Creates it; take the lock on `name` first. */
export async function createScratchDatabase(
  client: pg.Client,
  name: string,
  like: string,
  owner: DatabaseOwner,
): Promise<void> {
  await createRecorded(client, name, 'scratch', name, like, owner);
}

/** Drops a database dbops created and its record. */
export async function dropCreatedDatabase(client: pg.Client, name: string, ledger: DatabaseLedger): Promise<void> {
  await dropDatabase(client, name);
  await ledger.forget(name);
}

export async function dropDatabase(client: pg.Client, name: string): Promise<void> {
  await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
}

/** A database on this server that dbops' ledger proves it created: the name and the OID match. */
export interface LeftoverDatabase {
  name: string;
  record: CreatedDatabase;
}

/** Databases that look like dbops' (its name, or its comment) but that no ledger record proves it made. */
export interface UnprovenDatabase {
  name: string;
  why: string;
}

/**
 * Every database on this server that dbops created and has not yet dropped (`proven`), and the ones
 * that only look like it (`unproven`: to report, never to remove).
 */
export async function findCreatedDatabases(
  client: pg.ClientBase,
  ledger: DatabaseLedger,
): Promise<{ proven: LeftoverDatabase[]; unproven: UnprovenDatabase[] }> {
  const { rows } = await client.query<{ datname: string; oid: number }>(
    `SELECT d.datname, d.oid::int AS oid
       FROM pg_database d
      WHERE d.datname LIKE 'dbops\\_shadow\\_%' OR d.datname LIKE 'dbops\\_scratch\\_%' OR shobj_description(d.oid, 'pg_database') LIKE $1
      ORDER BY d.datname`,
    [`{"mark":"${SHADOW_MARK}"%`],
  );
  const proven: LeftoverDatabase[] = [];
  const unproven: UnprovenDatabase[] = [];
  for (const row of rows) {
    const record = CREATED_NAME.test(row.datname) ? await ledger.get(row.datname) : undefined;
    if (record && record.oid === row.oid && record.name === row.datname) proven.push({ name: row.datname, record });
    else if (!CREATED_NAME.test(row.datname))
      unproven.push({ name: row.datname, why: "carries dbops' mark but not a name dbops gives" });
    else
      unproven.push({
        name: row.datname,
        why: record
          ? 'another database than the one dbops recorded under this name'
          : 'no record that dbops created it',
      });
  }
  return { proven, unproven };
}

/** `name` cut (by bytes, never inside a character) so that `name` + `suffix` fits PostgreSQL's 63 bytes. */
export function nameWithSuffix(name: string, suffix: string): string {
  return `${Buffer.from(name)
    .subarray(0, MAX_IDENTIFIER - Buffer.byteLength(suffix))
    .toString()}${suffix}`.replace(/\uFFFD/g, '');
}

/** `<name>_prev_<time>`: what a replaced database, or a replaced table's rows, is kept as. */
export function previousName(target: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').toLowerCase(); // 20261125t120000
  return nameWithSuffix(target, `_prev_${stamp}`);
}

async function waitForNoSessions(client: pg.Client, database: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await client.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [database],
    );
    const { rows } = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
      [database],
    );
    if (rows[0]?.n === 0) return true;
    await sleep(100);
  }
  return false;
}

export interface SwapResult {
  /** The old database's new name, when it was kept. */
  previousDatabase?: string;
}

/**
 * Puts `shadow` in place of `target` by renaming both in one transaction. Sessions on the target are
 * ended first (new ones are refused meanwhile); on any failure the target stays as it was and open.
 */
export async function swapInShadow(
  client: pg.Client,
  target: string,
  shadow: string,
  options: {
    keepPrevious: boolean;
    note: string;
    record: CreatedDatabase;
    ledger: DatabaseLedger;
    /** The comment the database has once in place (the one it replaces had): set in the swap's transaction. */
    comment: string | null;
  },
): Promise<SwapResult> {
  const { record, ledger } = options;
  const finalComment = options.comment === null ? 'NULL' : quoteLiteral(options.comment);
  if (!(await databaseExists(client, target))) {
    await client.query('BEGIN');
    await client.query(`ALTER DATABASE ${quoteIdent(shadow)} RENAME TO ${quoteIdent(target)}`);
    await client.query(`COMMENT ON DATABASE ${quoteIdent(target)} IS ${finalComment}`);
    await client.query('COMMIT');
    await ledger.forget(shadow);
    return {};
  }
  let previous = previousName(target, new Date());
  for (let n = 2; await databaseExists(client, previous); n += 1)
    previous = `${previous.slice(0, MAX_IDENTIFIER - 3)}_${n}`;

  await ledger.record({ ...record, targetClosed: true });
  await client.query(`ALTER DATABASE ${quoteIdent(target)} ALLOW_CONNECTIONS false`);
  try {
    for (let attempt = 1; ; attempt += 1) {
      if (!(await waitForNoSessions(client, target, 10_000))) {
        throw new Error(`sessions on database "${target}" would not end`);
      }
      try {
        await client.query('BEGIN');
        await client.query(`ALTER DATABASE ${quoteIdent(target)} RENAME TO ${quoteIdent(previous)}`);
        await client.query(`ALTER DATABASE ${quoteIdent(shadow)} RENAME TO ${quoteIdent(target)}`);
        await client.query(`COMMENT ON DATABASE ${quoteIdent(target)} IS ${finalComment}`);
        await client.query('COMMIT');
        await ledger.forget(shadow);
        break;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        // 55006 object_in_use: a session slipped in between; end it and try again.
        if ((error as { code?: string }).code !== '55006' || attempt >= 5) throw error;
      }
    }
  } catch (error) {
    await client.query(`ALTER DATABASE ${quoteIdent(target)} ALLOW_CONNECTIONS true`).catch(() => undefined);
    await ledger.record(record).catch(() => undefined);
    throw error;
  }

  if (!options.keepPrevious) {
    await dropDatabase(client, previous);
    return {};
  }
  await client.query(`ALTER DATABASE ${quoteIdent(previous)} ALLOW_CONNECTIONS true`);
  await client.query(
    `COMMENT ON DATABASE ${quoteIdent(previous)} IS ${quoteLiteral(`${previousMark(target)}${options.note}`)}`,
  );
  // Recorded as dbops' own, so that `previous drop` can prove what it drops (a comment anyone can write).
  const oid = await oidOf(client, previous);
  if (oid !== undefined)
    await ledger.record({
      name: previous,
      oid,
      kind: 'previous',
      target,
      job: record.job,
      createdAt: new Date().toISOString(),
    });
  return { previousDatabase: previous };
}

/** How a kept previous database's comment begins: it names the database it used to be. */
const PREVIOUS_MARK = 'dbops: previous ';
const previousMark = (target: string) => `${PREVIOUS_MARK}"${target}", `;

export interface PreviousDatabase {
  name: string;
  /** dbops' ledger records it as a version it kept (name and OID): only such a one may be dropped by dbops. */
  proven: boolean;
  /** Null where this role may not connect to it (pg_database_size needs CONNECT). */
  sizeBytes: number | null;
  /** What replaced it, e.g. `replaced by restore of <backup> (job <id>)`. */
  note: string;
}

/** The earlier versions of `target` that restores and copies kept (RESTORE_KEEP_PREVIOUS), oldest first. */
export async function listPreviousDatabases(
  client: pg.ClientBase,
  target: string,
  ledger: DatabaseLedger,
): Promise<PreviousDatabase[]> {
  const { rows } = await client.query<{ datname: string; oid: number; size: string | null; description: string }>(
    `SELECT d.datname, d.oid::int AS oid, CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END AS size,
            shobj_description(d.oid, 'pg_database') AS description
       FROM pg_database d WHERE shobj_description(d.oid, 'pg_database') LIKE $1 ORDER BY d.datname`,
    [`${PREVIOUS_MARK}%`], // the mark holds no LIKE wildcards
  );
  const mark = previousMark(target);
  const previous: PreviousDatabase[] = [];
  for (const row of rows.filter((candidate) => candidate.description.startsWith(mark))) {
    const record = await ledger.get(row.datname);
    const proven = record?.kind === 'previous' && record.oid === row.oid && record.target === target;
    previous.push({
      name: row.datname,
      proven,
      sizeBytes: row.size === null ? null : Number(row.size),
      note: row.description.slice(mark.length),
    });
  }
  return previous;
}

/** A swap that died after closing the target leaves it refusing connections; open it again. */
async function reopenIfClosedByUs(client: pg.Client, record: CreatedDatabase): Promise<void> {
  if (!record.targetClosed) return;
  const { rows } = await client.query<{ datallowconn: boolean }>(
    'SELECT datallowconn FROM pg_database WHERE datname = $1',
    [record.target],
  );
  if (rows[0] && !rows[0].datallowconn) {
    await client.query(`ALTER DATABASE ${quoteIdent(record.target)} ALLOW_CONNECTIONS true`);
  }
}

/** Drops a dead job's database (and reopens its target, if it died mid-swap). Hold the target's lock. */
export async function discardLeftover(
  client: pg.Client,
  leftover: LeftoverDatabase,
  ledger: DatabaseLedger,
): Promise<void> {
  await reopenIfClosedByUs(client, leftover.record);
  await dropCreatedDatabase(client, leftover.name, ledger);
}

/** The connected database's name and size, and its server's version: what the console and the API show. */
export async function describeServer(
  client: pg.ClientBase,
): Promise<{ version: string; sizeBytes: number; database: string }> {
  const { rows } = await client.query<{ version: string; size: string; database: string }>(
    "SELECT current_setting('server_version') AS version, pg_database_size(current_database())::text AS size, current_database() AS database",
  );
  return { version: rows[0]!.version, sizeBytes: Number(rows[0]!.size), database: rows[0]!.database };
}

/** The server's version as it names itself (`15.4 (Debian 15.4-1)`). */
export async function serverVersionText(client: pg.ClientBase): Promise<string> {
  return (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown';
}

/** What --all-databases backs up: every connectable, non-template database but dbops' own shadows and scratches. */
export async function backupableDatabases(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ datname: string }>(
    `SELECT datname FROM pg_database
      WHERE datallowconn AND NOT datistemplate AND datname !~ '^dbops_(shadow|scratch)_[0-9a-f]{12}$' ORDER BY datname`,
  );
  return rows.map((row) => row.datname);
}
