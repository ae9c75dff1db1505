import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForeignProducer } from './helpers/foreign.js';
import { fingerprint, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { pgUrl } from './helpers/services.js';

const tableExists = async (database: string, table: string) =>
  (await sql<{ t: string | null }>(database, 'SELECT to_regclass($1)::text AS t', [table]))[0]?.t !== null;

describe('every change to a protected environment needs its confirmation, whoever the producer', () => {
  let rig: Rig;
  let foreign: ForeignProducer;
  let migrations: string;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'prod' });
    await loadPagila(rig.db('prod'));
    rig.setEnv('prod', rig.db('prod'));
    // Another name for the same database, through another spelling of its host: protected as well.
    rig.env.DATABASE_URL_PROD_ALIAS = pgUrl(rig.db('prod')).replace('127.0.0.1', 'localhost');
    await sql(rig.db('prod'), 'CREATE TABLE precious (id int)');
    migrations = path.join(rig.backupDir, 'migrations');
    mkdirSync(migrations);
    writeFileSync(
      path.join(migrations, '1_planted.sql'),
      '-- Up Migration\nCREATE TABLE planted (id int);\n-- Down Migration\nDROP TABLE planted;\n',
    );
    for (const type of ['backup', 'restore', 'migrate', 'triggers', 'maintenance']) await rig.startWorker(type);
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await foreign?.close();
    await rig?.cleanup();
  });

  it('refuses unconfirmed triggers, migrations, reindex, vacuum full, prune and restore jobs added straight to the queues', async () => {
    const two = [];
    for (let i = 0; i < 2; i += 1) {
      const made = await foreign.add('backup', { env: 'prod' });
      two.push((await foreign.settled('backup', made.id!)).result as { backupId: string });
    }
    const before = await fingerprint(rig.db('prod'));
    const refused = [
      ['triggers', { env: 'prod', action: 'create', sql: 'DROP TABLE precious' }],
      ['triggers', { env: 'prod', action: 'drop', table: 'public.film', name: 'last_updated' }],
      ['triggers', { env: 'prod-alias', action: 'disable', table: 'public.film' }],
      ['migrate', { env: 'prod', dir: migrations, action: 'up' }],
      ['migrate', { env: 'prod', dir: migrations, action: 'down' }],
      ['maintenance', { env: 'prod', action: 'reindex' }],
      ['maintenance', { env: 'prod', action: 'vacuum', full: true }],
      ['backup', { env: 'prod', policy: 'last=1' }, 'prune'],
      ['restore', { env: 'prod', backup: two[0]!.backupId }],
      ['restore', { env: 'prod-alias', backup: two[0]!.backupId, confirm: 'prod' }],
      ['triggers', { env: 'prod', action: 'create', sql: 'DROP TABLE precious', confirm: 'staging' }],
    ] as const;
    for (const [queue, data, name] of refused) {
      const job = await foreign.add(queue, data, name ?? queue);
      const outcome = await foreign.settled(queue, job.id!);
      expect(outcome.state, JSON.stringify(data)).toBe('failed');
      expect(outcome.failedReason).toMatch(
        /^"prod(-alias)?" is a protected environment: the field "confirm" must repeat its name$/,
      );
    }
    expect(await fingerprint(rig.db('prod'))).toEqual(before);
    expect(await tableExists(rig.db('prod'), 'planted')).toBe(false);
    expect(readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'))).toHaveLength(2);

    // What changes no data runs unconfirmed; confirmed, the rest runs.
    for (const [queue, data] of [
      ['maintenance', { env: 'prod', action: 'analyze' }],
      ['maintenance', { env: 'prod', action: 'vacuum' }],
      ['triggers', { env: 'prod', action: 'list' }],
      ['migrate', { env: 'prod', dir: migrations, action: 'up', dryRun: true }],
      ['migrate', { env: 'prod', dir: migrations, action: 'up', confirm: 'prod' }],
    ] as const) {
      const job = await foreign.add(queue, data);
      const outcome = await foreign.settled(queue, job.id!);
      expect(outcome.state, `${JSON.stringify(data)}: ${outcome.failedReason}`).toBe('completed');
    }
    expect(await tableExists(rig.db('prod'), 'planted')).toBe(true);
  });

  it('a prune of every environment leaves protected ones alone; the CLI asks for --confirm', async () => {
    const all = await foreign.add('backup', { policy: 'last=1' }, 'prune');
    const outcome = await foreign.settled('backup', all.id!);
    expect(outcome.state, outcome.failedReason).toBe('completed');
    const prod = (
      outcome.result as { environments: { env: string; pruned: unknown[]; kept: { reasons: string[] }[] }[] }
    ).environments.find((env) => env.env === 'prod')!;
    expect(prod.pruned).toEqual([]);
    expect(prod.kept[0]!.reasons).toEqual(['protected: prune it with env prod and confirm prod']);

    const unconfirmed = await rig.cli(['backups', 'prune', '--env', 'prod', '--policy', 'last=1']);
    expect(unconfirmed.exitCode).toBe(2);
    expect(unconfirmed.stderr.trim()).toBe(
      'manage-db: "prod" is a protected environment: repeat its name with --confirm prod',
    );
    const confirmed = await rig.cli([
      'backups',
      'prune',
      '--env',
      'prod',
      '--policy',
      'last=1',
      '--confirm',
      'prod',
      '--wait',
      '--json',
    ]);
    expect(confirmed.exitCode, confirmed.stderr).toBe(0);
    expect(readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'))).toHaveLength(1);
  });

  it('a schedule stores its confirmation once, when it is added with --confirm', async () => {
    const refused = await rig.cli([
      'schedule',
      'add',
      'weekly-reindex',
      '--cron',
      '0 4 * * 0',
      'maintenance',
      'reindex',
      '--env',
      'prod',
    ]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain('"prod" is a protected environment');
    const added = await rig.cli([
      'schedule',
      'add',
      'weekly-reindex',
      '--cron',
      '0 4 * * 0',
      'maintenance',
      'reindex',
      '--env',
      'prod',
      '--confirm',
      'prod',
    ]);
    expect(added.exitCode, added.stderr).toBe(0);
    const [scheduler] = await foreign.queue('maintenance').getJobSchedulers();
    expect(scheduler?.template?.data).toMatchObject({ env: 'prod', action: 'reindex', confirm: 'prod' });
  });
});

describe('paths that arrive in a payload stay inside the configured roots', () => {
  let rig: Rig;
  let foreign: ForeignProducer;
  let outside: string;

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    // A directory outside MIGRATIONS_ROOT (the test's own folder), world-writable like /tmp.
    outside = mkdtempSync(path.join(os.tmpdir(), 'dbops-planted-'));
    chmodSync(outside, 0o777);
    writeFileSync(path.join(outside, '1_planted.sql'), '-- Up Migration\nCREATE TABLE planted (id int);\n');
    writeFileSync(path.join(outside, '2_secret.sql'), "-- Up Migration\nSELECT 'the secret';\n", { mode: 0o600 });
    symlinkSync(outside, path.join(rig.backupDir, 'link-out'));
    for (const type of ['backup', 'migrate']) await rig.startWorker(type);
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await foreign?.close();
    await rig?.cleanup();
    rmSync(outside, { recursive: true, force: true });
  });

  it('a migrate job reads no directory outside MIGRATIONS_ROOT: not by path, "..", or symlink; the precheck answers alike for what exists and what does not', async () => {
    for (const dir of [
      outside,
      `${rig.backupDir}/../${path.basename(outside)}`,
      'link-out',
      path.join(rig.backupDir, 'link-out'),
    ]) {
      for (const data of [
        { env: 'app', dir, action: 'up' },
        { env: 'app', dir, action: 'up', dryRun: true },
      ]) {
        const job = await foreign.add('migrate', data);
        const outcome = await foreign.settled('migrate', job.id!);
        expect(outcome.state).toBe('failed');
        // The worker names its own directories by their variables in a failure reason, even in an echoed path.
        expect(outcome.failedReason).toBe(
          `dir: "${dir.split(rig.backupDir).join('BACKUP_DIR')}" is not inside MIGRATIONS_ROOT on the worker`,
        );
        expect(JSON.stringify(outcome.result ?? null)).not.toContain('the secret');
      }
    }
    expect(await tableExists(rig.db('app'), 'planted')).toBe(false);
    const existing = await rig.cli(['migrate', 'status', '--env', 'app', '--dir', outside]);
    const missing = await rig.cli(['migrate', 'status', '--env', 'app', '--dir', `${outside}-not-there`]);
    expect(existing.exitCode).toBe(2);
    expect(missing.exitCode).toBe(2);
    expect(existing.stderr.replace(outside, 'X')).toBe(missing.stderr.replace(`${outside}-not-there`, 'X'));
  });

  it('a manifest whose archive names a path outside the store is refused as damaged: prune, list and restore leave that path alone', async () => {
    const made = await rig.cli(['backup', '--env', 'app', '--wait', '--json']);
    expect(made.exitCode, made.stderr).toBe(0);
    const real = JSON.parse(made.stdout) as { backupId: string };
    const victim = mkdtempSync(path.join(os.tmpdir(), 'dbops-victim-'));
    writeFileSync(path.join(victim, 'keep.txt'), 'not a backup');
    const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${real.backupId}.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    const forgedId = 'app-20000101t000000z-000000';
    writeFileSync(
      path.join(rig.backupDir, `${forgedId}.json`),
      JSON.stringify({
        ...manifest,
        id: forgedId,
        archive: path.relative(rig.backupDir, victim),
        completedAt: '2000-01-01T00:00:00.000Z',
      }),
    );
    try {
      const pruned = await rig.cli(['backups', 'prune', '--env', 'app', '--policy', 'last=1', '--wait', '--json']);
      expect(pruned.exitCode, pruned.stderr).toBe(0);
      expect(existsSync(path.join(victim, 'keep.txt'))).toBe(true);
      const listed = await rig.cli(['backups', 'list', '--env', 'app', '--json']);
      expect(listed.stdout).not.toContain(forgedId);
      const restore = await rig.cli(['restore', '--env', 'app', '--backup', forgedId]);
      expect(restore.stderr.trim()).toBe(
        `manage-db: backup "${forgedId}" in the file store is not dbops' own: damaged: archive: an archive is named <backup id>.dump or <backup id>.d`,
      );
      expect(restore.exitCode).toBe(1);
    } finally {
      rmSync(victim, { recursive: true, force: true });
    }
  });
});

