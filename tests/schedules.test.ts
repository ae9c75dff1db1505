import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileStore } from '../src/backups/file-store.js';
import { ownFileStore } from './helpers/manifests.js';
import { createDatabase, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { startTestServer } from './helpers/server.js';
import { waitFor } from './helpers/wait.js';

/** Fire time of a scheduled job, from its id (`repeat:<operation>.<name>:<millis>`). */
const fireTime = (jobId: string) => Number(/^repeat:[a-z]+\.[^:]+:(\d+)$/.exec(jobId)?.[1] ?? NaN);

/** A loopback webhook receiver that answers 503 to its first request, then 200. */
interface Receiver {
  url: string;
  received: Record<string, unknown>[];
  requests: number;
  server: Server;
}

async function startReceiver(): Promise<Receiver> {
  const receiver = {
    url: '',
    received: [] as Record<string, unknown>[],
    requests: 0,
    server: undefined as unknown as Server,
  };
  receiver.server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      receiver.requests += 1;
      if (receiver.requests === 1) return void response.writeHead(503).end();
      receiver.received.push(JSON.parse(body));
      response.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}/hook`;
  return receiver;
}

/** For the enclosing describe: a rig that notifies a fresh receiver, with database `app` as environment `app`. */
function rigNotifyingReceiver(env: Record<string, string>): { rig: Rig; receiver: Receiver } {
  const setup = {} as { rig: Rig; receiver: Receiver };
  beforeAll(async () => {
    setup.receiver = await startReceiver();
    setup.rig = await Rig.create({
      NOTIFY_WEBHOOK_URL: setup.receiver.url,
      SCHEDULE_MIN_INTERVAL_SECONDS: '1',
      ...env,
    });
    await createDatabase(setup.rig.db('app'));
    setup.rig.setEnv('app', setup.rig.db('app'));
  });
  afterAll(async () => {
    await setup.rig?.cleanup();
    setup.receiver?.server.close();
  });
  return setup;
}

describe('schedules', () => {
  let rig: Rig;
  let store: FileStore;

  beforeAll(async () => {
    rig = await Rig.create({ SCHEDULE_MIN_INTERVAL_SECONDS: '1' });
    await createDatabase(rig.db('small'));
    await sql(rig.db('small'), 'CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)');
    rig.setEnv('small', rig.db('small'));
    store = ownFileStore(rig.backupDir);
  });
  afterAll(async () => rig?.cleanup());

  it('a schedule every two seconds makes backups, survives a worker restart without doubling, and stops after remove', async () => {
    const first = await rig.startWorker('backup');
    const added = await rig.cli(['schedule', 'add', 'every-2s', '--cron', '*/2 * * * * *', 'backup', '--env', 'small']);
    expect(added.exitCode, added.stderr).toBe(0);
    // Adding the same schedule again replaces it: still one scheduler.
    expect(
      (await rig.cli(['schedule', 'add', 'every-2s', '--cron', '*/2 * * * * *', 'backup', '--env', 'small'])).exitCode,
    ).toBe(0);
    expect(await rig.producer().queues.get('backup').getJobSchedulersCount()).toBe(1);

    await waitFor('two scheduled backups', async () => (await store.list()).manifests.length >= 2, 20_000);
    first.process.kill('SIGTERM');
    await first.exited;
    await sleep(3_000); // runs fall due while no worker is up
    // Two workers now, each applying a schedules file with the same schedule as it starts: still one
    // scheduler, each run taken once.
    const file = path.join(rig.backupDir, 'every-2s.json');
    writeFileSync(
      file,
      JSON.stringify([{ name: 'every-2s', cron: '*/2 * * * * *', operation: 'backup', payload: { env: 'small' } }]),
    );
    await rig.startWorker('backup', { SCHEDULES_FILE: file });
    await rig.startWorker('backup', { SCHEDULES_FILE: file });
    expect(await rig.producer().queues.get('backup').getJobSchedulersCount()).toBe(1);
    const before = (await store.list()).manifests.length;
    await waitFor('backups after the restart', async () => (await store.list()).manifests.length >= before + 3, 20_000);

    const list = await rig.cli(['schedule', 'list', '--json']);
    const [view] = JSON.parse(list.stdout);
    expect(view).toMatchObject({
      name: 'every-2s',
      operation: 'backup',
      lastRun: { state: 'completed' },
      status: { state: 'ok' },
    });
    expect(Date.parse(view.nextRunAt)).toBeGreaterThan(Date.now() - 2_000);

    const removed = await rig.cli(['schedule', 'remove', 'every-2s']);
    expect(removed.exitCode, removed.stderr).toBe(0);
    await sleep(1_500); // a run already taken may finish
    const atRemoval = (await store.list()).manifests.length;
    await sleep(5_000);
    const manifests = (await store.list()).manifests;
    expect(manifests.length).toBe(atRemoval);
    expect(await rig.producer().queues.get('backup').getJobSchedulersCount()).toBe(0);
    expect(await rig.producer().queues.get('backup').getDelayedCount()).toBe(0);

    // Never doubled: every backup came from its own run, each run time once, on the 2-second grid.
    const times = manifests.map((manifest) => fireTime(manifest.jobId));
    expect(times.every((time) => Number.isFinite(time) && time % 2_000 === 0)).toBe(true);
    expect(new Set(times).size).toBe(manifests.length);
  });

  it('SCHEDULES_FILE is applied at start, by every process, as one schedule; a schedule gone from the file goes', async () => {
    const file = path.join(rig.backupDir, 'schedules.yaml');
    writeFileSync(
      file,
      [
        'schedules:',
        '  - name: nightly-small',
        '    cron: "0 2 * * *"',
        '    tz: Europe/Berlin',
        '    operation: backup',
        '    payload: { env: small, compress: 3 }',
        '',
      ].join('\n'),
    );
    await rig.startWorker('maintenance', { SCHEDULES_FILE: file });
    await rig.startWorker('restore', { SCHEDULES_FILE: file });
    const list = JSON.parse((await rig.cli(['schedule', 'list', '--json'])).stdout);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({
      name: 'nightly-small',
      source: 'file',
      tz: 'Europe/Berlin',
      payload: { env: 'small', compress: 3 },
    });
    expect(await rig.producer().queues.get('backup').getJobSchedulersCount()).toBe(1);

    writeFileSync(file, 'schedules: []\n');
    await rig.startWorker('maintenance', { SCHEDULES_FILE: file });
    expect(JSON.parse((await rig.cli(['schedule', 'list', '--json'])).stdout)).toEqual([]);
    expect(await rig.producer().queues.get('backup').getJobSchedulersCount()).toBe(0);
  });

  it('an invalid SCHEDULES_FILE stops the worker with one line naming the schedule', async () => {
    const file = path.join(rig.backupDir, 'bad.json');
    writeFileSync(
      file,
      JSON.stringify([{ name: 'oops', cron: '* * * * *', operation: 'backup', payload: { env: 'nowhere' } }]),
    );
    const worker = rig.startWorker('backup', { SCHEDULES_FILE: file });
    await expect(worker).rejects.toThrow(
      /invalid configuration: SCHEDULES_FILE: schedule "oops": unknown environment "nowhere"/,
    );
  });

  it('refuses bad schedules with a one-line error, changing nothing', async () => {
    for (const args of [
      ['schedule', 'add', 'x', '--cron', '61 * * * *', 'backup', '--env', 'small'],
      ['schedule', 'add', 'x', '--cron', '* * * * *', '--tz', 'Mars/Olympus', 'backup', '--env', 'small'],
      ['schedule', 'add', 'x', '--cron', '* * * * *', 'backup', '--env', 'nowhere'],
      ['schedule', 'add', 'Bad Name', '--cron', '* * * * *', 'backup', '--env', 'small'],
      ['schedule', 'add', 'x', 'backup', '--env', 'small'],
      ['schedule', 'add', 'x', '--cron', '* * * * *', 'launch', '--env', 'small'],
      ['schedule', 'remove', 'never-added'],
    ]) {
      const run = await rig.cli(args);
      expect(run.exitCode, args.join(' ')).toBe(2);
      expect(run.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    expect(JSON.parse((await rig.cli(['schedule', 'list', '--json'])).stdout)).toEqual([]);
  });
});

describe('notifications', () => {
  const setup = rigNotifyingReceiver({ JOB_ATTEMPTS: '2', JOB_BACKOFF_MS: '200', SCHEDULE_CHECK_INTERVAL_MS: '500' });

  beforeAll(async () => {
    await sql(setup.rig.db('app'), 'CREATE TABLE t (id int)');
    // An environment whose server is not there: connection refused, retried, then failed for good.
    setup.rig.env.DATABASE_URL_GONE = 'postgres://dbops:s3cret-pass@127.0.0.1:1/gone';
  });

  it('a webhook gets exactly one notification per job failed for good, none for retried attempts or successes', async () => {
    const { rig, receiver } = setup;
    await rig.startWorker('maintenance');
    await rig.startWorker('maintenance');
    const producer = rig.producer();
    const failing = [
      await producer.enqueue('maintenance', { env: 'gone', action: 'report' }), // refused twice: two attempts
      await producer.enqueue('maintenance', { env: 'gone', action: 'analyze' }),
      await producer.enqueue('maintenance', { env: 'app', action: 'vacuum', table: 'public.missing' }), // fails at once
    ];
    const fine = await producer.enqueue('maintenance', { env: 'app', action: 'report' });
    for (const job of failing) expect((await producer.wait(job.id)).state).toBe('failed');
    expect((await producer.wait(fine.id)).state).toBe('completed');
    expect((await producer.getJob(failing[0]!.id))!.attemptsMade).toBe(2);

    await waitFor(
      'three notifications',
      () => receiver.received.filter((body) => body.event === 'job.failed').length >= 3,
      20_000,
    );
    await sleep(2_000); // anything more would come now
    const failures = receiver.received.filter((body) => body.event === 'job.failed');
    expect(failures.map((body) => (body.job as { id: string }).id).sort()).toEqual(failing.map((job) => job.id).sort());
    expect(receiver.requests).toBe(receiver.received.length + 1); // the first was answered 503, and sent again
    const gone = failures.find((body) => (body.job as { id: string }).id === failing[0]!.id)!;
    expect(gone).toMatchObject({ env: 'gone', job: { type: 'maintenance', attempts: 2 } });
    expect(String(gone.text)).toMatch(/^dbops: maintenance job .* for gone failed after 2 attempt\(s\): /);
    expect(JSON.stringify(receiver.received)).not.toContain('s3cret-pass');
  });

  it('a schedule whose runs do not happen is reported missed: in schedule list, in /metrics, and once by webhook', async () => {
    const { rig, receiver } = setup;
    // Scheduled on the copy queue, where no worker runs: the runs are due, and never happen.
    const added = await rig.cli([
      'schedule',
      'add',
      'lonely',
      '--cron',
      '*/2 * * * * *',
      'copy',
      '--from',
      'app',
      '--to',
      'gone',
    ]);
    expect(added.exitCode, added.stderr).toBe(0);
    await waitFor(
      'the miss to be reported',
      () => receiver.received.some((body) => body.event === 'schedule.missed'),
      20_000,
    );
    await sleep(4_000); // more runs are missed meanwhile: still one alert for the streak
    const alerts = receiver.received.filter((body) => body.event === 'schedule.missed');
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ schedule: 'lonely' });
    expect(String(alerts[0]!.text)).toContain('schedule "lonely"');

    const list = await rig.cli(['schedule', 'list']);
    expect(list.stdout).toMatch(/^lonely\s.*MISSED \(run due \d{4}-\d\d-\d\d \d\d:\d\d \(/m);
    const server = await startTestServer(rig);
    try {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      expect(metrics).toMatch(/^dbops_schedule_missed\{schedule="lonely",operation="copy"\} 1$/m);
      expect(metrics).toMatch(/^dbops_schedule_next_run_timestamp_seconds\{schedule="lonely"\} \d+/m);
    } finally {
      await server.close();
    }
    expect((await rig.cli(['schedule', 'remove', 'lonely'])).exitCode).toBe(0);
  });
});

describe('notifications on success (NOTIFY_ON_SUCCESS)', () => {
  const setup = rigNotifyingReceiver({ NOTIFY_ON_SUCCESS: 'true' });

  it('a completed job is notified once, even with two workers following the queue', async () => {
    const { rig, receiver } = setup;
    await rig.startWorker('maintenance');
    await rig.startWorker('maintenance');
    const producer = rig.producer();
    const job = await producer.enqueue('maintenance', { env: 'app', action: 'report' });
    expect((await producer.wait(job.id)).state).toBe('completed');
    await waitFor('the notification', () => receiver.received.length >= 1, 20_000);
    await sleep(1_500);
    expect(receiver.received).toHaveLength(1);
    expect(receiver.received[0]).toMatchObject({
      event: 'job.completed',
      env: 'app',
      job: { id: job.id, type: 'maintenance', attempts: 1 },
    });
  });
});
