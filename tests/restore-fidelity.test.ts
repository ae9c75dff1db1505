import { chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readIdentity, type DatabaseIdentity } from '../src/postgres/identity.js';
import { sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { newServer, postgresGid, postgresUid, type NewServer } from './helpers/new-server.js';
import { PG_ADMIN_URL } from './helpers/services.js';

/** What must survive: the identity, with each ACL item's grantor left out (whoever restores grants). */
async function identityOf(database: string): Promise<Omit<DatabaseIdentity, 'acl'> & { acl: string[] | null }> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    const identity = (await readIdentity(client, database))!;
    return { ...identity, acl: identity.acl?.map((item) => item.replace(/\/.*$/, '')).sort() ?? null };
  } finally {
    await client.end();
  }
}

describe('a restored or copied database keeps its identity', () => {
  let rig: Rig;
  let app: string;
  let reader: string;
  let tablespaceDir: string;
  let tablespace: string;

  beforeAll(async () => {
    rig = await Rig.create();
    app = `${rig.dbPrefix}_app`;
    reader = `${rig.dbPrefix}_reader`;
    tablespace = `${rig.dbPrefix}_space`;
    await sql('postgres', `CREATE ROLE ${app} LOGIN; CREATE ROLE ${reader} NOLOGIN`);
    tablespaceDir = mkdtempSync(path.join(os.tmpdir(), 'dbops-space-'));
    chownSync(tablespaceDir, postgresUid(), postgresGid());
    await sql('postgres', `CREATE TABLESPACE ${tablespace} LOCATION '${tablespaceDir}'`);
    await sql('postgres', `CREATE DATABASE "${rig.db('source')}"`);
    await sql(
      rig.db('source'),
      'CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, 100) i',
    );
    rig.setEnv('source', rig.db('source'));
    await databaseWithIdentity('target');
    await databaseWithIdentity('copytarget');
    rig.setEnv('fresh', rig.db('fresh'));
    for (const type of ['backup', 'restore', 'copy']) await rig.startWorker(type); // they know every environment
  });
  afterAll(async () => {
    await rig?.cleanup();
    await sql('postgres', `DROP TABLESPACE IF EXISTS ${tablespace}`).catch(() => undefined);
    await sql('postgres', `DROP ROLE IF EXISTS ${app}; DROP ROLE IF EXISTS ${reader}`).catch(() => undefined);
    rmSync(tablespaceDir, { recursive: true, force: true });
  });

  /** A database with every part of an identity set: settings, per-role settings, grants, comment, limit, owner, tablespace. */
  async function databaseWithIdentity(name: string): Promise<void> {
    const db = `"${rig.db(name)}"`;
    await sql('postgres', `CREATE DATABASE ${db} OWNER ${app} TABLESPACE ${tablespace}`);
    await sql(
      'postgres',
      [
        `ALTER DATABASE ${db} SET work_mem = '64MB'`,
        `ALTER DATABASE ${db} SET search_path = "$user", app, public`,
        `ALTER DATABASE ${db} SET statement_timeout = '5s'`,
        `ALTER ROLE ${app} IN DATABASE ${db} SET work_mem = '32MB'`,
        `REVOKE ALL ON DATABASE ${db} FROM PUBLIC`,
        `GRANT CONNECT ON DATABASE ${db} TO ${reader}`,
        `GRANT TEMPORARY ON DATABASE ${db} TO ${reader} WITH GRANT OPTION`,
        `COMMENT ON DATABASE ${db} IS 'the app''s database'`,
        `ALTER DATABASE ${db} CONNECTION LIMIT 42`,
      ].join('; '),
    );
    rig.setEnv(name, rig.db(name));
  }

  it('a restore keeps the target database’s settings, role settings, grants, comment, limit, owner and tablespace', async () => {
    const before = await identityOf(rig.db('target'));
    expect(before).toMatchObject({ owner: app, connectionLimit: 42, tablespace, comment: "the app's database" });
    expect(before.settings).toEqual(['work_mem=64MB', 'search_path="$user", app, public', 'statement_timeout=5s']);
    expect(before.roleSettings).toEqual([{ role: app, settings: ['work_mem=32MB'] }]);

    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const restore = await rig.cli(['restore', '--env', 'target', '--backup', backupId, '--wait', '--json']);
    expect(restore.exitCode, restore.stderr).toBe(0);
    expect(await identityOf(rig.db('target'))).toEqual(before);
    expect(await sql(rig.db('target'), 'SELECT count(*)::int AS n FROM items')).toEqual([{ n: 100 }]);
    // The settings act: a session in the restored database gets them.
    expect(
      await sql(rig.db('target'), "SELECT current_setting('work_mem') AS w, current_setting('search_path') AS p"),
    ).toEqual([{ w: '64MB', p: '"$user", app, public' }]);
  });

  it('a copy keeps them too', async () => {
    const before = await identityOf(rig.db('copytarget'));
    const copy = await rig.cli(['copy', '--from', 'source', '--to', 'copytarget', '--wait', '--json']);
    expect(copy.exitCode, copy.stderr).toBe(0);
    expect(await identityOf(rig.db('copytarget'))).toEqual(before);
  });

  it('--source-settings gives a database the identity its backup recorded, in an environment that never had it', async () => {
    const backup = await rig.cli(['backup', '--env', 'target', '--wait', '--json']);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const plain = await rig.cli(['restore', '--env', 'fresh', '--backup', backupId, '--wait', '--json']);
    expect(plain.exitCode, plain.stderr).toBe(0);
    expect((await identityOf(rig.db('fresh'))).settings).toEqual([]); // nothing to keep: a new database
    const restored = await rig.cli([
      'restore',
      '--env',
      'fresh',
      '--backup',
      backupId,
      '--source-settings',
      '--wait',
      '--json',
    ]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await identityOf(rig.db('fresh'))).toEqual(await identityOf(rig.db('target')));
  });
});

