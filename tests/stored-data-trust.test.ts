import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, dropDatabase, fingerprint, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';
import { sealFor } from '../src/backups/signing.js';
import { newUnpublishedMarker } from '../src/backups/store.js';
import { S3Server } from './helpers/s3.js';
import { basic, startTestServer } from './helpers/server.js';
import { pgUrl } from './helpers/services.js';

/*
 * Issue 22, each written as the attack: someone who can reach 127.0.0.1, write to a bucket or a store
 * directory, or own the directory root runs manage-db in. dbops must act only on what it can prove its own.
 */

interface Backup {
  backupId: string;
  path: string;
}

const manifestFile = (rig: Rig, id: string) => path.join(rig.backupDir, `${id}.json`);
const readManifest = (rig: Rig, id: string) =>
  JSON.parse(readFileSync(manifestFile(rig, id), 'utf8')) as Record<string, unknown>;

describe("stored data is trusted only once proven dbops' own (file store)", () => {
  let rig: Rig;
  let target: Fingerprint;
  let backup: Backup;
  const evil = `sec_evil_${randomBytes(3).toString('hex')}`;

  const backupJson = async (env = 'source', extra: Record<string, string> = {}): Promise<Backup> => {
    const run = await rig.cli(['backup', '--env', env, '--wait', '--json'], extra);
    expect(run.exitCode, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as Backup;
  };

  beforeAll(async () => {
    rig = await Rig.create();
    target = await sourceAndTarget(rig);
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    backup = await backupJson();
  });
  afterAll(async () => {
    await rig?.cleanup();
    await sql('postgres', `DROP ROLE IF EXISTS ${evil}`).catch(() => undefined);
  });

  it('a manifest edited on disk (a superuser role added) is refused by restore, verify and prune, each saying why; no role is created', async () => {
    const edited = readManifest(rig, backup.backupId);
    edited.roles = [
      ...((edited.roles as unknown[]) ?? []),
      {
        name: evil,
        login: true,
        superuser: true,
        inherit: true,
        createRole: true,
        createDb: true,
        replication: true,
        bypassRls: true,
        connectionLimit: -1,
        validUntil: null,
        memberOf: [{ role: 'pg_execute_server_program', admin: false }],
      },
    ];
    const original = readFileSync(manifestFile(rig, backup.backupId), 'utf8');
    writeFileSync(manifestFile(rig, backup.backupId), JSON.stringify(edited));
    try {
      const restore = await rig.cli([
        'restore',
        '--env',
        'target',
        '--backup',
        backup.backupId,
        '--create-roles',
        '--wait',
      ]);
      expect(restore.exitCode).toBe(1);
      expect(restore.stderr).toContain(
        `backup "${backup.backupId}" in the file store is not dbops' own: its signature does not match its content`,
      );
      expect((await sql('postgres', `SELECT count(*)::int AS n FROM pg_roles WHERE rolname = '${evil}'`))[0]).toEqual({
        n: 0,
      });
      expect(await fingerprint(rig.db('target'))).toEqual(target);

      const verify = await rig.cli(['backups', 'verify', backup.backupId, '--wait']);
      expect(verify.exitCode).toBe(1);
      expect(verify.stderr).toContain("not dbops' own: its signature does not match its content");

      const prune = await rig.cli(['backups', 'prune', '--env', 'source', '--policy', 'last=1', '--local', '--json']);
      expect(prune.exitCode, prune.stderr).toBe(0);
      const pruned = JSON.parse(prune.stdout) as {
        skipped: { name: string; reason: string }[];
        environments: unknown[];
      };
      expect(pruned.skipped).toEqual([
        expect.objectContaining({
          name: `${backup.backupId}.json`,
          reason: expect.stringContaining('signature does not match'),
        }),
      ]);
      expect(pruned.environments).toEqual([]);
      expect(readdirSync(rig.backupDir)).toContain(path.basename(backup.path)); // nothing deleted

      const list = await rig.cli(['backups', 'list']);
      expect(list.stderr).toContain(
        `skipped ${backup.backupId}.json in the file store: its signature does not match its content`,
      );
      // Not even --resign signs a manifest changed after this host's key signed it.
      const resign = await rig.cli(['backups', 'sign', '--all', '--resign', '--json']);
      expect(resign.exitCode, resign.stderr).toBe(0);
      expect(JSON.parse(resign.stdout)).toEqual([]);
    } finally {
      writeFileSync(manifestFile(rig, backup.backupId), original);
    }
  });

  it('a backup whose source had a SUPERUSER role comes back with --create-roles without it, and the result says so', async () => {
    await sql(
      'postgres',
      `CREATE ROLE ${evil} LOGIN SUPERUSER REPLICATION BYPASSRLS CREATEDB; GRANT pg_execute_server_program TO ${evil}`,
    );
    await sql(rig.db('source'), `CREATE TABLE owned_by_evil (id int); ALTER TABLE owned_by_evil OWNER TO ${evil}`);
    const made = await backupJson();
    await sql(rig.db('source'), 'DROP TABLE owned_by_evil');
    await sql('postgres', `DROP ROLE ${evil}`);
    const restore = await rig.cli([
      'restore',
      '--env',
      'target',
      '--backup',
      made.backupId,
      '--create-roles',
      '--wait',
      '--json',
    ]);
    expect(restore.exitCode, restore.stderr).toBe(0);
    const result = JSON.parse(restore.stdout) as {
      createdRoles: string[];
      withheldFromRoles: { role: string; attributes: string[]; memberships: string[] }[];
    };
    expect(result.createdRoles).toEqual([evil]);
    expect(result.withheldFromRoles).toEqual([
      { role: evil, attributes: ['SUPERUSER', 'REPLICATION', 'BYPASSRLS', 'CREATEDB'], memberships: [] },
    ]);
    const [role] = await sql(
      'postgres',
      `SELECT rolsuper, rolreplication, rolbypassrls, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword IS NULL AS nopassword,
              (SELECT count(*)::int FROM pg_auth_members m WHERE m.member = a.oid) AS memberships
         FROM pg_authid a WHERE rolname = '${evil}'`,
    );
    expect(role).toEqual({
      rolsuper: false,
      rolreplication: false,
      rolbypassrls: false,
      rolcreatedb: false,
      rolcreaterole: false,
      rolcanlogin: true,
      nopassword: true,
      memberships: 0,
    });
    const bad = await rig.cli([
      'restore',
      '--env',
      'target',
      '--backup',
      made.backupId,
      '--create-roles',
      '--allow-role-attributes',
      'ROOT',
    ]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/^manage-db: .*allowRoleAttributes/);
    // Put the target back as the other tests expect it.
    const back = await rig.cli(['restore', '--env', 'target', '--backup', backup.backupId, '--wait']);
    expect(back.exitCode, back.stderr).toBe(0);
  });

  it('with BACKUP_ENCRYPTION_KEY set, an unencrypted archive is refused, planted or not', async () => {
    const key = randomBytes(32).toString('hex');
    const before = await fingerprint(rig.db('target'));
    // A planted manifest and archive: unsigned, so --latest passes it over and names it.
    const planted = `source-29990101t000000z-aaaaaa`;
    copyFileSync(backup.path, path.join(rig.backupDir, `${planted}.dump`));
    writeFileSync(
      manifestFile(rig, planted),
      JSON.stringify({
        ...readManifest(rig, backup.backupId),
        id: planted,
        archive: `${planted}.dump`,
        signature: undefined,
        completedAt: '2999-01-01T00:00:00.000Z',
      }),
    );
    try {
      const latest = await rig.cli(['restore', '--env', 'target', '--latest', '--from', 'source', '--local'], {
        BACKUP_ENCRYPTION_KEY: key,
      });
      expect(latest.exitCode).toBe(2);
      expect(latest.stderr).toContain(`${planted}.json in the file store: unsigned`);
      expect(await fingerprint(rig.db('target'))).toEqual(before);
      expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    } finally {
      rmSync(manifestFile(rig, planted), { force: true });
      rmSync(path.join(rig.backupDir, `${planted}.dump`), { force: true });
    }
  });

  it('with the same signing key, a signed but unencrypted backup is refused while encryption is on', async () => {
    const signingKey = randomBytes(32).toString('hex');
    const made = JSON.parse(
      (await rig.cli(['backup', '--env', 'source', '--local', '--json'], { BACKUP_SIGNING_KEY: signingKey })).stdout,
    ) as Backup;
    const before = await fingerprint(rig.db('target'));
    const run = await rig.cli(['restore', '--env', 'target', '--backup', made.backupId, '--local', '--json'], {
      BACKUP_SIGNING_KEY: signingKey,
      BACKUP_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    });
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`backup ${made.backupId} is not encrypted, and BACKUP_ENCRYPTION_KEY is set`);
    expect(await fingerprint(rig.db('target'))).toEqual(before);
  });

  it('a backup made before dbops signed (no signature) is skipped until `backups sign` vouches for it', async () => {
    const made = await backupJson();
    const manifest = readManifest(rig, made.backupId);
    delete manifest.signature;
    writeFileSync(manifestFile(rig, made.backupId), JSON.stringify(manifest));
    const refused = await rig.cli(['restore', '--env', 'target', '--backup', made.backupId]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`backup "${made.backupId}" in the file store is not dbops' own: unsigned`);
    const none = await rig.cli(['backups', 'sign']);
    expect(none.exitCode).toBe(2);
    const signed = await rig.cli(['backups', 'sign', '--all', '--json']);
    expect(signed.exitCode, signed.stderr).toBe(0);
    expect(JSON.parse(signed.stdout)).toEqual([{ id: made.backupId, store: 'file', signed: true }]);
    const restore = await rig.cli(['restore', '--env', 'target', '--backup', made.backupId, '--wait']);
    expect(restore.exitCode, restore.stderr).toBe(0);
    // An unsigned manifest whose archive does not match is not signed.
    const other = await backupJson();
    const second = readManifest(rig, other.backupId);
    delete second.signature;
    writeFileSync(manifestFile(rig, other.backupId), JSON.stringify(second));
    writeFileSync(other.path, 'not the archive');
    const mismatch = await rig.cli(['backups', 'sign', other.backupId]);
    expect(mismatch.exitCode).toBe(1);
    expect(mismatch.stdout).toContain(`NOT signed ${other.backupId} in the file store: its archive does not match it`);
    rmSync(manifestFile(rig, other.backupId));
    rmSync(other.path);
    await rig.cli(['restore', '--env', 'target', '--backup', backup.backupId, '--wait']);
  });

  it('recovery removes an archive a dead job moved into place without its manifest, and only that', async () => {
    const seal = await sealFor({ backupDir: rig.backupDir, signingKey: undefined });
    const dead = { prefix: rig.prefix, queue: 'backup', id: 'dead-job-1' };
    const orphan = 'source-20260101t000000z-0000000000aa';
    mkdirSync(path.join(rig.backupDir, '.unpublished'), { recursive: true });
    writeFileSync(path.join(rig.backupDir, `${orphan}.dump`), 'half a backup');
    writeFileSync(
      path.join(rig.backupDir, '.unpublished', `${orphan}.dump.json`),
      JSON.stringify(newUnpublishedMarker(seal, dead, orphan, `${orphan}.dump`)),
    );
    // A marker naming a published backup (its manifest was written; only the marker's removal was lost).
    writeFileSync(
      path.join(rig.backupDir, '.unpublished', `${path.basename(backup.path)}.json`),
      JSON.stringify(
        newUnpublishedMarker(seal, { ...dead, id: 'dead-job-2' }, backup.backupId, path.basename(backup.path)),
      ),
    );
    // A forged one: unsigned, naming the backup's archive.
    writeFileSync(
      path.join(rig.backupDir, '.unpublished', 'forged.json'),
      JSON.stringify({ job: dead, archive: path.basename(backup.path), pid: 1, host: 'x' }),
    );
    const worker = await rig.startWorker('backup'); // recovery runs at start
    await waitFor(
      'recovery',
      () => worker.output().includes('removed the unpublished archive of a dead worker'),
      20_000,
    );
    expect(readdirSync(rig.backupDir)).not.toContain(`${orphan}.dump`);
    expect(readdirSync(rig.backupDir)).toContain(path.basename(backup.path));
    expect(readdirSync(path.join(rig.backupDir, '.unpublished'))).toEqual(['forged.json']); // left alone, named in the log
    rmSync(path.join(rig.backupDir, '.unpublished', 'forged.json'));
    worker.process.kill('SIGTERM');
    await worker.exited;
  });

  it('malformed objects in the store (a manifest, an in-use mark) are skipped and named, never fatal to prune', async () => {
    writeFileSync(path.join(rig.backupDir, 'junk.json'), '{ not json');
    mkdirSync(path.join(rig.backupDir, '.in-use'), { recursive: true });
    writeFileSync(path.join(rig.backupDir, '.in-use', 'garbage'), '\u0000\u0001');
    try {
      const prune = await rig.cli(['backups', 'prune', '--env', 'source', '--policy', 'last=100', '--local', '--json']);
      expect(prune.exitCode, prune.stderr).toBe(0);
      expect((JSON.parse(prune.stdout) as { skipped: unknown[] }).skipped).toContainEqual({
        store: 'file',
        name: 'junk.json',
        reason: 'not JSON',
      });
    } finally {
      rmSync(path.join(rig.backupDir, 'junk.json'));
      rmSync(path.join(rig.backupDir, '.in-use', 'garbage'));
    }
  });
});

