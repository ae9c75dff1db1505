import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseExists, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** Bad input: one clear line on stderr, exit 2, nothing enqueued, nothing changed. */
describe('manage-db refuses bad input', () => {
  let rig: Rig;
  let backupId: string;

  beforeAll(async () => {
    rig = await Rig.create();
    await sql('postgres', `CREATE DATABASE "${rig.db('app')}"`);
    await sql(rig.db('app'), 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)');
    rig.setEnv('app', rig.db('app'));
    rig.setEnv('other', rig.db('other'));
    const worker = await rig.startWorker('backup');
    const made = await rig.cli(['backup', '--env', 'app', '--wait', '--json']);
    expect(made.exitCode).toBe(0);
    backupId = JSON.parse(made.stdout).backupId;
    worker.process.kill('SIGTERM');
    await worker.exited;
  });
  afterAll(async () => rig?.cleanup());

  const cases: [string, (id: string) => string[], RegExp][] = [
    ['unknown environment', () => ['backup', '--env', 'nowhere'], /unknown environment "nowhere"/],
    ['an environment name that is not a name', () => ['backup', '--env', 'a;b'], /environment name/],
    [
      'traversal in a backup id',
      () => ['restore', '--env', 'other', '--backup', '../../etc/passwd'],
      /invalid restore job: backup:/,
    ],
    [
      'a path as backup id',
      () => ['restore', '--env', 'other', '--backup', '/tmp/x.dump'],
      /invalid restore job: backup:/,
    ],
    ['dots in a backup id', () => ['restore', '--env', 'other', '--backup', '..'], /invalid restore job: backup:/],
    [
      'an unknown backup id',
      () => ['restore', '--env', 'other', '--backup', 'app-20000101t000000z-000000'],
      /unknown backup "app-20000101t000000z-000000"/,
    ],
    ['compression out of range', () => ['backup', '--env', 'app', '--compress', '10'], /compress: Too big/],
    ['negative compression', () => ['backup', '--env', 'app', '--compress', '-1'], /compress: Too small/],
    ['zero jobs', () => ['backup', '--env', 'app', '--format', 'directory', '--jobs', '0'], /jobs: Too small/],
    ['huge jobs', () => ['restore', '--env', 'other', '--backup', backupId, '--jobs', '100000'], /jobs: Too big/],
    ['parallel custom format', () => ['backup', '--env', 'app', '--jobs', '2'], /need format "directory"/],
    ['a number that is not one', () => ['backup', '--env', 'app', '--compress', '3.5'], /"3.5" is not a whole number/],
    ['an unknown format', () => ['backup', '--env', 'app', '--format', 'tar'], /argument 'tar' is invalid/],
    ['an unknown command', () => ['frobnicate'], /unknown command 'frobnicate'/],
    ['an unknown option', () => ['backup', '--env', 'app', '--fast'], /unknown option '--fast'/],
    ['a missing environment', () => ['backup'], /required option '--env <env>' not specified/],
    ['a missing backup id', () => ['restore', '--env', 'other'], /backup: name a backup, or latest \(one of them\)/],
    ['--from without --latest', () => ['restore', '--env', 'other', '--from', 'app'], /--from goes with --latest/],
    ['no command at all', () => [], /./],
    [
      'a mistyped command',
      () => ['bakup', '--env', 'app'],
      /^manage-db: unknown command 'bakup' \(Did you mean backup\?\)$/,
    ],
    [
      'a mistyped option',
      () => ['backup', '--evn', 'app'],
      /^manage-db: unknown option '--evn' \(Did you mean --env\?\)$/,
    ],
    ['a mistyped subcommand', () => ['jobs', 'lst'], /^manage-db: unknown command 'lst' \(Did you mean list\?\)$/],
    [
      'a state that is none',
      () => ['jobs', 'list', '--state', 'sleeping'],
      /^manage-db: state: unknown state "sleeping" \(one of active, waiting, delayed, prioritized, waiting-children, completed, failed, cancelled\)$/,
    ],
  ];

  // Keys BullMQ itself keeps alive or lets expire (the stalled-check marker) are not jobs.
  const queueKeys = () => rig.queueKeys();

  it.each(cases)('%s', async (_name, args, message) => {
    const keysBefore = await queueKeys();
    const filesBefore = readdirSync(rig.backupDir).sort();
    const run = await rig.cli(args(backupId));
    expect(run.exitCode).toBe(2);
    if (args(backupId).length > 0) {
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr.trim()).toMatch(message);
      expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect(run.stdout).toBe('');
    }
    expect(await queueKeys()).toEqual(keysBefore);
    expect(readdirSync(rig.backupDir).sort()).toEqual(filesBefore);
    expect(await sql(rig.db('app'), 'SELECT count(*)::int AS n FROM t')).toEqual([{ n: 2 }]);
    expect(await databaseExists(rig.db('other'))).toBe(false);
  });

  it('a missing MIGRATIONS_ROOT is a configuration to mend: exit 2, one line with the fix, nothing enqueued', async () => {
    const keysBefore = await queueKeys();
    const run = await rig.cli(['migrate', '--env', 'app', 'status'], {
      MIGRATIONS_ROOT: '/nonexistent/dbops-migrations',
    });
    expect(run.exitCode).toBe(2);
    expect(run.stderr.trim()).toBe(
      'manage-db: MIGRATIONS_ROOT (dbops-migrations) does not exist on the worker: create it, or set MIGRATIONS_ROOT to the directory that holds the migration folders',
    );
    expect(await queueKeys()).toEqual(keysBefore);
  });

  it('a failed command says `manage-db: <message>` in one line and exits 1 (2 is for bad usage)', async () => {
    const run = await rig.cli(['jobs', 'show', '999999']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr.trim()).toBe('manage-db: no job "999999"');
  });

  it('--version prints the package version, and reads no configuration to do so', async () => {
    const { version } = JSON.parse(readFileSync(path.resolve(import.meta.dirname, '../package.json'), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-V']) {
      const run = await rig.cli([flag], { REDIS_URL: 'not a url', PROTECTED_ENVS: 'nowhere' });
      expect(run.exitCode).toBe(0);
      expect(run.stdout.trim()).toBe(version);
    }
  });

  it('output into a closed pipe ends quietly: no stack trace, exit 0', async () => {
    const cli = path.resolve(import.meta.dirname, '../bin/manage-db.cjs');
    const run = await execa(
      'bash',
      ['-c', `node '${cli}' schema | head -c 20 > /dev/null; echo "status \${PIPESTATUS[0]}" >&2`],
      { reject: false, all: true },
    );
    expect(run.all?.trim()).toBe('status 0');
  });

  it('reads .env in the working directory; the real environment wins over it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-dotenv-'));
    try {
      writeFileSync(
        path.join(dir, '.env'),
        'DATABASE_URL_FROM_DOTENV=postgres://u@127.0.0.1/x\nPROTECTED_ENVS=prodution\n',
      );
      const cli = path.resolve(import.meta.dirname, '../bin/manage-db.cjs');
      const run = await execa('node', [cli, 'backup', '--env', 'nowhere'], {
        cwd: dir,
        env: { PATH: process.env.PATH!, REDIS_URL: rig.env.REDIS_URL!, PROTECTED_ENVS: 'none' },
        extendEnv: false,
        reject: false,
      });
      expect(run.exitCode).toBe(2);
      expect(run.stderr).toContain('unknown environment "nowhere" (known: from-dotenv;'); // from .env; its PROTECTED_ENVS lost to the real one
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [
      [] as string[],
      /^manage-db: stopped following (maintenance\/\S+); the job goes on \(cancel it with: manage-db jobs cancel \1\)$/,
      'waiting',
    ],
    [['--cancel-on-interrupt'], /^manage-db: cancelled (maintenance\/\S+) \(it had not started\)$/, 'gone'],
  ] as const)(
    'Ctrl-C while following a job (%j): says what became of the job, exit 130',
    async (extra, message, after) => {
      // No maintenance worker runs here: the job waits, and the CLI follows it until interrupted.
      const cli = execa(
        'node',
        [
          path.resolve(import.meta.dirname, '../bin/manage-db.cjs'),
          'maintenance',
          'report',
          '--env',
          'app',
          '--wait',
          ...extra,
        ],
        {
          env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', ...rig.env },
          extendEnv: false,
          reject: false,
          all: false,
          buffer: true,
        },
      );
      let printed = '';
      cli.stdout!.on('data', (chunk: Buffer) => (printed += chunk.toString()));
      await waitFor('the job id', () => /^maintenance-\S+$/m.test(printed), 20_000);
      cli.kill('SIGINT');
      const ended = await cli;
      expect(ended.exitCode).toBe(130);
      const said = String(ended.stderr).trim().split('\n').at(-1)!;
      expect(said).toMatch(message);
      const reference = message.exec(said)![1]!;
      const job = await rig.producer().getJob(reference);
      expect(job ? await job.getState() : 'gone').toBe(after);
      if (job) await job.remove();
    },
  );

  it('a worker without any environment says so at start', async () => {
    const worker = await rig.startWorker(
      'triggers',
      Object.fromEntries(
        Object.keys(rig.env)
          .filter((key) => key.startsWith('DATABASE_URL_'))
          .map((key) => [key, '']),
      ),
    );
    expect(worker.output()).toContain('no database environment is configured: set DATABASE_URL_<ENV>');
    worker.process.kill('SIGTERM');
    await worker.exited;
  });

  it('says at once when no worker of the queue is running, and still enqueues the job', async () => {
    const run = await rig.cli(['maintenance', 'report', '--env', 'app', '--no-wait']);
    expect(run.exitCode).toBe(0);
    expect(run.stderr.trim()).toBe('no maintenance worker is running: the job waits in the queue until one starts');
    const job = await rig.producer().getJob(run.stdout.trim());
    expect(await job?.getState()).toBe('waiting');
    await job?.remove();
  });

  it('an invalid configuration names the variable in one line and exits 2', async () => {
    const run = await rig.cli(['backup', '--env', 'app'], { LOG_LEVEL: 'chatty' });
    expect(run.exitCode).toBe(2);
    expect(run.stderr.trim()).toMatch(/^manage-db: invalid configuration: LOG_LEVEL: .*\(got "chatty"\)$/);
  });

  it('a setting only the server reads (a too-short API_TOKEN) stops the server, not the CLI', async () => {
    const run = await rig.cli(['backups', 'list', '--json'], { API_TOKEN: 'short', DASHBOARD_USER: 'admin' });
    expect(run.stderr).toBe('');
    expect(run.exitCode).toBe(0);
    expect(Array.isArray(JSON.parse(run.stdout))).toBe(true);
  });

  it('an unreachable PostgreSQL: one line naming the environment, host, port and database, never the password', async () => {
    const run = await rig.cli(['backup', '--env', 'down', '--local'], {
      DATABASE_URL_DOWN: 'postgres://app:pw-Never-Shown@127.0.0.1:1/orders',
    });
    expect(run.exitCode).toBe(1);
    // After --local's notice and its progress lines: the error, in one line.
    const lines = run.stderr
      .trim()
      .split('\n')
      .filter((line) => !line.startsWith('running backup locally') && !/^\[\s*\d+%\]/.test(line));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /cannot connect to down's PostgreSQL at 127\.0\.0\.1:1 \(database orders\): connect ECONNREFUSED/,
    );
    expect(run.stderr + run.stdout).not.toContain('pw-Never-Shown');
  });

  it('an unreachable Redis fails the command clearly, after validating', async () => {
    const run = await rig.cli(['backup', '--env', 'app'], { REDIS_URL: 'redis://127.0.0.1:1' });
    expect(run.exitCode).toBe(1);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/ECONNREFUSED|Redis/);
  });
});
