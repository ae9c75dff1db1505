import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withoutServerPaths } from '../src/queue/worker.js';
import type { RunningServer } from '../src/server/app.js';
import { ForeignProducer } from './helpers/foreign.js';
import { loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';

const TOKEN = 'any-producer-token-0123456789';

describe('jobs from any producer, with any id', () => {
  let rig: Rig;
  let foreign: ForeignProducer;
  let server: RunningServer;
  const api = (route: string, init: RequestInit = {}) =>
    fetch(`${server.url}/api/v1${route}`, {
      ...init,
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers ?? {}) },
    });

  beforeAll(async () => {
    rig = await Rig.create({ JOB_KEEP_COMPLETED: '2' });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    mkdirSync(path.join(rig.backupDir, 'migrations'));
    writeFileSync(
      path.join(rig.backupDir, 'migrations', '1_orders.sql'),
      '-- Up Migration\nCREATE TABLE orders (id int);\n',
    );
    for (const type of ['backup', 'maintenance', 'migrate']) await rig.startWorker(type);
    foreign = new ForeignProducer(rig);
    server = await startTestServer(rig, { API_TOKEN: TOKEN });
  });
  afterAll(async () => {
    await server?.close();
    await foreign?.close();
    await rig?.cleanup();
  });

  it('numeric ids work in the CLI and the HTTP API, and are unambiguous across queues', async () => {
    const backup = await foreign.add('backup', { env: 'app' });
    const maintenance = await foreign.add('maintenance', { env: 'app', action: 'analyze' });
    expect([backup.id, maintenance.id]).toEqual(['1', '1']); // BullMQ counts per queue
    await foreign.settled('backup', '1');
    await foreign.settled('maintenance', '1');

    const ambiguous = await rig.cli(['jobs', 'show', '1']);
    expect(ambiguous.exitCode).toBe(2);
    expect(ambiguous.stderr.trim()).toBe(
      'manage-db: "1" names a job in several queues (backup/1, maintenance/1): name one as <type>/<id>',
    );
    const shown = await rig.cli(['jobs', 'show', 'backup/1', '--json']);
    expect(shown.exitCode, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      id: '1',
      type: 'backup',
      reference: 'backup/1',
      state: 'completed',
      result: { env: 'app' },
    });
    const listed = JSON.parse((await rig.cli(['jobs', 'list', '--json'])).stdout) as { reference: string }[];
    expect(listed.map((job) => job.reference).sort()).toEqual(['backup/1', 'maintenance/1']);

    const overHttp = await api('/jobs/backup/1');
    expect(overHttp.status).toBe(200);
    expect(await overHttp.json()).toMatchObject({ id: '1', state: 'completed', result: { env: 'app' } });
    expect((await api('/jobs/maintenance/1')).status).toBe(200);
    expect((await api('/jobs/restore/1')).status).toBe(404);

    const retried = await rig.cli(['jobs', 'retry', 'maintenance/1']);
    expect(retried.stdout).toContain('only a failed or cancelled job can be retried');
  });

  it("a job put on another operation's queue (a restore on backup's) is refused by the worker, and answers under its queue", async () => {
    const misplaced = await foreign.add('backup', { env: 'app', latest: 'app' }, 'restore');
    const outcome = await foreign.settled('backup', misplaced.id!);
    expect(outcome).toMatchObject({ state: 'failed', failedReason: 'a backup worker does not run "restore" jobs' });
    const shown = await api(`/jobs/backup/${misplaced.id}`);
    expect(shown.status).toBe(200);
    expect(await shown.json()).toMatchObject({ reference: `backup/${misplaced.id}`, state: 'failed' });
    expect((await api(`/jobs/restore/${misplaced.id}`)).status).toBe(404);
    const listed = (await (await api('/jobs?type=backup&state=failed')).json()) as { reference: string }[];
    expect(listed.map((job) => job.reference)).toContain(`backup/${misplaced.id}`);
    const fromCli = await rig.cli([
      'jobs',
      'list',
      '--type',
      'backup',
      '--state',
      'failed',
      '--search',
      'restore',
      '--json',
    ]);
    expect((JSON.parse(fromCli.stdout) as { reference: string }[]).map((job) => job.reference)).toEqual([
      `backup/${misplaced.id}`,
    ]);
    // Lists share one time format (UTC to the second), the backups' and the jobs' alike.
    const table = (await rig.cli(['jobs', 'list', '--type', 'backup'])).stdout.split('\n');
    expect(table[0]).toMatch(/^JOB +TARGET +STATE +PROGRESS +TOOK +QUEUED +REASON$/);
    expect(table.find((line) => line.startsWith(`backup/${misplaced.id} `))).toMatch(
      / \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z /,
    );
    const backupsTable = (await rig.cli(['backups', 'list'])).stdout.split('\n');
    expect(backupsTable[1]).toMatch(/ \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z /);
    const longAgo = await rig.cli(['jobs', 'list', '--since', '2000-01-01', '--until', '2000-01-02T00:00:00Z']);
    expect(longAgo.stdout.trim()).toBe('no jobs');
    const unreadable = await rig.cli(['jobs', 'list', '--since', 'yesterday']);
    expect(unreadable.exitCode).toBe(2);
    expect(unreadable.stderr.trim()).toBe(
      'manage-db: since: "yesterday" is neither a duration (30m, 12h, 7d) nor an ISO 8601 time',
    );
  });

  it('a migrate job marked backupFirst, added with no child backup, backs up before it migrates', async () => {
    const job = await foreign.add('migrate', { env: 'app', dir: 'migrations', action: 'up', backupFirst: true });
    const outcome = await foreign.settled('migrate', job.id!);
    expect(outcome.state, outcome.failedReason).toBe('completed');
    const { backupId } = outcome.result as { backupId: string };
    expect(backupId).toMatch(/^app-/);
    const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${backupId}.json`), 'utf8')) as {
      env: string;
      rowCounts: Record<string, number>;
    };
    expect(manifest.env).toBe('app');
    expect(Object.keys(manifest.rowCounts)).not.toContain('public.orders'); // taken before the migration
    expect(await sql(rig.db('app'), "SELECT to_regclass('public.orders')::text AS t")).toEqual([{ t: 'orders' }]);
  });

  it('a job added without retention options is still removed by the workers, as dbops keeps its own', async () => {
    const queue = foreign.queue('maintenance');
    for (let i = 0; i < 4; i += 1)
      await foreign.settled('maintenance', (await foreign.add('maintenance', { env: 'app', action: 'report' })).id!);
    expect(await queue.getCompletedCount()).toBe(2); // JOB_KEEP_COMPLETED
  });

  it('publishes the contract: JSON Schemas over HTTP and from the CLI, the same', async () => {
    const all = (await (await api('/schemas')).json()) as {
      type: string;
      queue: string;
      jobName: string;
      payload: { $schema: string };
    }[];
    expect(all.map((entry) => [entry.type, entry.queue, entry.jobName])).toContainEqual(['prune', 'backup', 'prune']);
    expect(all.every((entry) => entry.payload.$schema === 'https://json-schema.org/draft/2020-12/schema')).toBe(true);
    const restore = await (await api('/schemas/restore')).json();
    expect(restore).toMatchObject({
      confirm: 'always: it replaces `env`',
      payload: { required: ['env'], additionalProperties: false },
    });
    const cli = await rig.cli(['schema', 'restore'], { API_TOKEN: TOKEN });
    expect(JSON.parse(cli.stdout)).toEqual(restore);
    expect((await api('/schemas/launch')).status).toBe(404);
  });

  it('HTTP: a non-JSON body is 415, a non-object payload a clean 400; errors name JSON fields and no server path', async () => {
    const post = (body: string, contentType = 'application/json') =>
      api('/jobs/backup', { method: 'POST', body, headers: { 'content-type': contentType } }).then(async (res) => ({
        status: res.status,
        body: (await res.json()) as { error: string; issues?: { path: string }[] },
      }));
    const plain = await post('{"env":"app"}', 'text/plain');
    expect(plain.status).toBe(415);
    expect(plain.body.error).toContain('application/json');
    for (const body of ['null', '[]', '"app"', '3']) {
      const answer = await post(body);
      expect(answer.status, body).toBe(400);
      expect(answer.body.issues).toEqual([{ path: '(payload)', message: 'must be a JSON object' }]);
    }
    const unknownEnv = await post('{"env":"nowhere"}');
    expect(unknownEnv.status).toBe(400);
    expect(unknownEnv.body.issues).toEqual([{ path: 'env', message: 'unknown environment' }]);
    const unknownKey = await post('{"env":"app","colour":"red"}');
    expect(unknownKey.body.issues).toEqual([{ path: 'colour', message: 'unknown field' }]);

    const restore = await api('/jobs/restore', {
      method: 'POST',
      body: '{"env":"app","backup":"app-20000101t000000z-000000"}',
      headers: { 'content-type': 'application/json' },
    });
    const refused = (await restore.json()) as { error: string; issues: unknown[] };
    expect(refused.error).toBe('unknown backup "app-20000101t000000z-000000"');
    expect(JSON.stringify(refused)).not.toContain(rig.backupDir);
    expect(refused.issues).toEqual([{ path: 'backup', message: 'no such backup' }]);

    const protectedServer = await startTestServer(rig, { API_TOKEN: TOKEN, PROTECTED_ENVS: 'app' });
    try {
      const backupId = readdirSync(rig.backupDir)
        .find((name) => name.endsWith('.json'))!
        .replace(/\.json$/, '');
      const answer = await fetch(`${protectedServer.url}/api/v1/jobs/restore`, {
        method: 'POST',
        body: JSON.stringify({ env: 'app', backup: backupId }),
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      expect(answer.status).toBe(400);
      const body = (await answer.json()) as { error: string; issues: unknown[] };
      expect(body.error).toBe('"app" is a protected environment: the field "confirm" must repeat its name');
      expect(body.issues).toEqual([{ path: 'confirm', message: 'must equal "app"' }]);
    } finally {
      await protectedServer.close();
    }
  });

  it("a failure reason names the worker's directories by their variables, not their paths", () => {
    const config = { backupDir: '/srv/dbops/backups', migrationsRoot: '/srv/app/migrations' };
    expect(
      withoutServerPaths(
        'pg_restore: error: could not open input file "/srv/dbops/backups/x.d/toc.dat"; /srv/app/migrations/1_a.sql',
        config,
      ),
    ).toBe('pg_restore: error: could not open input file "BACKUP_DIR/x.d/toc.dat"; MIGRATIONS_ROOT/1_a.sql');
  });

  it('GET /api/v1/backups/<id>/archive streams the archive, with its sha256; unknown ids are 404, and the token is needed', async () => {
    const [manifest] = (await (await api('/backups?env=app')).json()) as {
      id: string;
      sha256: string;
      sizeBytes: number;
    }[];
    const response = await api(`/backups/${manifest!.id}/archive`);
    expect(response.status).toBe(200);
    expect(response.headers.get('x-checksum-sha256')).toBe(manifest!.sha256);
    const bytes = Buffer.from(await response.arrayBuffer());
    expect(bytes.length).toBe(manifest!.sizeBytes);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(manifest!.sha256);
    expect((await api('/backups/app-20000101t000000z-000000/archive')).status).toBe(404);
    expect((await api('/backups/..%2F..%2Fetc%2Fpasswd/archive')).status).toBe(404);
    expect((await fetch(`${server.url}/api/v1/backups/${manifest!.id}/archive`)).status).toBe(401);
  });

  it('GET /api/v1/backups normalises the environment name as the CLI does', async () => {
    const upper = (await (await api('/backups?env=APP')).json()) as { env: string }[];
    expect(upper.length).toBeGreaterThan(0);
    expect(upper.every((manifest) => manifest.env === 'app')).toBe(true);
  });
});
