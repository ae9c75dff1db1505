import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerTypes } from '../src/operations/index.js';
import type { RunningServer } from '../src/server/app.js';
import { loadPagila } from './helpers/pg.js';
import { hasChromium, launchChromium } from './helpers/browser.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const OUTPUT = path.resolve('test-output');
const USER = 'ops';
const PASSWORD = 'browser-pass-1';

// .ci/run installs Debian's chromium; on a machine without it this suite cannot run at all.
describe.skipIf(!hasChromium)('the dashboard in a real browser', () => {
  let rig: Rig;
  let server: RunningServer;
  let browser: Browser;
  let jobId: string;

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await rig.startWorker('backup');
    server = await startTestServer(rig, { DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    const run = await rig.cli(['backup', '--env', 'source', '--wait']);
    expect(run.exitCode).toBe(0);
    jobId = run.stdout.split('\n')[0]!.trim();
    browser = await launchChromium();
    mkdirSync(OUTPUT, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await rig?.cleanup();
  });

  it('asks for a login, then shows every queue and a finished backup with its progress and log', async () => {
    const anonymous = await browser.newContext();
    expect((await anonymous.request.get(`${server.url}/admin/queues`)).status()).toBe(401);
    await expect((await anonymous.newPage()).goto(`${server.url}/admin/queues`)).rejects.toThrow(
      /ERR_INVALID_AUTH_CREDENTIALS/,
    );
    await anonymous.close();

    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 1400, height: 1000 },
    });
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    await page.getByRole('link', { name: 'Bull Board' }).click(); // linked from every console page
    expect(page.url()).toBe(`${server.url}/admin/queues`);
    for (const queue of workerTypes) {
      await expect.poll(() => page.getByText(queue, { exact: true }).count(), { timeout: 15_000 }).toBeGreaterThan(0);
    }
    await page.waitForLoadState('networkidle');
    await expect.poll(() => page.getByText('Loading').count(), { timeout: 15_000 }).toBe(0);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-queues.png') });

    await page.goto(`${server.url}/admin/queues/queue/backup?status=completed`);
    await page.getByText(jobId).first().click();
    await expect.poll(() => page.url(), { timeout: 15_000 }).toContain(jobId);
    await page.waitForLoadState('networkidle');
    await page.getByText('Progress', { exact: true }).click();
    await expect.poll(() => page.getByText('100', { exact: false }).count(), { timeout: 15_000 }).toBeGreaterThan(0);
    // Bull Board is handed the percentage as a number (its bar), and a link to the job's console page.
    const api = await context.request.get(
      `${server.url}/admin/queues/api/queues?activeQueue=backup&status=completed&page=1&jobsPerPage=10`,
    );
    const backupQueue = (
      (await api.json()) as {
        queues: { name: string; jobs: { id: string; progress: unknown; externalUrl?: { href: string } }[] }[];
      }
    ).queues.find((queue) => queue.name === 'backup')!;
    const shown = backupQueue.jobs.find((job) => job.id === jobId)!;
    expect(shown.progress).toBe(100);
    expect(shown.externalUrl?.href).toBe(`/jobs/backup/${jobId}`);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-backup-progress.png'), fullPage: true });
    await page.getByText('Logs', { exact: true }).click();
    await expect
      .poll(() => page.getByText('dumping contents of table "public.rental"').count(), { timeout: 15_000 })
      .toBeGreaterThan(0);
    expect(await page.getByText('reading user-defined tables').count()).toBe(0); // pg_dump's chatter is not in the job's log
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-backup-logs.png'), fullPage: true });
    // And back to the console from the board: in the menu of its header.
    await page.locator('ul[class*="actions-"] > li').last().locator('button').click();
    await page.getByText('dbops console', { exact: true }).click();
    await expect.poll(() => page.url(), { timeout: 15_000 }).toBe(`${server.url}/`);
    await context.close();
  });
});
