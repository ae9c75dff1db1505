import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseIdentity, isLoopbackHost, loadConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { startServer, type RunningServer } from '../src/server/app.js';
import { Rig } from './helpers/rig.js';
import { basic, startTestServer } from './helpers/server.js';

const USER = 'ops';
const PASSWORD = 'dashboard-pass-1';
const TOKEN = 'test-token-0123456789abcdef';

/** A request with any Host, Origin or method: what a browser after DNS rebinding, or a script, sends. */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

const MUTATIONS: { method: string; path: string; body?: string }[] = [
  {
    method: 'POST',
    path: '/admin/queues/api/queues/triggers/add',
    body: JSON.stringify({ name: 'triggers', data: { env: 'app', action: 'create', sql: 'DROP TABLE x' } }),
  },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/pause' },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/retry/failed' },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/clean/completed' },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/promote' },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/empty' },
  { method: 'PUT', path: '/admin/queues/api/queues/backup/obliterate' },
];

describe('the dashboard cannot be used to change anything by a stranger', () => {
  let rig: Rig;
  let open: RunningServer;
  let guarded: RunningServer;

  beforeAll(async () => {
    rig = await Rig.create();
    rig.setEnv('app', rig.db('app'));
    open = await startTestServer(rig, { API_TOKEN: TOKEN });
    guarded = await startTestServer(rig, { DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
  });
  afterAll(async () => {
    await open?.close();
    await guarded?.close();
    await rig?.cleanup();
  });

  it('without credentials the dashboard is read-only: every mutating route is refused, cross-origin text/plain too', async () => {
    for (const { method, path, body } of MUTATIONS) {
      for (const contentType of ['application/json', 'text/plain']) {
        const response = await request(`${open.url}${path}`, {
          method,
          body,
          headers: { 'content-type': contentType, origin: 'http://attacker.example' },
        });
        expect(response.status, `${method} ${path}`).toBe(405);
      }
    }
    const queues = rig.producer().queues;
    expect(await queues.get('triggers').count()).toBe(0);
    expect(await queues.get('backup').isPaused()).toBe(false);
    const listing = await request(`${open.url}/admin/queues/api/queues`);
    expect(listing.status).toBe(200);
    expect(
      (JSON.parse(listing.body) as { queues: { readOnlyMode: boolean }[] }).queues.every((queue) => queue.readOnlyMode),
    ).toBe(true);
  });

  it('with credentials, a change needs the dashboard as its origin', async () => {
    const host = new URL(guarded.url).host;
    const auth = basic(USER, PASSWORD);
    const pause = (headers: Record<string, string>) =>
      request(`${guarded.url}/admin/queues/api/queues/backup/pause`, {
        method: 'PUT',
        headers: { authorization: auth, ...headers },
      });
    expect((await pause({ origin: 'http://attacker.example' })).status).toBe(403);
    expect((await pause({ origin: 'null' })).status).toBe(403);
    expect((await pause({ referer: 'http://attacker.example/page' })).status).toBe(403);
    expect((await pause({})).status).toBe(403);
    expect(await rig.producer().queues.get('backup').isPaused()).toBe(false);
    expect((await pause({ origin: `http://${host}` })).status).toBe(200);
    expect(await rig.producer().queues.get('backup').isPaused()).toBe(true);
    const resume = await request(`${guarded.url}/admin/queues/api/queues/backup/resume`, {
      method: 'PUT',
      headers: { authorization: auth, referer: `http://${host}/admin/queues` },
    });
    expect(resume.status).toBe(200);
    expect(await rig.producer().queues.get('backup').isPaused()).toBe(false);
    expect(
      (
        await request(`${guarded.url}/admin/queues/api/queues/backup/pause`, {
          method: 'PUT',
          headers: { origin: `http://${host}` },
        })
      ).status,
    ).toBe(401);
  });

  it('answers only to its own host name: a rebound DNS name gets 421 on every route', async () => {
    const port = new URL(open.url).port;
    for (const path of ['/healthz', '/metrics', '/admin/queues', '/admin/queues/api/queues', '/api/v1/jobs/backup/x']) {
      for (const host of [`attacker.example:${port}`, `127.attacker.example:${port}`, 'attacker.example']) {
        const response = await request(`${open.url}${path}`, { headers: { host, authorization: `Bearer ${TOKEN}` } });
        expect(response.status, `${host} ${path}`).toBe(421);
      }
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
        expect(
          (await request(`${open.url}${path}`, { headers: { host, authorization: `Bearer ${TOKEN}` } })).status,
          `${host} ${path}`,
        ).not.toBe(421);
      }
    }
    const proxied = await startTestServer(rig, { ALLOWED_HOSTS: 'dbops.example.com' });
    try {
      expect((await request(`${proxied.url}/healthz`, { headers: { host: 'dbops.example.com' } })).status).toBe(200);
      expect((await request(`${proxied.url}/healthz`, { headers: { host: 'other.example.com' } })).status).toBe(421);
    } finally {
      await proxied.close();
    }
  });

  it('tells loopback by address, not by text: 127.attacker.example is no loopback and needs credentials', async () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]'])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['127.attacker.example', 'localhost.attacker.example', '0.0.0.0', '10.0.0.1', '::ffff:10.0.0.1'])
      expect(isLoopbackHost(host), host).toBe(false);
    const config = loadConfig({ ...rig.env, HOST: '127.attacker.example', PORT: '0', LOG_LEVEL: 'silent' });
    await expect(startServer(config, createLogger(config))).rejects.toThrow(
      'refusing to listen on 127.attacker.example without DASHBOARD_USER and DASHBOARD_PASSWORD',
    );
  });
});