describe('a new server is one command away: restore --create-roles', () => {
  let rig: Rig;
  let server: NewServer;
  let owner: string;
  let reader: string;
  const onNewServer = (database: string, user = 'postgres', password = server.password) =>
    `postgres://${user}:${password}@127.0.0.1:${server.port}/${database}`;

  beforeAll(async () => {
    rig = await Rig.create();
    owner = `${rig.dbPrefix}_owner`;
    reader = `${rig.dbPrefix}_reader`;
    await sql(
      'postgres',
      `CREATE ROLE ${reader} NOLOGIN; CREATE ROLE ${owner} LOGIN CONNECTION LIMIT 20 IN ROLE ${reader}`,
    );
    await sql('postgres', `CREATE DATABASE "${rig.db('prod')}" OWNER ${owner}`);
    await sql(
      rig.db('prod'),
      `CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (1, 'first'), (2, 'second');
       ALTER TABLE orders OWNER TO ${owner}; GRANT SELECT ON orders TO ${reader}`,
    );
    rig.setEnv('prod', rig.db('prod'));
    server = await newServer();
    rig.env.DATABASE_URL_DR = onNewServer('app');
    rig.env.DATABASE_URL_DR_PLAIN = onNewServer('app_plain');
    for (const type of ['backup', 'restore']) await rig.startWorker(type);
  });
  afterAll(async () => {
    await rig?.cleanup();
    server?.stop();
    await sql('postgres', `DROP ROLE IF EXISTS ${owner}; DROP ROLE IF EXISTS ${reader}`).catch(() => undefined);
  });

  it('records the roles the backup needs, without passwords', async () => {
    const backup = await rig.cli(['backup', '--env', 'prod', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const roles = (
      JSON.parse(readFileSync(path.join(rig.backupDir, `${backupId}.json`), 'utf8')) as { roles: { name: string }[] }
    ).roles;
    expect(roles.map((role) => role.name)).toEqual([owner, reader]);
    expect(JSON.stringify(roles)).not.toMatch(/password|SCRAM|md5/i);
  });

  it('fails cleanly without the roles, creates them with --create-roles, and the application logs in once its password is set', async () => {
    const { backupId } = JSON.parse((await rig.cli(['backup', '--env', 'prod', '--wait', '--json'])).stdout) as {
      backupId: string;
    };
    const without = await rig.cli(['restore', '--env', 'dr', '--backup', backupId, '--wait']);
    expect(without.exitCode).toBe(1);
    expect(without.stderr).toMatch(/role "t_[0-9a-f]+_owner" does not exist/);

    const restored = await rig.cli([
      'restore',
      '--env',
      'dr',
      '--backup',
      backupId,
      '--create-roles',
      '--wait',
      '--json',
    ]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect((JSON.parse(restored.stdout) as { createdRoles: string[] }).createdRoles).toEqual([owner, reader]);

    const admin = new pg.Client({ connectionString: onNewServer('app') });
    await admin.connect();
    try {
      const [role] = (
        await admin.query(
          `SELECT rolcanlogin, rolconnlimit, rolpassword IS NULL AS nopassword FROM pg_authid WHERE rolname = $1`,
          [owner],
        )
      ).rows;
      expect(role).toEqual({ rolcanlogin: true, rolconnlimit: 20, nopassword: true });
      expect((await admin.query(`SELECT pg_has_role($1, $2, 'MEMBER') AS member`, [owner, reader])).rows).toEqual([
        { member: true },
      ]);
      expect((await admin.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'orders'`)).rows).toEqual([
        { tableowner: owner },
      ]);
      await admin.query(`ALTER ROLE ${owner} PASSWORD 'app-password-1'`);
    } finally {
      await admin.end();
    }
    const application = new pg.Client({ connectionString: onNewServer('app', owner, 'app-password-1') });
    await application.connect();
    try {
      expect((await application.query('SELECT note FROM orders ORDER BY id')).rows).toEqual([
        { note: 'first' },
        { note: 'second' },
      ]);
    } finally {
      await application.end();
    }

    // A second run creates nothing: existing roles are never altered.
    const again = await rig.cli(['restore', '--env', 'dr', '--backup', backupId, '--create-roles', '--wait', '--json']);
    expect((JSON.parse(again.stdout) as { createdRoles: string[] }).createdRoles).toEqual([]);
  });

  it('--no-owner restores where the roles must not exist: everything owned by the restoring role', async () => {
    const { backupId } = JSON.parse((await rig.cli(['backup', '--env', 'prod', '--wait', '--json'])).stdout) as {
      backupId: string;
    };
    const restored = await rig.cli([
      'restore',
      '--env',
      'dr-plain',
      '--backup',
      backupId,
      '--no-owner',
      '--wait',
      '--json',
    ]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    const admin = new pg.Client({ connectionString: onNewServer('app_plain') });
    await admin.connect();
    try {
      expect((await admin.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'orders'`)).rows).toEqual([
        { tableowner: 'postgres' },
      ]);
      expect((await admin.query('SELECT count(*)::int AS n FROM orders')).rows).toEqual([{ n: 2 }]);
    } finally {
      await admin.end();
    }
  });
});
