import { readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../src/server/app.js';
import { ForeignProducer } from './helpers/foreign.js';
import { newServer, type NewServer } from './helpers/new-server.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const TOKEN = 'all-databases-token-0123456789';

interface AllResult {
  env: string;
  allDatabases: true;
  backups: { backupId: string; database: string }[];
  roles: string[];
  rolesFile: string;
}

/** Every database of a server of the test's own (the shared test server's come and go with other tests). */
describe('backup --all-databases', () => {
  let rig: Rig;
  let server: NewServer;
  let http: RunningServer;
  let foreign: ForeignProducer;

  /** Runs statements one by one (CREATE DATABASE refuses a multi-statement query's implicit transaction). */
  const onServer = async (database: string, text: string) => {
    const client = new pg.Client({ connectionString: server.url(database) });
    await client.connect();
    try {
      for (const statement of text.split(';')) await client.query(statement);
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    rig = await Rig.create();
    server = await newServer();
    await onServer('postgres', 'CREATE DATABASE one; CREATE DATABASE two; CREATE ROLE app_owner LOGIN');
    await onServer('one', 'CREATE TABLE a (id int); INSERT INTO a VALUES (1); ALTER TABLE a OWNER TO app_owner');
    await onServer('two', 'CREATE TABLE b (id int); INSERT INTO b VALUES (1), (2)');
    rig.env.DATABASE_URL_FLEET = server.url('postgres');
    await rig.startWorker('backup');
    http = await startTestServer(rig, { API_TOKEN: TOKEN });
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await http?.close();
    await foreign?.close();
    await rig?.cleanup();
    server?.stop();
  });

  it('backs up every connectable, non-template database as one parent job with a child backup each', async () => {
    const run = await rig.cli(['backup', '--env', 'fleet', '--all-databases', '--wait', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as AllResult;
    expect(result).toMatchObject({ env: 'fleet', allDatabases: true });
    expect(result.backups.map((backup) => backup.database)).toEqual(['one', 'postgres', 'two']);
    expect(result.roles).toContain('app_owner');
    const serverRoles = JSON.parse(readFileSync(path.join(rig.backupDir, result.rolesFile), 'utf8')) as {
      name: string;
      login: boolean;
    }[];
    expect(serverRoles).toContainEqual(expect.objectContaining({ name: 'app_owner', login: true }));
    expect(JSON.stringify(serverRoles)).not.toMatch(/password|SCRAM/i);
    for (const backup of result.backups) {
      const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${backup.backupId}.json`), 'utf8')) as {
        env: string;
        database: string;
        roles: { name: string }[];
      };
      expect(manifest).toMatchObject({ env: 'fleet', database: backup.database });
      expect(backup.backupId).toMatch(
        backup.database === 'postgres' ? /^fleet-\d/ : new RegExp(`^fleet-${backup.database}-\\d`),
      );
    }
    // Each child is an ordinary backup job of the backup queue, and the parent waited for all of them.
    const children = (await foreign.queue('backup').getCompleted()).filter((job) => job.id?.startsWith('backup-all-'));
    expect(children.map((job) => job.data.database).sort()).toEqual(['one', 'postgres', 'two']);

    const listed = await rig.cli(['backups', 'list', '--env', 'FLEET']);
    const databases = listed.stdout
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((line) => line.split(/\s{2,}/)[2]); // aligned columns: ID, ENV, DATABASE…
    expect(databases).toEqual(['one', 'postgres', 'two']); // grouped by database
  });

  it('picks up new databases at each run, from the HTTP API and from another producer alike', async () => {
    await onServer('postgres', 'CREATE DATABASE three');
    const response = await fetch(`${http.url}/api/v1/jobs/backup`, {
      method: 'POST',
      body: JSON.stringify({ env: 'fleet', allDatabases: true }),
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    const overHttp = await foreign.settled('backup', id);
    expect(overHttp.state, overHttp.failedReason).toBe('completed');
    expect((overHttp.result as AllResult).backups.map((backup) => backup.database)).toEqual([
      'one',
      'postgres',
      'three',
      'two',
    ]);

    const plain = await foreign.add('backup', { env: 'fleet', allDatabases: true }); // a numeric id, no flow
    const outcome = await foreign.settled('backup', plain.id!);
    expect(outcome.state, outcome.failedReason).toBe('completed');
    expect((outcome.result as AllResult).backups).toHaveLength(4);
  });

  it('a schedule backs up all databases too', async () => {
    const added = await rig.cli([
      'schedule',
      'add',
      'nightly-fleet',
      '--cron',
      '0 3 * * *',
      'backup',
      '--env',
      'fleet',
      '--all-databases',
    ]);
    expect(added.exitCode, added.stderr).toBe(0);
    const [scheduler] = await foreign.queue('backup').getJobSchedulers();
    expect(scheduler?.template?.data).toMatchObject({ env: 'fleet', allDatabases: true });
  });

  it("retention treats each database's chain on its own", async () => {
    const pruned = await rig.cli(['backups', 'prune', '--env', 'fleet', '--policy', 'last=1', '--wait', '--json']);
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    const chains = (
      JSON.parse(pruned.stdout) as { environments: { database: string; kept: unknown[]; pruned: unknown[] }[] }
    ).environments;
    expect(chains.map((chain) => [chain.database, chain.kept.length, chain.pruned.length])).toEqual([
      ['one', 1, 2],
      ['postgres', 1, 2],
      ['three', 1, 1],
      ['two', 1, 2],
    ]);
  });

  it('a 63-byte non-ASCII database name is backed up like any other, under a bounded, readable id', async () => {
    const name = 'データベース'.repeat(3) + 'ü'.repeat(4) + 'x'; // 54 + 8 + 1 = 63 bytes
    expect(Buffer.byteLength(name)).toBe(63);
    const client = new pg.Client({ connectionString: server.url('postgres') });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE "${name}"`);
    } finally {
      await client.end();
    }
    try {
      const run = await rig.cli(['backup', '--env', 'fleet', '--all-databases', '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      const backups = (JSON.parse(run.stdout) as AllResult).backups;
      const mine = backups.find((backup) => backup.database === name);
      expect(mine?.backupId).toMatch(/^fleet-x-[0-9a-f]{12}-\d{8}t\d{6}z-[0-9a-f]{12}$/);
      const children = (await foreign.queue('backup').getCompleted()).filter((job) => job.data.database === name);
      expect(children.length).toBeGreaterThan(0);
      expect(children.every((job) => job.id!.length < 120)).toBe(true);
    } finally {
      const admin = new pg.Client({ connectionString: server.url('postgres') });
      await admin.connect();
      await admin.query(`DROP DATABASE "${name}"`).finally(() => admin.end());
    }
  });
});