describe('a planted manifest or marker in a bucket deletes nothing of another environment', () => {
  const BUCKET = 'trust-bucket';
  let s3: S3Server;
  let rig: Rig;

  beforeAll(async () => {
    s3 = await S3Server.start([BUCKET]);
    rig = await Rig.create({ BACKUP_RETENTION: 'last=1' });
    Object.assign(rig.env, s3.env(`s3://${BUCKET}/${rig.id}?forcePathStyle=true`));
    await createDatabase(rig.db('prod'));
    await sql(rig.db('prod'), 'CREATE TABLE t (id int); INSERT INTO t VALUES (1)');
    await createDatabase(rig.db('staging'));
    rig.setEnv('production', rig.db('prod'));
    rig.setEnv('staging', rig.db('staging'));
    rig.env.PROTECTED_ENVS = 'production';
  });
  afterAll(async () => {
    await rig?.cleanup();
    await s3?.stop();
  });

  it('prune --env staging keeps production whatever a forged manifest says; a forged marker makes recovery remove nothing', async () => {
    const backupOf = async (env: string) => {
      const run = await rig.cli(['backup', '--env', env, '--local', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      return (JSON.parse(run.stdout) as Backup).backupId;
    };
    const production = await backupOf('production');
    const staging = await backupOf('staging');
    const productionManifest = JSON.parse((await s3.get(BUCKET, `${rig.id}/${production}.json`)).toString()) as Record<
      string,
      unknown
    >;
    // zz-forged.json names production's backup as staging's, to be pruned by staging's (unconfirmed) retention.
    await s3.put(
      BUCKET,
      `${rig.id}/zz-forged.json`,
      JSON.stringify({ ...productionManifest, env: 'staging', completedAt: '2000-01-01T00:00:00.000Z' }),
    );
    // A marker naming staging's manifest as an unfinished upload of a dead job of this prefix.
    await s3.put(
      BUCKET,
      `${rig.id}/.partial/${rig.prefix}/backup/66.json`,
      JSON.stringify({
        job: { prefix: rig.prefix, queue: 'backup', id: '66' },
        archive: `${staging}.json`,
        pid: 1,
        host: 'elsewhere',
      }),
    );
    await s3.put(
      BUCKET,
      `${rig.id}/.partial/${rig.prefix}/backup/67.json`,
      JSON.stringify({
        job: { prefix: rig.prefix, queue: 'backup', id: '67' },
        archive: `${staging}.dump`,
        pid: 1,
        host: 'elsewhere',
      }),
    );
    await s3.put(BUCKET, `${rig.id}/.in-use/malformed`, 'nonsense');
    const before = await s3.keys(BUCKET, `${rig.id}/`);

    const prune = await rig.cli(['backups', 'prune', '--env', 'staging', '--local', '--json']);
    expect(prune.exitCode, prune.stderr).toBe(0);
    const result = JSON.parse(prune.stdout) as { skipped: { name: string }[]; environments: { pruned: unknown[] }[] };
    expect(result.skipped.map((item) => item.name)).toEqual(['zz-forged.json']);
    expect(result.environments.flatMap((env) => env.pruned)).toEqual([]);

    const worker = await rig.startWorker('backup');
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // start-up recovery has run once the worker is ready; give it a moment more
    worker.process.kill('SIGTERM');
    await worker.exited;
    expect(worker.output()).toContain("left alone: an upload marker that is not dbops' own");
    expect(await s3.keys(BUCKET, `${rig.id}/`)).toEqual(before);
    for (const id of [production, staging]) {
      const restore = await rig.cli(['backups', 'verify', id, '--local']);
      expect(restore.exitCode, restore.stderr).toBe(0);
    }
  });

  it('a manifest edited in the bucket is refused by restore', async () => {
    const run = await rig.cli(['backup', '--env', 'staging', '--local', '--json']);
    const id = (JSON.parse(run.stdout) as Backup).backupId;
    const key = `${rig.id}/${id}.json`;
    const manifest = JSON.parse((await s3.get(BUCKET, key)).toString()) as Record<string, unknown>;
    await s3.put(
      BUCKET,
      key,
      JSON.stringify({
        ...manifest,
        identity: { ...(manifest.identity as object), settings: ['session_preload_libraries=evil'] },
      }),
    );
    const restore = await rig.cli(['restore', '--env', 'staging', '--backup', id, '--source-settings', '--local']);
    expect(restore.exitCode).toBe(1);
    expect(restore.stderr).toContain(
      `backup "${id}" in the s3 store is not dbops' own: its signature does not match its content`,
    );
  });
});

describe('downloads need a credential on every route, in every configuration', () => {
  let rig: Rig;
  let backup: Backup;
  const TOKEN = 'trust-test-token-0123456789';

  beforeAll(async () => {
    rig = await Rig.create();
    await createDatabase(rig.db('small'));
    await sql(rig.db('small'), 'CREATE TABLE t (id int); INSERT INTO t VALUES (1)');
    rig.setEnv('small', rig.db('small'));
    const run = await rig.cli(['backup', '--env', 'small', '--local', '--json']);
    backup = JSON.parse(run.stdout) as Backup;
  });
  afterAll(async () => rig?.cleanup());

  it('without DASHBOARD_USER: the console lists no download and serves none; the API wants its token', async () => {
    const server = await startTestServer(rig, { API_TOKEN: TOKEN });
    try {
      const page = await (await fetch(`${server.url}/backups`)).text();
      expect(page).toContain(backup.backupId);
      expect(page).not.toContain('/download');
      const download = await fetch(`${server.url}/backups/${backup.backupId}/download`);
      expect(download.status).toBe(403);
      expect(await download.text()).toBe(
        'downloads need the dashboard credentials: set DASHBOARD_USER and DASHBOARD_PASSWORD',
      );
      expect((await fetch(`${server.url}/api/v1/backups/${backup.backupId}/archive`)).status).toBe(401);
      const withToken = await fetch(`${server.url}/api/v1/backups/${backup.backupId}/archive`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(withToken.status).toBe(200);
      expect(Buffer.from(await withToken.arrayBuffer()).equals(readFileSync(backup.path))).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('with DASHBOARD_USER: the console serves a download only with the credentials', async () => {
    const server = await startTestServer(rig, { DASHBOARD_USER: 'ops', DASHBOARD_PASSWORD: 'secret-password' });
    try {
      expect((await fetch(`${server.url}/backups/${backup.backupId}/download`)).status).toBe(401);
      const ok = await fetch(`${server.url}/backups/${backup.backupId}/download`, {
        headers: { authorization: basic('ops', 'secret-password') },
      });
      expect(ok.status).toBe(200);
      expect(Buffer.from(await ok.arrayBuffer()).equals(readFileSync(backup.path))).toBe(true);
      expect((await fetch(`${server.url}/api/v1/backups/${backup.backupId}/archive`)).status).toBe(404); // the API is off without API_TOKEN
    } finally {
      await server.close();
    }
  });

  it('an unauthenticated visitor gets cached facts: the console does not connect to the databases per request', async () => {
    const server = await startTestServer(rig);
    const renamed = `${rig.db('small')}_moved`;
    try {
      expect(await (await fetch(`${server.url}/`)).text()).toContain('reachable</span>');
      // The database goes away: a page asked for within the cache's seconds still shows what was learnt.
      await sql('postgres', `ALTER DATABASE "${rig.db('small')}" RENAME TO "${renamed}"`);
      const again = await (await fetch(`${server.url}/`)).text();
      expect(again).toContain('<span class="ok">reachable</span>');
      expect(again).not.toContain('unreachable');
    } finally {
      await server.close();
      await sql('postgres', `ALTER DATABASE "${renamed}" RENAME TO "${rig.db('small')}"`).catch(() => undefined);
    }
    // Behind credentials, every page asks afresh.
    const authed = await startTestServer(rig, { DASHBOARD_USER: 'ops', DASHBOARD_PASSWORD: 'secret-password' });
    try {
      const headers = { authorization: basic('ops', 'secret-password') };
      expect(await (await fetch(`${authed.url}/`, { headers })).text()).toContain('<span class="ok">reachable</span>');
      await sql('postgres', `ALTER DATABASE "${rig.db('small')}" RENAME TO "${renamed}"`);
      expect(await (await fetch(`${authed.url}/`, { headers })).text()).toContain('unreachable');
    } finally {
      await authed.close();
      await sql('postgres', `ALTER DATABASE "${renamed}" RENAME TO "${rig.db('small')}"`).catch(() => undefined);
    }
  });
});

describe('configuration from places another user controls', () => {
  const cli = path.resolve(import.meta.dirname, '../bin/manage-db.cjs');
  const nobody = 65534;
  /** manage-db backup run in `dir`, with nothing of this process's environment but PATH. */
  const backupIn = (dir: string, env: string) =>
    execa('node', [cli, 'backup', '--env', env], {
      cwd: dir,
      env: { PATH: process.env.PATH!, PROTECTED_ENVS: 'none' },
      extendEnv: false,
      reject: false,
    });

  it("manage-db run by root in another user's directory ignores their .env, with a one-line warning", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-foreign-'));
    try {
      writeFileSync(path.join(dir, '.env'), `DATABASE_URL_FROM_DOTENV=postgres://u@127.0.0.1/x\nPG_BIN_DIR=${dir}\n`);
      chownSync(dir, nobody, nobody);
      chownSync(path.join(dir, '.env'), nobody, nobody);
      const run = await backupIn(dir, 'from-dotenv');
      expect(run.exitCode).toBe(2);
      expect(run.stderr).toContain(
        `dbops: ignoring .env: .env belongs to uid ${nobody}, not to this user (uid 0) or root`,
      );
      expect(run.stderr).toContain('unknown environment "from-dotenv"');
      // The same file, made root's but writable by others: still ignored.
      chownSync(path.join(dir, '.env'), 0, 0);
      chownSync(dir, 0, 0);
      chmodSync(path.join(dir, '.env'), 0o666);
      const writable = await backupIn(dir, 'from-dotenv');
      expect(writable.stderr).toContain('dbops: ignoring .env: .env is writable by anyone');
      // Its owner's own, and private: read.
      chmodSync(path.join(dir, '.env'), 0o600);
      const own = await backupIn(dir, 'nowhere');
      expect(own.stderr).toContain('(known: from-dotenv;');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('PG_BIN_DIR owned by another user is refused: none of its programs runs', async () => {
    const rig = await Rig.create();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-foreign-bin-'));
    const ran = path.join(dir, 'ran');
    try {
      for (const tool of ['pg_dump', 'pg_restore', 'psql']) {
        writeFileSync(path.join(dir, tool), `#!/bin/sh\ntouch ${ran}\necho "${tool} (PostgreSQL) 99.0"\n`, {
          mode: 0o755,
        });
        chownSync(path.join(dir, tool), nobody, nobody);
      }
      chownSync(dir, nobody, nobody);
      await createDatabase(rig.db('small'));
      rig.setEnv('small', rig.db('small'));
      const run = await rig.cli(['backup', '--env', 'small', '--local'], { PG_BIN_DIR: dir });
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain(`PG_BIN_DIR is not trusted: ${dir} belongs to uid ${nobody}`);
      expect(readdirSync(dir)).not.toContain('ran');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await rig.cleanup();
    }
  });
});

describe('names of any length and alphabet', () => {
  let rig: Rig;
  const weird = 'a=b;c/d?e#f';

  beforeAll(async () => {
    rig = await Rig.create();
  });
  afterAll(async () => {
    await rig?.cleanup();
    await dropDatabase(`${rig.dbPrefix}_${weird}`).catch(() => undefined);
  });

  it('a percent-encoded database name in DATABASE_URL_<ENV> reaches its database, through pg and the tools alike', async () => {
    const name = `${rig.dbPrefix}_${weird}`;
    await sql('postgres', `CREATE DATABASE "${name}"`);
    await sql(name, "CREATE TABLE here (note text); INSERT INTO here VALUES ('the right one')");
    rig.env.DATABASE_URL_WEIRD = pgUrl(encodeURIComponent(name));
    const backup = await rig.cli(['backup', '--env', 'weird', '--local', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const result = JSON.parse(backup.stdout) as { database: string; tableCount: number };
    expect(result).toMatchObject({ database: name, tableCount: 1 });
    // Restored into itself: the lock and the shadow (the driver) and pg_restore (libpq) meet at the same database.
    await sql(name, "UPDATE here SET note = 'changed'");
    const restore = await rig.cli([
      'restore',
      '--env',
      'weird',
      '--backup',
      (JSON.parse(backup.stdout) as Backup).backupId,
      '--local',
      '--drop-previous',
    ]);
    expect(restore.exitCode, restore.stderr).toBe(0);
    expect(await sql(name, 'SELECT note FROM here')).toEqual([{ note: 'the right one' }]);
  });
});
