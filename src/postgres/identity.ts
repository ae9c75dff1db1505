import type pg from 'pg';
import { PermanentError, errorMessage } from '../errors.js';
import { quoteIdent, quoteLiteral } from './client.js';

/*
 * What belongs to a database rather than to its contents, and so is not in a pg_dump archive restored
 * without --create: per-database settings, per-role settings in it, its grants, comment, connection
 * limit, default tablespace and owner. A restore or copy replaces the database with a new one, which
 * gets these from the database it replaces (or, asked to, from the backup's source) before the swap.
 */

export interface DatabaseIdentity {
  owner: string;
  /** -1: no limit. */
  connectionLimit: number;
  tablespace: string;
  comment: string | null;
  /** The database's ACL as PostgreSQL prints it (`{=Tc/postgres,app=c/postgres}`); null: the defaults. */
  acl: string[] | null;
  /** `ALTER DATABASE … SET`: `name=value` as pg_db_role_setting keeps them. */
  settings: string[];
  /** `ALTER ROLE … IN DATABASE … SET`. */
  roleSettings: { role: string; settings: string[] }[];
}

export async function readIdentity(client: pg.ClientBase, database: string): Promise<DatabaseIdentity | undefined> {
  const { rows } = await client.query<{
    oid: number;
    owner: string;
    connlimit: number;
    tablespace: string;
    comment: string | null;
    acl: string[] | null;
  }>(
    `SELECT d.oid::int AS oid, pg_get_userbyid(d.datdba) AS owner, d.datconnlimit AS connlimit, t.spcname AS tablespace,
            shobj_description(d.oid, 'pg_database') AS comment, d.datacl::text[] AS acl
       FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1`,
    [database],
  );
  const row = rows[0];
  if (!row) return undefined;
  const settings = await client.query<{ role: string | null; config: string[] }>(
    `SELECT r.rolname AS role, s.setconfig AS config FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
      WHERE s.setdatabase = $1 ORDER BY r.rolname NULLS FIRST`,
    [row.oid],
  );
  return {
    owner: row.owner,
    connectionLimit: row.connlimit,
    tablespace: row.tablespace,
    comment: row.comment,
    acl: row.acl,
    settings: settings.rows.find((setting) => setting.role === null)?.config ?? [],
    roleSettings: settings.rows
      .filter((setting) => setting.role !== null)
      .map((setting) => ({ role: setting.role!, settings: setting.config })),
  };
}

/** The roles an identity names: they must exist where it is applied. */
export function rolesOf(identity: DatabaseIdentity): string[] {
  const grantees = (identity.acl ?? [])
    .map((item) => parseAclItem(item).grantee)
    .filter((grantee): grantee is string => grantee !== null);
  return [...new Set([identity.owner, ...grantees, ...identity.roleSettings.map((setting) => setting.role)])];
}

/** Options for CREATE DATABASE that carry the identity: owner and default tablespace. */
export function creationClause(identity: DatabaseIdentity | undefined, currentUser: string): string {
  if (!identity) return '';
  const parts: string[] = [];
  if (identity.owner !== currentUser) parts.push(`OWNER ${quoteIdent(identity.owner)}`);
  if (identity.tablespace !== 'pg_default') parts.push(`TABLESPACE ${quoteIdent(identity.tablespace)}`);
  return parts.join(' ');
}

/** Settings whose value is a list, kept flattened with each element quoted as an identifier would be. */
const LIST_SETTINGS = new Set([
  'search_path',
  'temp_tablespaces',
  'session_preload_libraries',
  'shared_preload_libraries',
  'local_preload_libraries',
  'unix_socket_directories',
]);

