import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../src/server/app.js';
import { loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const TOKEN = 'python-client-token-0123456789';

describe('the Python client (clients/python), with python3, against the real server and workers', () => {
  let rig: Rig;
  let server: RunningServer;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'target' });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    await sql('postgres', `CREATE DATABASE "${rig.db('target')}"`);
    rig.setEnv('target', rig.db('target'));
    for (const type of ['backup', 'restore', 'maintenance']) await rig.startWorker(type);
    server = await startTestServer(rig, { API_TOKEN: TOKEN });
  });
  afterAll(async () => {
    await server?.close();
    await rig?.cleanup();
  });

  it('passes its unit tests: backup, get, restore with confirm, refusals with field names, 401, a failed job', async () => {
    const run = await execa('python3', ['-m', 'unittest', '-v', 'tests/test_client.py'], {
      cwd: path.join(ROOT, 'clients/python'),
      env: { PATH: process.env.PATH!, DBOPS_URL: server.url, DBOPS_API_TOKEN: TOKEN, PYTHONDONTWRITEBYTECODE: '1' },
      extendEnv: false,
      reject: false,
      all: true,
      timeout: 300_000,
    });
    expect(run.exitCode, run.all).toBe(0);
    expect(run.all).toMatch(/^Ran 7 tests in /m);
    expect(run.all).toMatch(/^OK$/m);
  });
});
