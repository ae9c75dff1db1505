import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import type { HistoryEntry } from '../src/queue/history-entry.js';
import { History } from '../src/queue/history.js';
import type { RunningServer } from '../src/server/app.js';
import { hasChromium, launchChromium } from './helpers/browser.js';
import { ForeignProducer } from './helpers/foreign.js';
import { sql } from './helpers/pg.js';
import { PersistentRedis } from './helpers/redis-servers.js';
import { Rig } from './helpers/rig.js';
import { basic, startTestServer } from './helpers/server.js';
import { REDIS_URL } from './helpers/services.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'history-token-0123456789';
const USER = 'ops';
const PASSWORD = 'history-pass-1';
const OUTPUT = path.resolve('test-output');
const ME = `${os.userInfo().username}@${os.hostname()}`;

async function smallDatabase(rig: Rig, name: string): Promise<void> {
  await sql('postgres', `CREATE DATABASE "${rig.db(name)}"`);
  await sql(rig.db(name), `CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 100)`);
  rig.setEnv(name, rig.db(name));
}

describe('the job history', () => {
  let rig: Rig;
  let server: RunningServer;
  let foreign: ForeignProducer;
  const api = (route: string, init: RequestInit = {}) =>
    fetch(`${server.url}/api/v1${route}`, {
      ...init,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
    });
  const historyJson = async (...args: string[]) => {
    const result = await rig.cli(['history', '--json', '--limit', '1000', ...args]);
    expect(result.exitCode, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as HistoryEntry[];
  };
  const entryOf = async (id: string) =>
    waitFor(`the history entry of ${id}`, async () => (await historyJson()).find((entry) => entry.id === id), 60_000);

  beforeAll(async () => {
    rig = await Rig.create({
      API_TOKEN_NAME: 'deploy-bot',
      BACKUP_SIGNING_KEY: 'ab'.repeat(32),
      SCHEDULE_MIN_INTERVAL_SECONDS: '1',
    });
    await smallDatabase(rig, 'app');
    await smallDatabase(rig, 'other');
    await rig.startWorker('backup');
    await rig.startWorker('maintenance');
    server = await startTestServer(rig, { API_TOKEN: TOKEN, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await foreign?.close();
    await server?.close();
    await rig?.cleanup();
  });

  it('records every finished job with who asked: the CLI, the API, the console, a schedule, a plain BullMQ add', async () => {
    const cli = await rig.cli(['backup', '--env', 'app', '--wait']);
    expect(cli.exitCode, cli.stderr).toBe(0);
    const cliId = (await historyJson('--type', 'backup'))[0]!.id;

    const viaApi = await api('/jobs/backup', {
      method: 'POST',
      body: JSON.stringify({ env: 'other' }),
      headers: { 'x-dbops-on-behalf-of': 'alice (release 42)' },
    });
    expect(viaApi.status).toBe(202);
    const apiId = ((await viaApi.json()) as { id: string }).id;

    const viaConsole = await fetch(`${server.url}/environments/app/backup`, {
      method: 'POST',
      redirect: 'manual',
      headers: { authorization: basic(USER, PASSWORD), origin: server.url },
    });
    expect(viaConsole.status).toBe(303);
    const consoleId = decodeURIComponent(viaConsole.headers.get('location')!.split('/').at(-1)!);

    const plain = await foreign.add('maintenance', { env: 'app', action: 'analyze' });
    const refused = await foreign.add('maintenance', { env: 'nowhere', action: 'analyze' });

    const schedule = await rig.cli([
      'schedule',
      'add',
      'every-2s',
      '--cron',
      '*/2 * * * * *',
      'maintenance',
      'analyze',
      '--env',
      'other',
    ]);
    expect(schedule.exitCode, schedule.stderr).toBe(0);
    const scheduled = await waitFor(
      'a scheduled run in the history',
      async () =>
        (await historyJson('--type', 'maintenance', '--env', 'other')).find(
          (entry) => entry.requester.via === 'schedule',
        ),
      30_000,
    );
    expect((await rig.cli(['schedule', 'remove', 'every-2s'])).exitCode).toBe(0);

    expect(await entryOf(cliId)).toMatchObject({
      type: 'backup',
      env: 'app',
      state: 'completed',
      requestedBy: `${ME} (CLI)`,
      requester: { via: 'cli', name: ME },
    });
    const fromApi = await entryOf(apiId);
    expect(fromApi).toMatchObject({
      env: 'other',
      state: 'completed',
      requestedBy: 'API token "deploy-bot" for "alice (release 42)"',
    });
    expect(fromApi.facts).toMatchObject({ env: 'other', database: rig.db('other') });
    expect(fromApi.facts.sizeBytes).toBeGreaterThan(0);
    expect(fromApi.facts.backupId).toEqual(expect.any(String));
    expect(fromApi.outcome).toMatch(/^backup other-\S+: BACKUP_DIR\/\S+ \(\d+ bytes, sha256 [0-9a-f]{64}; in file\)$/);
    expect(fromApi.outcome).not.toContain(rig.backupDir);
    expect(fromApi.durationMs).toBeGreaterThan(0);
    expect(fromApi.facts).not.toHaveProperty('path'); // the worker's own paths stay on the worker
    expect(await entryOf(consoleId)).toMatchObject({ state: 'completed', requestedBy: `console user "${USER}"` });
    expect(await entryOf(plain.id!)).toMatchObject({
      type: 'maintenance',
      state: 'completed',
      requestedBy: 'a BullMQ producer',
    });
    expect(await entryOf(refused.id!)).toMatchObject({
      type: 'maintenance',
      state: 'failed',
      requestedBy: 'a BullMQ producer',
      outcome: expect.stringContaining('nowhere'),
    });
    expect(scheduled).toMatchObject({ state: 'completed', requestedBy: 'schedule "every-2s"', env: 'other' });

    // A job that never starts (no copy worker here), cancelled: who asked, and who cancelled.
    await smallDatabase(rig, 'copyto');
    const copy = await rig.cli(['copy', '--from', 'app', '--to', 'copyto']);
    expect(copy.exitCode, copy.stderr).toBe(0);
    const copyId = copy.stdout.trim();
    const cancel = await api(`/jobs/copy/${copyId}/cancel`, { method: 'POST' });
    expect(cancel.status).toBe(200);
    expect(await entryOf(copyId)).toMatchObject({
      state: 'cancelled',
      env: 'copyto',
      envs: ['app', 'copyto'],
      requestedBy: `${ME} (CLI)`,
      cancelledBy: 'API token "deploy-bot"',
      attempts: 0,
    });

    // Who asked is stamped beside a job until it is over: gone with a completed or cancelled job.
    const stamps = (await rig.redisKeys()).filter((key) => key.includes(':dbops:requested:'));
    expect(stamps.filter((key) => [cliId, apiId, consoleId, copyId].some((id) => key.endsWith(`:${id}`)))).toEqual([]);
    const shown = await rig.cli(['history', '--type', 'copy']);
    expect(shown.stdout.split('\n')[0]).toMatch(/^ENDED +JOB +ENV +STATE +BY +TOOK +OUTCOME$/);
    expect(shown.stdout).toContain(`copy/${copyId}`);
    expect(shown.stdout).toContain(`cancelled by API token "deploy-bot"`);
  });

  it('search by each filter returns exactly the matching entries, in the CLI, the API and the console', async () => {
    const all = await historyJson();
    expect(all.length).toBeGreaterThanOrEqual(7);
    // Newest first, by their place in the chain.
    expect(all.map((entry) => entry.seq)).toEqual([...all.map((entry) => entry.seq)].sort((a, b) => b - a));
    const ids = (list: HistoryEntry[]) => list.map((entry) => entry.seq);
    const middle = all[Math.floor(all.length / 2)]!.at;
    const cases: [string[], (entry: HistoryEntry) => boolean][] = [
      [['--env', 'app'], (entry) => entry.envs.includes('app')],
      [['--type', 'maintenance'], (entry) => entry.type === 'maintenance'],
      [['--type', 'backup,copy'], (entry) => entry.type === 'backup' || entry.type === 'copy'],
      [['--state', 'failed'], (entry) => entry.state === 'failed'],
      [['--state', 'cancelled'], (entry) => entry.state === 'cancelled'],
      [['--since', middle], (entry) => entry.at >= middle],
      [['--until', middle], (entry) => entry.at < middle],
      [
        ['--search', 'DEPLOY-BOT'],
        (entry) => entry.requestedBy.includes('deploy-bot') || entry.cancelledBy?.includes('deploy-bot') === true,
      ],
      [['--search', 'nowhere'], (entry) => JSON.stringify(entry.payload).includes('nowhere')],
      [
        ['--env', 'other', '--state', 'completed', '--type', 'backup'],
        (entry) => entry.envs.includes('other') && entry.state === 'completed' && entry.type === 'backup',
      ],
    ];
    for (const [args, wanted] of cases) {
      const expected = ids(all.filter(wanted));
      expect(expected.length, args.join(' ')).toBeGreaterThan(0);
      expect(expected.length, args.join(' ')).toBeLessThan(all.length);
      expect(ids(await historyJson(...args)), args.join(' ')).toEqual(expected);
      const query = new URLSearchParams();
      for (let i = 0; i < args.length; i += 2) query.set(args[i]!.slice(2), args[i + 1]!);
      query.set('limit', '1000');
      const overHttp = await api(`/history?${query}`);
      expect(overHttp.status).toBe(200);
      expect(ids((await overHttp.json()) as HistoryEntry[]), `API ${query}`).toEqual(expected);
    }
    expect(ids(await historyJson('--limit', '2'))).toEqual(ids(all).slice(0, 2));

    const bad = await rig.cli(['history', '--state', 'active']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.trim()).toBe(
      'manage-db: state: the history holds finished jobs only (one of completed, failed, cancelled)',
    );
    expect((await api('/history?state=running')).status).toBe(400);

    const page = await fetch(`${server.url}/history?env=other&type=backup`, {
      headers: { authorization: basic(USER, PASSWORD) },
    });
    expect(page.status).toBe(200);
    const text = await page.text();
    const rows = text.match(/<tr>\s*<td class="nowrap">\d{4}-/g) ?? [];
    expect(rows).toHaveLength(all.filter((entry) => entry.type === 'backup' && entry.envs.includes('other')).length);
    expect(text).toContain('API token &quot;deploy-bot&quot; for &quot;alice (release 42)&quot;');
    const badPage = await fetch(`${server.url}/history?since=yesterday`, {
      headers: { authorization: basic(USER, PASSWORD) },
    });
    expect(badPage.status).toBe(400);
    expect(await badPage.text()).toContain('since: &quot;yesterday&quot; is neither a duration');
  });

  it('verify says the chain holds, and names an entry that was changed, removed or added by hand', async () => {
    const holds = await rig.cli(['history', 'verify']);
    expect(holds.exitCode, holds.stdout + holds.stderr).toBe(0);
    expect(holds.stdout).toMatch(
      /^history: the chain holds: entries 1 to \d+ \(\d+\), checked with the key derived from the signing key$/m,
    );

    const redis = new Redis(REDIS_URL);
    const key = `${rig.prefix}:dbops:history:entries`;
    try {
      const original = (await redis.hget(key, '2'))!;
      const changed = JSON.parse(original) as HistoryEntry;
      changed.requestedBy = 'someone else';
      await redis.hset(key, '2', JSON.stringify(changed));
      const caught = await rig.cli(['history', 'verify']);
      expect(caught.exitCode).toBe(1);
      expect(caught.stdout).toContain('history: entry 2 was changed after it was written');
      expect(caught.stderr.trim()).toMatch(/^manage-db: history: the chain does not hold/);

      // Rehashing the changed entry with a plain hash does not pass either: the next one no longer follows it.
      await redis.hset(key, '2', original);
      expect((await rig.cli(['history', 'verify'])).exitCode).toBe(0);

      const head = (await redis.get(`${rig.prefix}:dbops:history:head`))!;
      const last = Number(head.split(' ')[0]);
      const newest = (await redis.hget(key, String(last)))!;
      await redis.hdel(key, String(last));
      const removed = await rig.cli(['history', 'verify']);
      expect(removed.exitCode).toBe(1);
      expect(removed.stdout).toContain(`history: entry ${last} is missing`);
      await redis.hset(key, String(last), newest);

      // An export verifies on its own; a line changed in it does not.
      const file = path.join(rig.backupDir, 'history.jsonl');
      const exported = await rig.cli(['history', 'export', '--file', file]);
      expect(exported.exitCode, exported.stderr).toBe(0);
      expect(exported.stderr).toContain(`${last} entries written to ${file}`);
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      expect(lines).toHaveLength(last);
      expect((await rig.cli(['history', 'verify', '--file', file])).exitCode).toBe(0);
      const edited = JSON.parse(lines[0]!) as HistoryEntry;
      edited.state = 'failed';
      writeFileSync(file.replace('.jsonl', '-edited.jsonl'), [JSON.stringify(edited), ...lines.slice(1)].join('\n'));
      const editedCheck = await rig.cli(['history', 'verify', '--file', file.replace('.jsonl', '-edited.jsonl')]);
      expect(editedCheck.exitCode).toBe(1);
      expect(editedCheck.stdout).toContain('entry 1 was changed after it was written');
      // Without the key, the same export is checked by plain hashes only and its HMACs cannot be: said so.
      const keyless = await rig.cli(['history', 'verify', '--file', file], { BACKUP_SIGNING_KEY: 'cd'.repeat(32) });
      expect(keyless.exitCode).toBe(1);
      expect(keyless.stdout).toContain('was made with another key');
    } finally {
      redis.disconnect();
    }
  });

  it.skipIf(!hasChromium)('the charts render from real backups in Chromium, failures marked', async () => {
    // A failed backup of app: its database is gone for a moment.
    await sql('postgres', `ALTER DATABASE "${rig.db('other')}" RENAME TO "${rig.db('other')}_away"`);
    const failed = await rig.cli(['backup', '--env', 'other', '--wait']);
    expect(failed.exitCode).toBe(1);
    await sql('postgres', `ALTER DATABASE "${rig.db('other')}_away" RENAME TO "${rig.db('other')}"`);
    expect((await rig.cli(['backup', '--env', 'other', '--wait'])).exitCode).toBe(0);
    await rig.cli(['schedule', 'add', 'nightly', '--cron', '0 2 * * *', 'backup', '--env', 'app']);
    await rig.cli(['schedule', 'add', 'hourly-report', '--cron', '0 * * * *', 'maintenance', 'report', '--env', 'app']);

    const browser = await launchChromium();
    try {
      const context = await browser.newContext({
        httpCredentials: { username: USER, password: PASSWORD },
        viewport: { width: 1100, height: 900 },
      });
      const page = await context.newPage();
      const response = await page.goto(`${server.url}/charts`);
      expect(response?.status()).toBe(200);
      const charts = page.locator('svg.chart');
      // Per environment (app, other): size and duration; jobs per day; the schedules' timeline.
      expect(await charts.count()).toBe(6);
      for (const label of [
        'Backup size of app',
        'Backup duration of other',
        'Jobs per day by outcome',
        'Next runs of each schedule',
      ])
        expect(await page.getByRole('img', { name: label }).count(), label).toBe(1);
      const sizeChart = page.getByRole('img', { name: 'Backup size of other' });
      expect(await sizeChart.locator('circle').count()).toBeGreaterThanOrEqual(2);
      expect(await sizeChart.locator('g.failure').count()).toBe(1);
      expect(await sizeChart.locator('g.failure title').textContent()).toMatch(/failed: /);
      expect(await sizeChart.textContent()).toMatch(/\d+(\.\d)? (B|KiB|MiB)/); // the axis in its unit
      expect(await page.getByRole('img', { name: 'Backup duration of app' }).textContent()).toMatch(/\d+ ms|\d+\.\d s/);
      const timeline = page.getByRole('img', { name: 'Next runs of each schedule' });
      expect(await timeline.locator('rect').count()).toBe(7 + 7 * 24); // a week of nightly and hourly runs
      // The charts use the width they have: as wide as the page's content, at any width.
      // Wide: a backup's size and duration side by side, the others across the page; narrow: one column.
      const width = async (label: string) => (await page.getByRole('img', { name: label }).boundingBox())!.width;
      const top = async (label: string) => (await page.getByRole('img', { name: label }).boundingBox())!.y;
      expect(await width('Jobs per day by outcome')).toBeGreaterThan(900);
      expect(await width('Backup size of app')).toBeGreaterThan(420);
      expect(await width('Backup size of app')).toBeLessThan(600);
      expect(await top('Backup duration of app')).toBe(await top('Backup size of app'));
      await page.setViewportSize({ width: 400, height: 800 });
      for (const label of ['Jobs per day by outcome', 'Backup size of app']) {
        expect(await width(label)).toBeLessThan(400);
        expect(await width(label)).toBeGreaterThan(300);
      }
      expect(await top('Backup duration of app')).toBeGreaterThan(await top('Backup size of app'));
      await page.setViewportSize({ width: 1100, height: 900 });
      mkdirSync(OUTPUT, { recursive: true });
      await page.screenshot({ path: path.join(OUTPUT, 'console-charts.png'), fullPage: true });
      await page.goto(`${server.url}/history?env=other`);
      await page.screenshot({ path: path.join(OUTPUT, 'console-history.png'), fullPage: true });
      expect(await page.getByRole('row').count()).toBeGreaterThan(2);
      await context.close();
    } finally {
      await browser.close();
    }
  });
});

describe('the history store', () => {
  it('survives a restart of every process and of Redis (AOF); the chain still holds', async () => {
    const port = 8400 + Math.floor(Math.random() * 250);
    const redis = new PersistentRedis(port);
    await redis.start();
    const rig = await Rig.create({ REDIS_URL: redis.url });
    try {
      await smallDatabase(rig, 'app');
      const worker = await rig.startWorker('maintenance');
      for (let i = 0; i < 3; i += 1)
        expect((await rig.cli(['maintenance', 'analyze', '--env', 'app', '--wait'])).exitCode).toBe(0);
      const before = await rig.cli(['history', '--json']);
      expect(JSON.parse(before.stdout)).toHaveLength(3);
      worker.process.kill('SIGKILL');
      await worker.exited;
      await redis.restart(500);
      await rig.startWorker('maintenance');
      expect((await rig.cli(['maintenance', 'analyze', '--env', 'app', '--wait'])).exitCode).toBe(0);
      const after = JSON.parse((await rig.cli(['history', '--json'])).stdout) as HistoryEntry[];
      expect(after.map((entry) => entry.seq)).toEqual([4, 3, 2, 1]);
      expect(after.slice(1)).toEqual(JSON.parse(before.stdout));
      const verified = await rig.cli(['history', 'verify']);
      expect(verified.exitCode, verified.stdout).toBe(0);
      expect(verified.stdout).toContain('entries 1 to 4 (4), checked by plain hashes');
    } finally {
      await rig.cleanup();
      await redis.stop();
    }
  });

  it('keeps at most HISTORY_MAX_ENTRIES and HISTORY_RETENTION_DAYS, by whole blocks, the chain anchored where it was cut', async () => {
    const prefix = `test-history-${process.pid}-${Date.now()}`;
    const connection = new Redis(REDIS_URL);
    const config = loadConfig({
      REDIS_URL,
      QUEUE_PREFIX: prefix,
      HISTORY_MAX_ENTRIES: '1500',
      HISTORY_RETENTION_DAYS: '30',
    });
    const history = new History(connection, config);
    const draft = (i: number, at: number): Parameters<History['append']>[0] => ({
      at: new Date(at).toISOString(),
      id: `job-${i}`,
      reference: `maintenance/job-${i}`,
      type: 'maintenance',
      env: 'app',
      envs: ['app'],
      state: 'completed',
      requestedBy: 'a BullMQ producer',
      requester: { via: 'producer', name: 'a BullMQ producer' },
      requestedAt: null,
      startedAt: null,
      durationMs: 5,
      attempts: 1,
      payload: { env: 'app', action: 'analyze' },
      outcome: `run ${i}`,
      facts: {},
    });
    try {
      const now = Date.now();
      // 1,000 entries from 40 days ago (past retention), then 2,200 recent ones (past the count).
      for (let i = 1; i <= 1_000; i += 1) await history.append(draft(i, now - 40 * 86_400_000 + i));
      for (let i = 1_001; i <= 3_200; i += 1) await history.append(draft(i, now - 3_600_000 + i));
      // Trimmed at each full block: the old block by age, then whole blocks until at most 1,500 are kept
      // (the block being written is never removed).
      expect(Number(await connection.get(`${prefix}:dbops:history:first`))).toBe(2_001);
      expect(await connection.hlen(`${prefix}:dbops:history:entries`)).toBe(1_200);
      expect(await connection.get(`${prefix}:dbops:history:anchor`)).toMatch(/^2000 [0-9a-f]{64}$/);
      const report = await history.verify();
      expect(report).toMatchObject({ ok: true, entries: 1_200, first: 2_001, last: 3_200, keyed: false });
      const found = await history.search({ text: 'run 2001', limit: 10 });
      expect(found.map((entry) => entry.seq)).toEqual([2_001]);
      expect(await history.search({ text: 'run 1999', limit: 10 })).toEqual([]);
      // Removing the oldest kept entries by hand is not retention: the anchor says what must come first.
      await connection.hdel(`${prefix}:dbops:history:entries`, '2001');
      expect((await history.verify()).problems[0]).toBe('entry 2001 is missing');
    } finally {
      const keys = await connection.keys(`${prefix}:*`);
      if (keys.length) await connection.del(...keys);
      connection.disconnect();
    }
  }, 120_000);
});
