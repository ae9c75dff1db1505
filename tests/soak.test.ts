import { randomBytes, randomInt } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OperationType } from '../src/operations/index.js';
import type { Producer } from '../src/queue/producer.js';
import { createDatabase, fingerprint, loadPagila, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { PersistentRedis } from './helpers/redis-servers.js';
import { S3Server } from './helpers/s3.js';
import { waitFor } from './helpers/wait.js';

/*
 * The chaos soak (issue 23): for SOAK_SECONDS, a mixed stream of backups (a file and an S3 store),
 * restores, copies (stream and --jobs 2), migrations and maintenance over several environments, two
 * workers per type, while faults are injected: workers SIGKILLed mid-job, Redis restarted, dbops'
 * PostgreSQL backends terminated, the S3 server restarted, the backup directory made read-only. Then
 * the invariants, and one table. `npm test` runs a short one; `npm run soak` runs ten minutes.
 */

const SECONDS = Number(process.env.SOAK_SECONDS ?? 75);
const FAULTS = [
  'worker killed',
  'redis restarted',
  'backends terminated',
  's3 restarted',
  'backup dir read-only',
] as const;
type Fault = (typeof FAULTS)[number];
const TYPES = ['backup', 'restore', 'copy', 'migrate', 'maintenance'] as const;

/** Mounting a tmpfs (for a backup directory that can be made read-only: root writes anywhere else) needs root. */
const canMount = (): boolean => {
  const probe = mkdtempSync(path.join(os.tmpdir(), 'dbops-soak-probe-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (mounted) spawnSync('umount', [probe]);
  rmSync(probe, { recursive: true, force: true });
  return mounted;
};
const mountable = canMount();

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Enqueued {
  type: OperationType;
  id: string;
  what: string;
}

describe.skipIf(!mountable)(
  `chaos soak: ${SECONDS} s${mountable ? '' : ' (skipped: cannot mount a tmpfs here)'}`,
  () => {
    const BUCKET = 'soak';
    let redis: PersistentRedis;
    let s3: S3Server;
    let rig: Rig;
    let producer: Producer;
    let migrationsDir: string;
    const workers = new Map<WorkerProcess, (typeof TYPES)[number]>();
    const initial = new Map<string, Fingerprint>();
    let source: Fingerprint;

    beforeAll(async () => {
      redis = new PersistentRedis(await freePort(), 15_000);
      await redis.start();
      s3 = await S3Server.start([BUCKET]);
      rig = await Rig.create({
        REDIS_URL: redis.url,
        JOB_ATTEMPTS: '25',
        JOB_BACKOFF_MS: '300',
        COPY_OWN_STREAM_BYTES: String(256 * 1024), // Pagila's bigger tables get lanes of their own
        BACKUP_SIGNING_KEY: randomBytes(32).toString('hex'),
        RESTORE_KEEP_PREVIOUS: 'false',
      });
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1g,mode=0700', 'tmpfs', rig.backupDir]);
      Object.assign(rig.env, s3.env(`file://${rig.backupDir},s3://${BUCKET}/${rig.id}?forcePathStyle=true`));
      migrationsDir = mkdtempSync(path.join(os.tmpdir(), 'dbops-soak-migrations-'));
      rig.env.MIGRATIONS_ROOT = migrationsDir;
      await loadPagila(rig.db('src'));
      rig.setEnv('src', rig.db('src'));
      source = await fingerprint(rig.db('src'));
      for (const target of ['t1', 't2']) {
        await createDatabase(rig.db(target));
        await sql(
          rig.db(target),
          `CREATE TABLE precious (id int PRIMARY KEY, note text); INSERT INTO precious VALUES (1, 'keep ${target}')`,
        );
        rig.setEnv(target, rig.db(target));
        initial.set(target, await fingerprint(rig.db(target)));
      }
      await createDatabase(rig.db('mig'));
      rig.setEnv('mig', rig.db('mig'));
      for (const type of TYPES) for (let i = 0; i < 2; i += 1) workers.set(await rig.startWorker(type), type);
      producer = rig.producer();
    }, 300_000);

    afterAll(async () => {
      await rig?.stopWorkers();
      if (rig) spawnSync('umount', ['-l', rig.backupDir]);
      await rig?.cleanup();
      await s3?.stop();
      await redis?.stop();
      if (migrationsDir) rmSync(migrationsDir, { recursive: true, force: true });
    }, 120_000);

    it(
      'no job lost or completed twice, every target old or new, every backup restorable, nothing left behind',
      async () => {
        const enqueued: Enqueued[] = [];
        const faults = new Map<Fault, number>(FAULTS.map((fault) => [fault, 0]));
        const violations: string[] = [];
        let migrations = 0;
        const deadline = Date.now() + SECONDS * 1000;

        /** Adds a job with an id of ours, again and again while Redis is away: the same id never makes a second job. */
        const add = async (type: OperationType, payload: Record<string, unknown>, what: string) => {
          const id = `${type}-soak-${randomBytes(6).toString('hex')}`;
          for (let tries = 0; ; tries += 1) {
            try {
              await producer.enqueue(type, payload as never, { jobId: id });
              enqueued.push({ type, id, what });
              return;
            } catch (error) {
              if (tries > 60) throw error;
              await sleep(500);
            }
          }
        };
        const stateOf = async (job: Enqueued): Promise<string> => {
          try {
            const found = await producer.getJob(`${job.type}/${job.id}`);
            return found ? await found.getState() : 'missing';
          } catch {
            return 'unknown';
          }
        };
        const unsettled = async () => {
          const states = await Promise.all(enqueued.map(async (job) => ({ job, state: await stateOf(job) })));
          return states.filter(({ state }) => state !== 'completed' && state !== 'failed');
        };

        const backupExists = async () =>
          (
            await rig
              .cli(['backups', 'list', '--env', 'src', '--json'])
              .then((run) => JSON.parse(run.stdout || '[]') as unknown[])
              .catch(() => [])
          ).length > 0;

        const stream = async () => {
          await add('backup', { env: 'src' }, 'backup src');
          while (Date.now() < deadline) {
            if ((await unsettled()).length >= 4) {
              await sleep(500);
              continue;
            }
            const target = `t${randomInt(1, 3)}`;
            switch (randomInt(0, 7)) {
              case 0:
                await add('backup', { env: 'src' }, 'backup src');
                break;
              case 1:
                if (await backupExists()) await add('restore', { env: target, latest: 'src' }, `restore ${target}`);
                break;
              case 2:
                await add('copy', { from: 'src', to: target, verify: true }, `copy ${target}`);
                break;
              case 3:
                await add('copy', { from: 'src', to: target, jobs: 2, verify: true }, `copy --jobs 2 ${target}`);
                break;
              case 4:
              case 5: {
                migrations += 1;
                writeFileSync(
                  path.join(migrationsDir, `${migrations}_step.sql`),
                  `-- Up Migration\nCREATE TABLE step_${migrations} (id int);\nINSERT INTO step_${migrations} VALUES (${migrations});\n`,
                );
                await add('migrate', { env: 'mig', action: 'up' }, 'migrate mig');
                break;
              }
              default:
                await add(
                  'maintenance',
                  { env: 'src', action: randomInt(0, 2) ? 'vacuum' : 'analyze' },
                  'maintenance src',
                );
            }
            await sleep(randomInt(200, 1200));
          }
        };

        const inject = async (fault: Fault) => {
          switch (fault) {
            case 'worker killed': {
              const [worker, type] = [...workers.entries()][randomInt(0, workers.size)]!;
              worker.process.kill('SIGKILL');
              await worker.exited;
              workers.delete(worker);
              workers.set(await rig.startWorker(type), type);
              break;
            }
            case 'redis restarted':
              await redis.restart(1_000);
              break;
            case 'backends terminated':
              await sql(
                'postgres',
                `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname LIKE '${rig.dbPrefix}%' AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
              );
              break;
            case 's3 restarted':
              await s3.restart(1_000);
              break;
            case 'backup dir read-only': {
              // A remount to read-only is refused while a file is open for writing there: tried until a moment without one.
              let readOnly = false;
              for (let tries = 0; tries < 50 && !readOnly; tries += 1) {
                readOnly = spawnSync('mount', ['-o', 'remount,ro', rig.backupDir]).status === 0;
                if (!readOnly) await sleep(200);
              }
              if (!readOnly) return; // busy all along: not injected, tried again at the next turn
              await sleep(3_000);
              execFileSync('mount', ['-o', 'remount,rw', rig.backupDir]);
              break;
            }
          }
          faults.set(fault, faults.get(fault)! + 1);
        };

        const chaos = async () => {
          // Every kind at least once, in turn, then at random, spread over the run.
          const interval = Math.min(20_000, Math.max(3_000, (SECONDS * 1000) / (FAULTS.length * 2 + 1)));
          while (Date.now() + interval < deadline) {
            await sleep(interval);
            // A kind not injected yet (in turn at first, or one that could not be) comes before a random one.
            await inject(FAULTS.find((fault) => faults.get(fault) === 0) ?? FAULTS[randomInt(0, FAULTS.length)]!);
          }
        };

        await Promise.all([stream(), chaos()]);

        // Drain: every job ends (jobs retried after a fault need their backoff and a worker).
        await waitFor('every job to settle', async () => (await unsettled()).length === 0, 300_000).catch(
          () => undefined,
        );
        for (const { job, state } of await unsettled())
          violations.push(`job lost: ${job.what} (${job.type}/${job.id}) is ${state}`);

        // Completed twice: BullMQ's event stream of each queue says every completion.
        const client = new Redis(redis.url);
        const completions = new Map<string, number>();
        try {
          for (const type of TYPES) {
            const events = await client.xrange(`${rig.prefix}:${type}:events`, '-', '+');
            for (const [, fields] of events) {
              const at = fields.indexOf('event');
              if (fields[at + 1] !== 'completed') continue;
              const jobId = fields[fields.indexOf('jobId') + 1]!;
              completions.set(`${type}/${jobId}`, (completions.get(`${type}/${jobId}`) ?? 0) + 1);
            }
          }
        } finally {
          client.disconnect();
        }
        for (const [job, count] of completions) if (count > 1) violations.push(`job completed ${count} times: ${job}`);

        // Recovery: a fresh worker of each type cleans up after the dead ones; then every worker stops.
        for (const type of TYPES) workers.set(await rig.startWorker(type), type);
        await sleep(3_000);
        await rig.stopWorkers();

        const outcomes = await Promise.all(enqueued.map(async (job) => ({ job, state: await stateOf(job) })));
        const count = (type: string, state: string) =>
          outcomes.filter(({ job, state: s }) => job.type === type && s === state).length;

        // One backup per backup job, each a whole one in both stores.
        const listed = await rig.cli(['backups', 'list', '--env', 'src', '--json']);
        const backups = JSON.parse(listed.stdout || '[]') as { id: string; jobId: string; heldBy: string[] }[];
        if (listed.stderr.trim())
          violations.push(`the stores hold objects that are not dbops' own: ${listed.stderr.trim()}`);
        const perJob = new Map<string, number>();
        for (const backup of backups) perJob.set(backup.jobId, (perJob.get(backup.jobId) ?? 0) + 1);
        for (const [job, made] of perJob) if (made > 1) violations.push(`backup job ${job} published ${made} backups`);
        for (const backup of backups)
          if (backup.heldBy.length !== 2) violations.push(`backup ${backup.id} is in ${backup.heldBy.join(', ')} only`);

        // Every published backup is whole, and the newest ones restore to exactly the source.
        for (const backup of backups) {
          const verified = await rig.cli(['backups', 'verify', backup.id, '--local']);
          if (verified.exitCode !== 0)
            violations.push(`backup ${backup.id} does not verify: ${verified.stderr.trim()}`);
        }
        await createDatabase(rig.db('check'));
        rig.setEnv('check', rig.db('check'));
        for (const backup of backups.slice(-(process.env.SOAK_SECONDS ? 10 : 2))) {
          const restored = await rig.cli(['restore', '--env', 'check', '--backup', backup.id, '--local']);
          if (restored.exitCode !== 0)
            violations.push(`backup ${backup.id} does not restore: ${restored.stderr.trim()}`);
          else if (JSON.stringify(await fingerprint(rig.db('check'))) !== JSON.stringify(source))
            violations.push(`backup ${backup.id} restores to other data than its source`);
        }

        // Targets: their old content or the source's, never anything between.
        for (const target of ['t1', 't2']) {
          const now = JSON.stringify(await fingerprint(rig.db(target)));
          if (now !== JSON.stringify(initial.get(target)) && now !== JSON.stringify(source))
            violations.push(`${target} is neither its old content nor the source`);
        }
        // Migrations: each applied once, in order, each with its row.
        const applied = await sql<{ name: string }>(rig.db('mig'), 'SELECT name FROM pgmigrations ORDER BY run_on, id');
        if (new Set(applied.map((row) => row.name)).size !== applied.length)
          violations.push('a migration was recorded twice');
        for (const row of applied) {
          const step = /^(\d+)_step$/.exec(row.name)?.[1];
          const rows = step
            ? await sql<{ n: number }>(rig.db('mig'), `SELECT count(*)::int AS n FROM step_${step}`)
            : [];
          if (rows[0]?.n !== 1) violations.push(`migration ${row.name} left ${rows[0]?.n ?? 'no'} rows`);
        }

        // Nothing left behind: shadow or scratch databases, partial files, uploads in progress, processes.
        for (const name of await shadowDatabasesFor(rig.dbPrefix)) violations.push(`database left behind: ${name}`);
        const partial = path.join(rig.backupDir, '.partial');
        const leftFiles = spawnSync('find', [partial, '-type', 'f']).stdout?.toString().trim();
        if (leftFiles) violations.push(`partial files left behind: ${leftFiles.split('\n').join(', ')}`);
        const storeFiles = readdirSync(rig.backupDir).filter((name) => /\.(dump|d)$/.test(name));
        for (const name of storeFiles)
          if (!readdirSync(rig.backupDir).includes(name.replace(/\.(dump|d)$/, '.json')))
            violations.push(`archive without a manifest: ${name}`);
        const bucketKeys = await s3.keys(BUCKET, `${rig.id}/`);
        for (const key of bucketKeys.filter((name) => name.includes('/.partial/')))
          violations.push(`upload marker left behind: ${key}`);
        for (const key of bucketKeys.filter((name) => /\.dump$/.test(name)))
          if (!bucketKeys.includes(key.replace(/\.dump$/, '.json')))
            violations.push(`object without a manifest: ${key}`);
        // dbops' tools name the database in their arguments (PostgreSQL's own backends, "postgres: …", are not dbops').
        const processes = (spawnSync('pgrep', ['-af', rig.dbPrefix]).stdout?.toString() ?? '')
          .split('\n')
          .filter((line) => line.trim() && !/^\d+ postgres: /.test(line));
        if (processes.length) violations.push(`processes left running: ${processes.join('; ')}`);

        const rows = [
          ...TYPES.map((type) => [
            `${type} jobs`,
            `${count(type, 'completed')} completed, ${count(type, 'failed')} failed`,
          ]),
          ...FAULTS.map((fault) => [`fault: ${fault}`, String(faults.get(fault))]),
          ['backups published', String(backups.length)],
          ['migrations applied', `${applied.length} of ${migrations}`],
          ['violations', String(violations.length)],
        ];
        const width = Math.max(...rows.map(([name]) => name!.length));
        console.log(
          [
            `chaos soak, ${SECONDS} s:`,
            ...rows.map(([name, value]) => `  ${name!.padEnd(width)}  ${value}`),
            ...violations.map((line) => `  VIOLATION ${line}`),
          ].join('\n'),
        );
        const failedReasons = await Promise.all(
          outcomes
            .filter(({ state }) => state === 'failed')
            .map(
              async ({ job }) =>
                `${job.what}: ${(await producer.getJob(`${job.type}/${job.id}`))?.failedReason ?? '?'}`,
            ),
        );
        if (failedReasons.length)
          console.log(['failed jobs:', ...failedReasons.map((line) => `  ${line.split('\n')[0]}`)].join('\n'));

        expect(violations).toEqual([]);
        for (const fault of FAULTS) expect(faults.get(fault), fault).toBeGreaterThan(0);
        expect(count('backup', 'completed')).toBeGreaterThan(0);
      },
      (SECONDS + 900) * 1000,
    );
  },
);
