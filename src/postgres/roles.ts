import type pg from 'pg';
import { PermanentError, errorMessage } from '../errors.js';
import { quoteIdent, quoteLiteral } from './client.js';

/*
 * The roles a database's archive needs on the server it is restored to: those that own or are granted
 * anything in it, those its identity names, and the roles they belong to. A backup records them
 * (without passwords), so that a restore onto a new server can create the missing ones first.
 */

export interface RoleRecord {
  name: string;
  login: boolean;
  superuser: boolean;
  inherit: boolean;
  createRole: boolean;
  createDb: boolean;
  replication: boolean;
  bypassRls: boolean;
  /** -1: no limit. */
  connectionLimit: number;
  validUntil: string | null;
  memberOf: { role: string; admin: boolean }[];
}

/** The roles the current database's objects and `alsoNamed` need, memberships included; never the bootstrap superuser or pg_* roles. */
export async function rolesNeeded(client: pg.ClientBase, alsoNamed: string[]): Promise<RoleRecord[]> {
  const { rows } = await client.query<Omit<RoleRecord, 'memberOf'> & { memberOf: { role: string; admin: boolean }[] | null }>(
    `WITH RECURSIVE needed(oid) AS (
       SELECT refobjid FROM pg_shdepend
        WHERE refclassid = 'pg_authid'::regclass AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       UNION SELECT oid FROM pg_roles WHERE rolname = ANY($1)
       UNION SELECT m.roleid FROM pg_auth_members m JOIN needed n ON m.member = n.oid
     )
     SELECT r.rolname AS name, r.rolcanlogin AS login, r.rolsuper AS superuser, r.rolinherit AS inherit,
            r.rolcreaterole AS "createRole", r.rolcreatedb AS "createDb", r.rolreplication AS replication,
            r.rolbypassrls AS "bypassRls", r.rolconnlimit AS "connectionLimit",
            to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "validUntil",
            (SELECT json_agg(json_build_object('role', b.rolname, 'admin', m.admin_option) ORDER BY b.rolname)
               FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid) AS "memberOf"
       FROM pg_roles r
      WHERE r.oid IN (SELECT oid FROM needed) AND r.oid <> 10 AND r.rolname NOT LIKE 'pg\\_%'
      ORDER BY r.rolname`,
    [alsoNamed],
  );
  return rows.map((row) => ({ ...row, memberOf: (row.memberOf ?? []).filter((member) => !member.role.startsWith('pg_')) }));
}

function createStatement(role: RoleRecord): string {
  const flag = (on: boolean, name: string) => (on ? name : `NO${name}`);
  const attributes = [
    flag(role.login, 'LOGIN'),
    flag(role.superuser, 'SUPERUSER'),
    flag(role.inherit, 'INHERIT'),
    flag(role.createRole, 'CREATEROLE'),
    flag(role.createDb, 'CREATEDB'),
    flag(role.replication, 'REPLICATION'),
    flag(role.bypassRls, 'BYPASSRLS'),
    `CONNECTION LIMIT ${role.connectionLimit}`,
    ...(role.validUntil ? [`VALID UNTIL ${quoteLiteral(role.validUntil)}`] : []),
  ];
  return `CREATE ROLE ${quoteIdent(role.name)} WITH ${attributes.join(' ')}`;
}

/**
 * Creates the recorded roles this server lacks, with their attributes and memberships, never a password;
 * an existing role is never altered. Returns the names created.
 */
export async function createMissingRoles(client: pg.ClientBase, roles: RoleRecord[]): Promise<string[]> {
  const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [roles.map((role) => role.name)]);
  const existing = new Set(rows.map((row) => row.rolname));
  const missing = roles.filter((role) => !existing.has(role.name));
  const run = async (statement: string, role: string) => {
    try {
      await client.query(statement);
    } catch (error) {
      throw new PermanentError(`cannot create role "${role}": ${errorMessage(error)}`);
    }
  };
  for (const role of missing) await run(createStatement(role), role.name);
  for (const role of missing) {
    for (const member of role.memberOf) {
      await run(`GRANT ${quoteIdent(member.role)} TO ${quoteIdent(role.name)}${member.admin ? ' WITH ADMIN OPTION' : ''}`, role.name);
    }
  }
  return missing.map((role) => role.name);
}
