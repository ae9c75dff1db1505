import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../src/server/app.js';
import { fingerprint, loadPagila, sql, type Fingerprint } from './helpers/pg.js';
import { hasChromium, launchChromium } from './helpers/browser.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const OUTPUT = path.resolve('test-output');
const USER = 'ops';
const PASSWORD = 'console-pass-1';

// .ci/run installs Debian's chromium; on a machine without it this suite cannot run at all.
describe.skipIf(!hasChromium)('the dbops console in a real browser', () => {
  let rig: Rig;
  let server: RunningServer;
  let browser: Browser;
  let context: BrowserContext;
  let prod: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'prod' });
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await sql('postgres', `CREATE DATABASE "${rig.db('prod')}"`);
    await sql(rig.db('prod'), 'CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)');
    rig.setEnv('prod', rig.db('prod'));
    prod = await fingerprint(rig.db('prod'));
    await sql('postgres', `CREATE DATABASE "${rig.db('staging')}"`);
    await sql(rig.db('staging'), 'CREATE TABLE before_the_restore (id int)');
    rig.setEnv('staging', rig.db('staging'));
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    server = await startTestServer(rig, { DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    const schedule = await rig.cli([
      'schedule',
      'add',
      'nightly',
      '--cron',
      '0 2 * * *',
      '--tz',
      'Europe/Berlin',
      'backup',
      '--env',
      'source',
    ]);
    expect(schedule.exitCode, schedule.stderr).toBe(0);
    browser = await launchChromium();
    context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    mkdirSync(OUTPUT, { recursive: true });
  });
  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await server?.close();
    await rig?.cleanup();
  });

  it('asks for a login, then backs up from the browser and follows the job to its end', async () => {
    const anonymous = await browser.newContext();
    expect((await anonymous.request.get(`${server.url}/`)).status()).toBe(401);
    await anonymous.close();

    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    const source = page.getByRole('row').filter({ hasText: 'source' }).first();
    await expect.poll(() => source.textContent(), { timeout: 15_000 }).toMatch(/reachable.*PostgreSQL \d+/s);
    expect(await page.getByRole('row').filter({ hasText: 'prod' }).first().textContent()).toContain('protected');
    await page.screenshot({ path: path.join(OUTPUT, 'console-environments.png'), fullPage: true });

    await source.getByRole('button', { name: 'Back up now' }).click();
    await expect.poll(() => page.url(), { timeout: 15_000 }).toMatch(/\/jobs\/backup\//);
    // The job page refreshes itself until the job ends.
    await expect
      .poll(() => page.locator('main').textContent(), { timeout: 60_000 })
      .toMatch(/completed.*backup source-\d{8}t\d{6}z-[0-9a-f]{12}: .*bytes/s);
    expect(await page.locator('progress').first().getAttribute('value')).toBe('100');
    const log = await page.locator('pre').nth(1).textContent();
    expect(log).toContain('dumping contents of table "public.rental"');
    expect(log).not.toMatch(/reading (schemas|extensions|user-defined)/); // pg_dump's chatter is left out
    await page.screenshot({ path: path.join(OUTPUT, 'console-job.png'), fullPage: true });
  });

  it('lists backups with size, format, stores and check; downloads one whose sha256 matches; verifies one', async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/backups`);
    const row = page.getByRole('row').filter({ hasText: 'source-' }).first();
    const text = (await row.textContent())!;
    expect(text).toMatch(/\d+(\.\d)? (KiB|MiB)/);
    expect(text).toContain('custom');
    expect(text).toContain('file');
    expect(text).toMatch(/ok \(toc/);
    const id = /source-\d{8}t\d{6}z-[0-9a-f]{12}/.exec(text)![0];
    await page.screenshot({ path: path.join(OUTPUT, 'console-backups.png'), fullPage: true });

    const [download] = await Promise.all([
      page.waitForEvent('download'),
      row.getByRole('link', { name: 'Download' }).click(),
    ]);
    const file = path.join(OUTPUT, `${id}.dump`);
    await download.saveAs(file);
    const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${id}.json`), 'utf8')) as { sha256: string };
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(manifest.sha256);

    await row.getByRole('button', { name: 'Full verify' }).click();
    await expect
      .poll(() => page.locator('main').textContent(), { timeout: 60_000 })
      .toMatch(/completed.*ok \(sha256 matches.*row counts match/s);
  });

  it('refuses a restore into a protected environment without its name typed, and changes nothing', async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/backups?env=source`);
    const row = page.getByRole('row').filter({ hasText: 'source-' }).first();
    await row.getByLabel('restore into').selectOption('prod');
    await row.getByRole('button', { name: 'Restore' }).click();
    await expect
      .poll(() => page.getByRole('alert').textContent(), { timeout: 15_000 })
      .toBe('"prod" is a protected environment: the field "confirm" must repeat its name');
    expect(await fingerprint(rig.db('prod'))).toEqual(prod);
    expect((await rig.producer().list({ types: ['restore'] })).length).toBe(0);
  });

  it('restores into an environment from the browser, shows the version it kept, and drops that', async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/backups?env=source`);
    const row = page.getByRole('row').filter({ hasText: 'source-' }).first();
    await row.getByLabel('restore into').selectOption('staging');
    await row.getByRole('button', { name: 'Restore' }).click();
    await expect.poll(() => page.url(), { timeout: 15_000 }).toMatch(/\/jobs\/restore\//);
    await expect.poll(() => page.locator('main').textContent(), { timeout: 90_000 }).toMatch(/completed/);
    expect(await fingerprint(rig.db('staging'))).toEqual(await fingerprint(rig.db('source')));

    await page.goto(`${server.url}/`);
    const staging = page.getByRole('row').filter({ hasText: 'staging' }).first();
    await expect
      .poll(() => staging.textContent(), { timeout: 15_000 })
      .toMatch(/_prev_\d{8}t\d{6}\s+\(\d+(\.\d)? (KiB|MiB)\)/);
    const kept = new RegExp(`${rig.db('staging')}_prev_\\d{8}t\\d{6}`).exec((await staging.textContent())!)![0];
    expect(await sql(kept, 'SELECT count(*)::int AS n FROM before_the_restore')).toEqual([{ n: 0 }]);
    await page.screenshot({ path: path.join(OUTPUT, 'console-kept-version.png'), fullPage: true });

    await staging.getByRole('button', { name: 'Drop' }).click();
    await expect.poll(() => page.url(), { timeout: 15_000 }).toMatch(/\/jobs\/previous\//);
    await expect.poll(() => page.locator('main').textContent(), { timeout: 60_000 }).toMatch(/completed/);
    expect(await sql('postgres', 'SELECT datname FROM pg_database WHERE datname = $1', [kept])).toEqual([]);
    expect(await sql(rig.db('staging'), "SELECT to_regclass('public.actor') IS NOT NULL AS restored")).toEqual([
      { restored: true },
    ]);
  });

  it('shows schedules in their own time zone, and jobs with progress; readable on a phone', async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/schedules`);
    const row = page.getByRole('row').filter({ hasText: 'nightly' });
    const text = (await row.textContent())!;
    expect(text).toContain('backup of source');
    expect(text).toMatch(/\d{4}-\d\d-\d\d 02:00 \(Europe\/Berlin\)/);
    await page.screenshot({ path: path.join(OUTPUT, 'console-schedules.png'), fullPage: true });

    await page.goto(`${server.url}/jobs`);
    expect(
      await page
        .getByRole('row')
        .filter({ has: page.getByRole('link', { name: 'backup', exact: true }) })
        .first()
        .textContent(),
    ).toMatch(/source.*completed.*100%/s);
    await page.screenshot({ path: path.join(OUTPUT, 'console-jobs.png'), fullPage: true });

    const phone = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 390, height: 844 },
      isMobile: true,
    });
    const small = await phone.newPage();
    for (const route of ['/', '/backups', '/schedules', '/jobs']) {
      await small.goto(`${server.url}${route}`);
      // Wide tables scroll inside their box; the page itself never scrolls sideways.
      expect(await small.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), route).toBe(true);
    }
    await small.goto(`${server.url}/backups`);
    await small.screenshot({ path: path.join(OUTPUT, 'console-phone.png') });
    await phone.close();
  });

  it('without dashboard credentials: the console shows, and refuses every action', async () => {
    const readOnly = await startTestServer(rig, {});
    try {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${readOnly.url}/`);
      expect(await page.getByText('Read-only').count()).toBe(1);
      expect(await page.getByRole('button', { name: 'Back up now' }).count()).toBe(0);
      const post = await page.request.post(`${readOnly.url}/environments/source/backup`, {
        headers: { origin: readOnly.url },
      });
      expect(post.status()).toBe(405);
    } finally {
      await readOnly.close();
    }
  });
});