describe('the server at start-up', () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await Rig.create();
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('a port already taken fails the start with one line, instead of listening to nothing', async () => {
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const config = loadConfig({ ...rig.env, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'silent' });
      await expect(startServer(config, createLogger(config))).rejects.toThrow(
        `cannot listen on 127.0.0.1:${port}: the port is already in use`,
      );
    } finally {
      taken.close();
    }
  });
});

describe('configuration that fails closed and tells no secret', () => {
  it('PROTECTED_ENVS: a typo is an error; protection follows the database through every alias', () => {
    const urls = {
      DATABASE_URL_PRODUCTION: 'postgres://app:pw@127.0.0.1:5432/app',
      DATABASE_URL_PROD_ALIAS: 'postgresql://other:pw2@localhost/app',
      DATABASE_URL_STAGING: 'postgres://app:pw@127.0.0.1:5432/app_staging',
    };
    expect(() => loadConfig({ ...urls, PROTECTED_ENVS: 'prodution' })).toThrow(
      new ConfigError(
        'PROTECTED_ENVS: "prodution" is no configured environment (known: production, prod-alias, staging); use none for none',
      ),
    );
    expect([...loadConfig({ ...urls, PROTECTED_ENVS: 'production' }).protectedEnvs].sort()).toEqual([
      'prod-alias',
      'production',
    ]);
    expect([...loadConfig(urls).protectedEnvs].sort()).toEqual(['prod-alias', 'production']); // the default
    expect([...loadConfig({ ...urls, PROTECTED_ENVS: ' ' }).protectedEnvs].sort()).toEqual([
      'prod-alias',
      'production',
    ]); // empty: the default too
    expect(loadConfig({ ...urls, PROTECTED_ENVS: 'none' }).protectedEnvs.size).toBe(0);
    expect(databaseIdentity('postgres://a@[::1]:5432/app')).toBe(databaseIdentity('postgres://b@127.0.0.1/app'));
    expect(databaseIdentity('postgres://a@db1:5432/app')).not.toBe(databaseIdentity('postgres://a@db2:5432/app'));
  });

  it('a configuration error shows no credentials of any URL', () => {
    for (const value of [
      'http://:hunter2secret@cache:6379',
      'redis:/:hunter2secret@cache:6379',
      'hunter2secret@cache',
    ]) {
      let message = '';
      try {
        loadConfig({ REDIS_URL: value });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL/);
      expect(message).not.toContain('hunter2secret');
    }
  });

  it('the server does not load the backup keys', () => {
    const key = 'ab'.repeat(32);
    const env = { BACKUP_ENCRYPTION_KEY: key, BACKUP_DECRYPTION_KEYS: 'cd'.repeat(32) };
    expect(loadConfig(env).encryptionKey).toBeDefined();
    const server = loadConfig(env, { backupKeys: false });
    expect(server.encryptionKey).toBeUndefined();
    expect(server.decryptionKeys).toEqual([]);
  });
});

describe('schedules run at most once a minute unless told otherwise', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    rig.setEnv('app', rig.db('app'));
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('refuses a cron that runs more often than SCHEDULE_MIN_INTERVAL_SECONDS, even unevenly', async () => {
    for (const cron of ['* * * * * *', '*/30 * * * * *', '0,10 * * * * *']) {
      const added = await rig.cli(['schedule', 'add', 'too-often', '--cron', cron, 'backup', '--env', 'app']);
      expect(added.exitCode, cron).toBe(2);
      expect(added.stderr.trim()).toBe(
        `manage-db: invalid schedule: cron: "${cron}" runs more often than every 60 s (SCHEDULE_MIN_INTERVAL_SECONDS)`,
      );
    }
    expect((await rig.cli(['schedule', 'list', '--json'])).stdout.trim()).toBe('[]');
    const allowed = await rig.cli(['schedule', 'add', 'often', '--cron', '*/30 * * * * *', 'backup', '--env', 'app'], {
      SCHEDULE_MIN_INTERVAL_SECONDS: '30',
    });
    expect(allowed.exitCode, allowed.stderr).toBe(0);
  });
});
