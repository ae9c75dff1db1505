import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerTypes } from '../src/operations/index.js';
import type { RunningServer } from '../src/server/app.js';
import { loadPagila } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { basic, startTestServer } from './helpers/server.js';

const TOKEN = 'test-token-0123456789abcdef';
const USER = 'ops';
const PASSWORD = 'dashboard-pass-1';

/** Parses Prometheus text exposition: every non-comment line is `name{labels} value`. */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (-?(?:[0-9.]+(?:e[+-]?\d+)?|NaN|\+Inf|-Inf))( \d+)?$/.exec(
      line,
    );
    if (!match) throw new Error(`not Prometheus text: ${line}`);
    values.set(match[1]!, Number(match[2]));
  }
  return values;
}

describe('HTTP API, dashboard auth, health and metrics', () => {
  let rig: Rig;
  let server: RunningServer;
  let base: string;
  const api = (path: string, init: RequestInit = {}, token: string | null = TOKEN) =>
    fetch(`${base}${path}`, {
      ...init,
      headers: {
        'content-type': 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(init.headers ?? {}),
      },
    });

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await rig.startWorker('backup');
    server = await startTestServer(rig, { API_TOKEN: TOKEN, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    base = server.url;
  });
  afterAll(async () => {
    await server?.close();
    await rig?.cleanup();
  });

  it("answers /healthz without auth, and serves the console at / behind the dashboard's auth", async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    expect((await fetch(`${base}/`)).status).toBe(401);
    const root = await fetch(`${base}/`, { headers: { authorization: basic(USER, PASSWORD) } });
    expect(root.status).toBe(200);
    expect(await root.text()).toContain('<a href="/admin/queues">Bull Board</a>');
  });

  it('keeps the dashboard, the console, its JSON API and /metrics behind basic auth', async () => {
    for (const path of [
      '/admin/queues',
      '/admin/queues/api/queues',
      '/metrics',
      '/',
      '/backups',
      '/schedules',
      '/jobs',
    ]) {
      expect((await fetch(`${base}${path}`)).status).toBe(401);
      expect((await fetch(`${base}${path}`, { headers: { authorization: basic(USER, 'wrong') } })).status).toBe(401);
    }
    const page = await fetch(`${base}/admin/queues`, { headers: { authorization: basic(USER, PASSWORD) } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<html');
    const queues = await fetch(`${base}/admin/queues/api/queues`, {
      headers: { authorization: basic(USER, PASSWORD) },
    });
    expect(queues.status).toBe(200);
    const names = ((await queues.json()) as { queues: { name: string }[] }).queues.map((queue) => queue.name).sort();
    expect(names).toEqual([...workerTypes].sort());
  });

  it('refuses the API without the bearer token', async () => {
    expect((await api('/api/v1/jobs/backup', { method: 'POST', body: '{"env":"source"}' }, null)).status).toBe(401);
    expect(
      (await api('/api/v1/jobs/backup', { method: 'POST', body: '{"env":"source"}' }, 'wrong-token-0123456789')).status,
    ).toBe(401);
    expect((await api('/api/v1/backups', {}, null)).status).toBe(401);
    expect(await rig.redisKeys()).not.toContainEqual(expect.stringContaining(':backup:wait'));
  });

  it.each([
    [{ env: 'source', compress: 12 }, 'compress'],
    [{ env: 'source', format: 'tar' }, 'format'],
    [{ env: 'source', url: 'postgres://u:p@h/db' }, 'url'],
    [{}, 'env'],
  ])('answers 400 naming the field for %o, and enqueues nothing', async (payload, field) => {
    const response = await api('/api/v1/jobs/backup', { method: 'POST', body: JSON.stringify(payload) });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: string; issues: { path: string }[] };
    expect(body.issues.map((issue) => issue.path)).toContain(field);
    expect(JSON.stringify(body)).not.toMatch(/\bat .*\.js:\d+/);
  });

  it('answers 400 for an unknown environment, 404 for an unknown type, 413 for a huge body, 400 for broken JSON', async () => {
    const unknownEnv = await api('/api/v1/jobs/backup', { method: 'POST', body: '{"env":"nowhere"}' });
    expect(unknownEnv.status).toBe(400);
    expect(((await unknownEnv.json()) as { error: string }).error).toContain('unknown environment "nowhere"');
    expect((await api('/api/v1/jobs/explode', { method: 'POST', body: '{}' })).status).toBe(404);
    const huge = await api('/api/v1/jobs/backup', {
      method: 'POST',
      body: JSON.stringify({ env: 'x'.repeat(200_000) }),
    });
    expect(huge.status).toBe(413);
    expect(await huge.json()).toEqual({ error: 'request body too large' });
    const broken = await api('/api/v1/jobs/backup', { method: 'POST', body: '{"env":' });
    expect(broken.status).toBe(400);
    expect(JSON.stringify(await broken.json())).not.toMatch(/\.js:\d+/);
  });

  it('accepts a good payload with 202, runs it, and the metrics move', async () => {
    const auth = { headers: { authorization: basic(USER, PASSWORD) } };
    const before = parseMetrics(await (await fetch(`${base}/metrics`, auth)).text());
    expect(before.get('dbops_jobs{queue="backup",state="completed"}')).toBe(0);

    const accepted = await api('/api/v1/jobs/backup', { method: 'POST', body: '{"env":"source"}' });
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    expect(id).toMatch(/^backup-/);

    let status: {
      id: string;
      state: string;
      progress: unknown;
      result: { backupId: string } | null;
      failedReason: string | null;
    };
    for (;;) {
      status = (await (await api(`/api/v1/jobs/backup/${id}`)).json()) as typeof status;
      if (status.state === 'completed' || status.state === 'failed') break;
      await sleep(200);
    }
    expect(status).toMatchObject({ id, state: 'completed', failedReason: null, progress: { percent: 100 } });
    expect(status.result!.backupId).toMatch(/^source-/);

    const backups = (await (await api('/api/v1/backups')).json()) as { id: string }[];
    expect(backups.map((backup) => backup.id)).toContain(status.result!.backupId);
    expect((await api('/api/v1/jobs/backup/backup-nope')).status).toBe(404);
    expect((await api(`/api/v1/jobs/restore/${id}`)).status).toBe(404);

    let after = new Map<string, number>();
    for (let tries = 0; tries < 50; tries += 1) {
      after = parseMetrics(await (await fetch(`${base}/metrics`, auth)).text());
      if ((after.get('dbops_job_duration_seconds_count{type="backup",outcome="completed"}') ?? 0) >= 1) break;
      await sleep(100);
    }
    expect(after.get('dbops_jobs{queue="backup",state="completed"}')).toBe(1);
    expect(after.get('dbops_job_duration_seconds_count{type="backup",outcome="completed"}')).toBe(1);
    const lastBackup = after.get('dbops_last_successful_backup_timestamp_seconds{env="source"}')!;
    expect(Math.abs(lastBackup - Date.now() / 1000)).toBeLessThan(120);
  });

  it('DASHBOARD_READONLY=true shows the queues but refuses to change them', async () => {
    const readonly = await startTestServer(rig, { DASHBOARD_READONLY: 'true' });
    try {
      const queues = (await (await fetch(`${readonly.url}/admin/queues/api/queues`)).json()) as {
        queues: { name: string; readOnlyMode: boolean }[];
      };
      expect(queues.queues.length).toBe(workerTypes.length);
      expect(queues.queues.every((queue) => queue.readOnlyMode)).toBe(true);
      const pause = await fetch(`${readonly.url}/admin/queues/api/queues/backup/pause`, { method: 'PUT' });
      expect(pause.status).toBe(405);
      const counts = await rig.producer().queues.get('backup').isPaused();
      expect(counts).toBe(false);
    } finally {
      await readonly.close();
    }
  });

  it('keeps the API off without API_TOKEN and refuses a public HOST without dashboard credentials', async () => {
    const plain = await startTestServer(rig);
    try {
      const response = await fetch(`${plain.url}/api/v1/jobs/backup`, { method: 'POST', body: '{"env":"source"}' });
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: string }).error).toContain('API_TOKEN');
      expect((await fetch(`${plain.url}/admin/queues`)).status).toBe(200); // loopback, no credentials set
    } finally {
      await plain.close();
    }
    await expect(startTestServer(rig, { HOST: '0.0.0.0' })).rejects.toThrow(
      /refusing to listen on 0.0.0.0 without DASHBOARD_USER/,
    );
  });
});
