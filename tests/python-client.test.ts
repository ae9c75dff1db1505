import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../src/server/app.js';
import { createDatabase, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';
import { ForeignProducer } from './helpers/foreign.js';
import { pgUrl } from './helpers/services.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const PACKAGE = path.join(ROOT, 'clients/python');
const TOKEN = 'python-client-token-0123456789';
/** Debian's Python, not whatever python3 is first on PATH. */
const PYTHON = '/usr/bin/python3';

/** A port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/*
 * Issue 25: the Python package, installed with pip into a fresh virtual environment from this checkout
 * (no package index), run against a real dbops: the client, the async client, the Flask extension
 * through Flask's CLI runner, and each error provoked for real.
 */
describe('the Python package (clients/python), pip-installed into a fresh venv, against the real server and workers', () => {
  let rig: Rig;
  let server: RunningServer;
  let noRedis: RunningServer;
  let notJson: Server;
  let venv: string;
  let foreign: ForeignProducer;
  const env: Record<string, string> = {};

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'target', JOB_ATTEMPTS: '1' });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    await sql('postgres', `CREATE DATABASE "${rig.db('target')}"`);
    rig.setEnv('target', rig.db('target'));
    await createDatabase(rig.db('flaskdb'));
    rig.setEnv('flaskdb', rig.db('flaskdb'));
    for (const type of ['backup', 'restore', 'maintenance']) await rig.startWorker(type);
    server = await startTestServer(rig, { API_TOKEN: TOKEN });
    noRedis = await startTestServer(rig, { API_TOKEN: TOKEN, REDIS_URL: `redis://127.0.0.1:${await closedPort()}` });
    notJson = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>'),
    );
    await new Promise<void>((resolve) => notJson.listen(0, '127.0.0.1', resolve));

    // Another BullMQ producer's jobs (as bullmq-python adds them: BullMQ's numeric ids, no options): a
    // copy that waits (no copy worker runs), a maintenance job that fails (no such table).
    foreign = new ForeignProducer(rig);
    const waiting = await foreign.add('copy', { from: 'app', to: 'target', confirm: 'target' });
    const failing = await foreign.add('maintenance', { env: 'app', action: 'vacuum', table: 'public.absent' });

    venv = await mkdtemp(path.join(os.tmpdir(), 'dbops-venv-'));
    await execa(PYTHON, ['-m', 'venv', '--system-site-packages', venv]);
    Object.assign(env, {
      PATH: `${venv}/bin:/usr/bin:/bin`,
      HOME: venv,
      PYTHONDONTWRITEBYTECODE: '1',
      DBOPS_URL: server.url,
      DBOPS_API_TOKEN: TOKEN,
      DBOPS_URL_STOPPED: `http://127.0.0.1:${await closedPort()}`,
      DBOPS_URL_NO_REDIS: noRedis.url,
      DBOPS_URL_NOT_JSON: `http://127.0.0.1:${(notJson.address() as { port: number }).port}`,
      DBOPS_NUMERIC_WAITING: `copy/${waiting.id}`,
      DBOPS_NUMERIC_FAILING: `maintenance/${failing.id}`,
      FLASK_APP_DIR: path.join(ROOT, 'tests/fixtures/flask-app'),
      FLASK_MIGRATIONS: path.join(ROOT, 'tests/fixtures/flask-app/migrations'),
      FLASK_DATABASE_URL: pgUrl(rig.db('flaskdb')).replace(/^postgres:/, 'postgresql:'),
    });
  }, 180_000);
  afterAll(async () => {
    await server?.close();
    await noRedis?.close();
    notJson?.close();
    await foreign?.close();
    await rig?.cleanup();
    if (venv) await rm(venv, { recursive: true, force: true });
  });

  const python = (args: string[], cwd = path.join(PACKAGE, 'tests')) =>
    execa(path.join(venv, 'bin/python'), args, {
      cwd,
      env,
      extendEnv: false,
      reject: false,
      all: true,
      timeout: 600_000,
    });

  it("installs with pip from the checkout with no package index, as a typed package of the project's version", async () => {
    const install = await execa(path.join(venv, 'bin/pip'), ['install', '--no-cache-dir', PACKAGE], {
      env: { ...env, PIP_NO_INDEX: '1', PIP_DISABLE_PIP_VERSION_CHECK: '1' },
      extendEnv: false,
      reject: false,
      all: true,
    });
    expect(install.exitCode, install.all).toBe(0);
    const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const shown = await python(
      [
        '-c',
        'import dbops_client, importlib.metadata as m; print(dbops_client.__version__, m.version("dbops-client"))',
      ],
      venv,
    );
    expect(shown.all).toBe(`${version} ${version}`);
    const typed = await python(
      [
        '-c',
        'import dbops_client, os; print(os.path.exists(os.path.join(os.path.dirname(dbops_client.__file__), "py.typed")))',
      ],
      venv,
    );
    expect(typed.all).toBe('True');
  }, 120_000);

  it.each(['test_client', 'test_async', 'test_errors', 'test_flask'])(
    'passes %s against the real dbops',
    async (module) => {
      const run = await python(['-m', 'unittest', '-v', module]);
      expect(run.exitCode, run.all).toBe(0);
      expect(run.all).toMatch(/^OK$/m);
      expect(run.all).not.toMatch(/skipped/);
    },
    600_000,
  );

  it('type-checks with mypy --strict', async () => {
    const mypy = await execa('mypy', [], {
      cwd: PACKAGE,
      reject: false,
      all: true,
      env: { ...env, MYPY_CACHE_DIR: path.join(venv, 'mypy-cache') },
      extendEnv: false,
    });
    expect(mypy.exitCode, mypy.all).toBe(0);
    expect(mypy.all).toMatch(/^Success: no issues found in \d+ source files$/m);
  }, 300_000);
});
