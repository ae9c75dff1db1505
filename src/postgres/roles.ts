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
  const { rows } = await client.query<
    Omit<RoleRecord, 'memberOf'> & { memberOf: { role: string; admin: boolean }[] | null }
  >(
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
  return rows.map((row) => ({
    ...row,
    memberOf: (row.memberOf ?? []).filter((member) => !member.role.startsWith('pg_')),
  }));
}

/**
 * What a role from a backup may bring only when asked for (`allowRoleAttributes`): the attributes that
 * make a role more than an application's, and (PREDEFINED_ROLES) membership in pg_* roles such as
 * pg_execute_server_program, or in any role that has one of these. LOGIN is always kept: no role ever
 * gets a password from a backup, so it can log in only once someone sets one.
 */
export const PRIVILEGED_ATTRIBUTES = ['SUPERUSER', 'REPLICATION', 'BYPASSRLS', 'CREATEROLE', 'CREATEDB'] as const;
export const ROLE_ALLOWANCES = ['LOGIN', ...PRIVILEGED_ATTRIBUTES, 'PREDEFINED_ROLES'] as const;
export type RoleAllowance = (typeof ROLE_ALLOWANCES)[number];

export interface WithheldFromRole {
  role: string;
  /** Attributes the recorded role had and the new one was created without. */
  attributes: string[];
  /** Memberships not granted: in a pg_* role, or in a role that has a withheld attribute. */
  memberships: string[];
}

const attributeOf: Record<(typeof PRIVILEGED_ATTRIBUTES)[number], keyof RoleRecord> = {
  SUPERUSER: 'superuser',
  REPLICATION: 'replication',
  BYPASSRLS: 'bypassRls',
  CREATEROLE: 'createRole',
  CREATEDB: 'createDb',
};

function createStatement(role: RoleRecord, allowed: ReadonlySet<RoleAllowance>): { sql: string; withheld: string[] } {
  const flag = (on: boolean, name: string) => (on ? name : `NO${name}`);
  const withheld = PRIVILEGED_ATTRIBUTES.filter((name) => role[attributeOf[name]] === true && !allowed.has(name));
  const keep = (name: (typeof PRIVILEGED_ATTRIBUTES)[number]) => role[attributeOf[name]] === true && allowed.has(name);
  const attributes = [
    flag(role.login, 'LOGIN'),
    flag(keep('SUPERUSER'), 'SUPERUSER'),
    flag(role.inherit, 'INHERIT'),
    flag(keep('CREATEROLE'), 'CREATEROLE'),
    flag(keep('CREATEDB'), 'CREATEDB'),
    flag(keep('REPLICATION'), 'REPLICATION'),
    flag(keep('BYPASSRLS'), 'BYPASSRLS'),
    `CONNECTION LIMIT ${Math.trunc(role.connectionLimit)}`,
    ...(role.validUntil ? [`VALID UNTIL ${quoteLiteral(role.validUntil)}`] : []),
  ];
  return { sql: `CREATE ROLE ${quoteIdent(role.name)} WITH ${attributes.join(' ')}`, withheld };
}

/** The powers a role carries on this server, itself and through every role it belongs to: privileged attributes, and PREDEFINED_ROLES for a pg_* role. */
async function powersOf(client: pg.ClientBase, role: string): Promise<Set<RoleAllowance>> {
  const { rows } = await client.query<{
    rolname: string;
    rolsuper: boolean;
    rolreplication: boolean;
    rolbypassrls: boolean;
    rolcreaterole: boolean;
    rolcreatedb: boolean;
  }>(
    `WITH RECURSIVE up(oid) AS (
       SELECT oid FROM pg_roles WHERE rolname = $1
       UNION SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid
     )
     SELECT rolname, rolsuper, rolreplication, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE oid IN (SELECT oid FROM up)`,
    [role],
  );
  const powers = new Set<RoleAllowance>();
  for (const row of rows) {
    if (row.rolname.startsWith('pg_')) powers.add('PREDEFINED_ROLES');
    if (row.rolsuper) powers.add('SUPERUSER');
    if (row.rolreplication) powers.add('REPLICATION');
    if (row.rolbypassrls) powers.add('BYPASSRLS');
    if (row.rolcreaterole) powers.add('CREATEROLE');
    if (row.rolcreatedb) powers.add('CREATEDB');
  }
  return powers;
}

/**
 * Creates the recorded roles this server lacks, with their memberships, never a password and never more
 * powerful than `allowed` lets them be (what was left out is returned); an existing role is never altered.
 */
export async function createMissingRoles(
  client: pg.ClientBase,
  roles: RoleRecord[],
  allowed: ReadonlySet<RoleAllowance> = new Set(),
): Promise<{ created: string[]; withheld: WithheldFromRole[] }> {
  const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [
    roles.map((role) => role.name),
  ]);
  const existing = new Set(rows.map((row) => row.rolname));
  const missing = roles.filter((role) => !existing.has(role.name));
  const run = async (statement: string, role: string) => {
    try {
      await client.query(statement);
    } catch (error) {
      throw new PermanentError(`cannot create role "${role}": ${errorMessage(error)}`);
    }
  };
  const withheld = new Map<string, WithheldFromRole>();
  const withheldFrom = (role: string) => {
    let entry = withheld.get(role);
    if (!entry) withheld.set(role, (entry = { role, attributes: [], memberships: [] }));
    return entry;
  };
  for (const role of missing) {
    const statement = createStatement(role, allowed);
    if (statement.withheld.length) withheldFrom(role.name).attributes.push(...statement.withheld);
    await run(statement.sql, role.name);
  }
  for (const role of missing) {
    for (const member of role.memberOf) {
      const powers = await powersOf(client, member.role);
      if (member.role.startsWith('pg_')) powers.add('PREDEFINED_ROLES');
      if ([...powers].some((power) => !allowed.has(power))) {
        withheldFrom(role.name).memberships.push(member.role);
        continue;
      }
      await run(
        `GRANT ${quoteIdent(member.role)} TO ${quoteIdent(role.name)}${member.admin ? ' WITH ADMIN OPTION' : ''}`,
        role.name,
      );
    }
  }
  return { created: missing.map((role) => role.name), withheld: [...withheld.values()] };
}

/** Every role of the server but the bootstrap superuser and the predefined pg_* ones. */
export async function userRoleNames(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ rolname: string }>(
    `SELECT rolname FROM pg_roles WHERE oid <> 10 AND rolname NOT LIKE 'pg\\_%' ORDER BY 1`,
  );
  return rows.map((row) => row.rolname);
}
