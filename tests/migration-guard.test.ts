import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../src/server/app.js';
import { createDatabase, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';
import { pgUrl } from './helpers/services.js';
import { waitFor } from './helpers/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const TOKEN = 'migration-guard-token-0123456789';

/**
 * Issue 24: a team that keeps `flask db upgrade` in its own deploy script takes dbops' lock and a
 * backup first from Python (clients/python: migration_guard); no dbops migration interleaves.
 */
describe("migration_guard: a backup, then dbops' per-database lock held from Python", () => {
  let rig: Rig;
  let server: RunningServer;

  beforeAll(async () => {
    rig = await Rig.create();
    await createDatabase(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    mkdirSync(path.join(rig.backupDir, 'sql'));
    writeFileSync(path.join(rig.backupDir, 'sql', '1_things.sql'), '-- Up Migration\nCREATE TABLE things (id int);\n');
    await rig.startWorker('backup');
    await rig.startWorker('migrate');
    server = await startTestServer(rig, { API_TOKEN: TOKEN });
  });
  afterAll(async () => {
    await server?.close();
    await rig?.cleanup();
  });

  it('holds the lock while its block runs: a dbops migration waits for it, and the backup came first', async () => {
    const script = [
      'import os, sys, time',
      'from dbops_client import Client',
      'client = Client(os.environ["DBOPS_URL"], os.environ["DBOPS_API_TOKEN"])',
      'with client.migration_guard("app", os.environ["APP_DATABASE_URL"]) as backup:',
      '    print("guarded", backup["backupId"], flush=True)',
      '    time.sleep(3)',
      '    print("releasing", int(time.time() * 1000), flush=True)',
    ].join('\n');
    const python = execa('/usr/bin/python3', ['-c', script], {
      env: {
        PATH: process.env.PATH!,
        PYTHONPATH: path.join(ROOT, 'clients/python'),
        DBOPS_URL: server.url,
        DBOPS_API_TOKEN: TOKEN,
        APP_DATABASE_URL: pgUrl(rig.db('app')),
        PYTHONDONTWRITEBYTECODE: '1',
      },
      extendEnv: false,
      all: true,
      reject: false,
    });
    let said = '';
    python.all!.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const backupId = await waitFor('the guard to hold the lock', () => /guarded (\S+)/.exec(said)?.[1], 60_000);
    const migrated = await rig.cli([
      'migrate',
      'up',
      '--env',
      'app',
      '--dir',
      path.join(rig.backupDir, 'sql'),
      '--wait',
      '--json',
    ]);
    const done = await python;
    expect(done.exitCode, done.all).toBe(0);
    expect(migrated.exitCode, migrated.stderr).toBe(0);
    const releasing = Number(/releasing (\d+)/.exec(said)![1]);
    const [applied] = await sql<{ run_on: Date }>(
      rig.db('app'),
      "SELECT run_on FROM pgmigrations WHERE name = '1_things'",
    );
    expect(applied!.run_on.getTime()).toBeGreaterThanOrEqual(releasing); // it waited for the guard
    const listed = JSON.parse((await rig.cli(['backups', 'list', '--env', 'app', '--json'])).stdout) as {
      id: string;
    }[];
    expect(listed.map((backup) => backup.id)).toContain(backupId);
  });
});