describe('backups are readable by their owner only, whatever the umask', () => {
  let rig: Rig;
  const umask = process.umask(0o022); // workers inherit it: what a default shell gives them

  beforeAll(async () => {
    rig = await Rig.create();
    chmodSync(rig.backupDir, 0o755);
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    await rig.startWorker('backup');
  });
  afterAll(async () => {
    process.umask(umask);
    await rig?.cleanup();
  });

  it('0700 directories and 0600 files: the store, work files, archives of both formats and manifests', async () => {
    for (const format of ['custom', 'directory']) {
      const made = await rig.cli(['backup', '--env', 'app', '--format', format, '--wait', '--json']);
      expect(made.exitCode, made.stderr).toBe(0);
    }
    const mode = (file: string) => (statSync(file).mode & 0o777).toString(8);
    expect(mode(rig.backupDir)).toBe('700');
    expect(mode(path.join(rig.backupDir, '.partial'))).toBe('700');
    for (const name of readdirSync(rig.backupDir).filter((entry) => !entry.startsWith('.'))) {
      const file = path.join(rig.backupDir, name);
      if (statSync(file).isDirectory()) {
        expect(mode(file), name).toBe('700');
        for (const inner of readdirSync(file)) expect(mode(path.join(file, inner)), `${name}/${inner}`).toBe('600');
      } else {
        expect(mode(file), name).toBe('600');
      }
    }
  });
});

describe('PROTECTED_ENVS fails closed', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    rig.setEnv('production', rig.db('production'));
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('a name that is no configured environment stops the CLI and a worker with one line, exit 2', async () => {
    const cli = await rig.cli(['backups', 'list'], { PROTECTED_ENVS: 'prodution' });
    expect(cli.exitCode).toBe(2);
    expect(cli.stderr.trim()).toBe(
      'manage-db: invalid configuration: PROTECTED_ENVS: "prodution" is no configured environment (known: production); use none for none',
    );
    await expect(rig.startWorker('backup', { PROTECTED_ENVS: 'prodution' })).rejects.toThrow(
      /invalid configuration: PROTECTED_ENVS: "prodution" is no configured environment/,
    );
  });
});