/** `name=value` from pg_db_role_setting, as the right side of `SET name TO …` (as pg_dumpall writes it). */
export function settingClause(setting: string): string {
  const equals = setting.indexOf('=');
  const name = setting.slice(0, equals);
  const value = setting.slice(equals + 1);
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new PermanentError(`unexpected setting name "${name}"`);
  if (!LIST_SETTINGS.has(name.toLowerCase())) return `${name} TO ${quoteLiteral(value)}`;
  const elements: string[] = [];
  for (const match of value.matchAll(/\s*(?:"((?:[^"]|"")*)"|([^,\s][^,]*?))\s*(?:,|$)/g)) {
    const element = match[1] !== undefined ? match[1].replace(/""/g, '"') : match[2];
    if (element !== undefined) elements.push(quoteLiteral(element));
  }
  return `${name} TO ${elements.join(', ') || "''"}`;
}

const PRIVILEGES: Record<string, string> = { C: 'CREATE', c: 'CONNECT', T: 'TEMPORARY' };

/** `grantee=privileges/grantor`; an empty grantee is PUBLIC; `*` after a letter is the grant option. */
export function parseAclItem(item: string): {
  grantee: string | null;
  privileges: { privilege: string; grantOption: boolean }[];
} {
  const match = /^("(?:[^"]|"")*"|[^=]*)=([A-Za-z*]*)\//.exec(item);
  if (!match) throw new PermanentError(`unexpected ACL item "${item}"`);
  const rawGrantee = match[1]!;
  const grantee =
    rawGrantee === '' ? null : rawGrantee.startsWith('"') ? rawGrantee.slice(1, -1).replace(/""/g, '"') : rawGrantee;
  const privileges: { privilege: string; grantOption: boolean }[] = [];
  for (const [, letter, star] of match[2]!.matchAll(/([A-Za-z])(\*?)/g)) {
    const privilege = PRIVILEGES[letter!];
    if (privilege) privileges.push({ privilege, grantOption: star === '*' });
  }
  return { grantee, privileges };
}

/** The statements that give `database` the identity (but for owner and tablespace, given at creation, and the comment, set at the swap). */
export function identityStatements(database: string, identity: DatabaseIdentity): string[] {
  const db = quoteIdent(database);
  const statements = [`ALTER DATABASE ${db} CONNECTION LIMIT ${identity.connectionLimit}`];
  for (const setting of identity.settings) statements.push(`ALTER DATABASE ${db} SET ${settingClause(setting)}`);
  for (const { role, settings } of identity.roleSettings) {
    for (const setting of settings)
      statements.push(`ALTER ROLE ${quoteIdent(role)} IN DATABASE ${db} SET ${settingClause(setting)}`);
  }
  if (identity.acl !== null) {
    statements.push(
      `REVOKE ALL ON DATABASE ${db} FROM PUBLIC`,
      `REVOKE ALL ON DATABASE ${db} FROM ${quoteIdent(identity.owner)}`,
    );
    for (const item of identity.acl) {
      const { grantee, privileges } = parseAclItem(item);
      const to = grantee === null ? 'PUBLIC' : quoteIdent(grantee);
      for (const withOption of [false, true]) {
        const chosen = privileges
          .filter((privilege) => privilege.grantOption === withOption)
          .map((privilege) => privilege.privilege);
        if (chosen.length > 0)
          statements.push(
            `GRANT ${chosen.join(', ')} ON DATABASE ${db} TO ${to}${withOption ? ' WITH GRANT OPTION' : ''}`,
          );
      }
    }
  }
  return statements;
}

/** Roles among `roles` that this server lacks. */
export async function missingRoles(client: pg.ClientBase, roles: string[]): Promise<string[]> {
  const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [
    roles,
  ]);
  const present = new Set(rows.map((row) => row.rolname));
  return roles.filter((role) => !present.has(role));
}

/** Gives the (new, not yet visible) database the identity; a statement the server refuses fails the job. */
export async function applyIdentity(
  client: pg.ClientBase,
  database: string,
  identity: DatabaseIdentity,
): Promise<void> {
  for (const statement of identityStatements(database, identity)) {
    try {
      await client.query(statement);
    } catch (error) {
      throw new PermanentError(
        `cannot give the new database the old one's identity (${statement.replace(/ "dbops_shadow_[0-9a-f]+"/, '')}): ${errorMessage(error)}`,
      );
    }
  }
}
