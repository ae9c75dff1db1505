import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../src/backups/manifest.js';
import { planRetention } from '../src/backups/retention.js';
import { parseRetention } from '../src/retention-policy.js';
import type { FileStore } from '../src/backups/file-store.js';
import { ownFileStore, writeOwnManifest } from './helpers/manifests.js';
import { createDatabase, fingerprint, holdDatabaseLock, sql } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** A manifest with a made-up date; `ok` null: never checked. */
function made(env: string, name: string, completedAt: string, ok: boolean | null = true): Manifest {
  const id = `${env}-${name}`;
  return {
    manifestVersion: 1,
    id,
    env,
    database: env,
    format: 'custom',
    archive: `${id}.dump`,
    sizeBytes: 4,
    sha256: 'a'.repeat(64),
    tableCount: 1,
    startedAt: completedAt,
    completedAt,
    durationMs: 1,
    pgDumpVersion: 'pg_dump (PostgreSQL) 15',
    serverVersion: '15',
    jobId: `backup-${name}`,
    verifications:
      ok === null
        ? undefined
        : [{ at: completedAt, level: 'toc', ok, reason: ok ? undefined : 'sha256 does not match the manifest' }],
  };
}

// Policy last=2,daily=3,weekly=2,monthly=2 over these (UTC; 2026-11-25 is a Wednesday):
const APP = [
  made('app', 'a', '2026-11-25T02:00:00.000Z'), // last, daily, weekly (W48), monthly (Nov)
  made('app', 'b', '2026-11-24T14:00:00.000Z'), // last, daily
  made('app', 'c', '2026-11-24T02:00:00.000Z'), // same day as b: goes
  made('app', 'd', '2026-11-23T02:00:00.000Z', false), // failed its check: counts for nothing, stays while newer than a kept one
  made('app', 'e', '2026-11-22T02:00:00.000Z'), // daily (third day), weekly (W47, a Sunday)
  made('app', 'f', '2026-11-16T02:00:00.000Z'), // W47 already kept: goes
  made('app', 'g', '2026-11-10T02:00:00.000Z'), // W46, but two weeks are kept: goes
  made('app', 'h', '2026-10-31T02:00:00.000Z'), // monthly (Oct)
  made('app', 'i', '2026-09-30T02:00:00.000Z'), // third month: goes
  made('app', 'j', '2026-09-01T02:00:00.000Z'), // goes, unless a restore is reading it
];

describe('retention policy', () => {
  it('keeps exactly the last N verified and the newest of each day, week and month', () => {
    const plan = planRetention(APP, parseRetention('last=2,daily=3,weekly=2,monthly=2'));
    const kept = Object.fromEntries(plan.keep.map(({ manifest, reasons }) => [manifest.id, reasons]));
    expect(kept).toEqual({
      'app-a': ['last', 'daily', 'weekly', 'monthly'],
      'app-b': ['last', 'daily'],
      'app-e': ['daily', 'weekly'],
      'app-d': ['failed its check'],
      'app-h': ['monthly'],
    });
    expect(plan.prune.map(({ manifest }) => manifest.id)).toEqual(['app-c', 'app-f', 'app-g', 'app-i', 'app-j']);
  });

  it('never goes below the last N verified backups, however old, while newer ones fail', () => {
    const old = [
      made('old', 'x1', '2025-01-03T02:00:00.000Z', false),
      made('old', 'x2', '2025-01-02T02:00:00.000Z'),
      made('old', 'x3', '2025-01-01T02:00:00.000Z'),
      made('old', 'x4', '2024-12-31T02:00:00.000Z'),
    ];
    const plan = planRetention(old, parseRetention('last=2,daily=1'));
    expect(plan.keep.map(({ manifest }) => manifest.id)).toEqual(['old-x1', 'old-x2', 'old-x3']); // x1 counts for nothing
    expect(plan.keep[0]!.reasons).toEqual(['failed its check']);
    expect(plan.prune.map(({ manifest }) => manifest.id)).toEqual(['old-x4']);
    // A backup that failed its check and is older than every kept one goes.
    const older = [...old, made('old', 'x0', '2024-12-30T02:00:00.000Z', false)];
    expect(planRetention(older, parseRetention('last=2,daily=1')).prune.map(({ manifest }) => manifest.id)).toEqual([
      'old-x4',
      'old-x0',
    ]);
  });

  it('keeps a backup in use, and backups never checked while nothing verified is kept', () => {
    expect(
      planRetention(APP, parseRetention('last=1'), new Set(['app-j'])).keep.map(({ manifest }) => manifest.id),
    ).toEqual(['app-a', 'app-j']);
    const unchecked = [
      made('u', 'p', '2026-01-02T00:00:00.000Z', null),
      made('u', 'q', '2026-01-01T00:00:00.000Z', null),
    ];
    expect(planRetention(unchecked, parseRetention('last=1')).prune).toEqual([]);
  });

  it('refuses policies that could delete everything, or that it cannot read', () => {
    expect(() => parseRetention('last=0')).toThrow(/at least 1/);
    expect(() => parseRetention('hourly=3')).toThrow(/not one of/);
    expect(parseRetention('daily=7')).toEqual({ last: 1, daily: 7, weekly: 0, monthly: 0 });
  });
});

describe('backups prune', () => {
  let rig: Rig;
  let store: FileStore;

  beforeAll(async () => {
    rig = await Rig.create({ BACKUP_RETENTION_APP: 'last=2,daily=3,weekly=2,monthly=2' });
    store = ownFileStore(rig.backupDir);
    for (const manifest of APP) {
      writeFileSync(path.join(rig.backupDir, manifest.archive), 'dump');
      await writeOwnManifest(rig.backupDir, manifest);
    }
    // A restore is reading app-j (its mark, as a running restore job leaves it).
    mkdirSync(path.join(rig.backupDir, '.in-use'));
    writeFileSync(
      path.join(rig.backupDir, '.in-use', 'app-j@restore-x'),
      JSON.stringify({ backupId: 'app-j', jobId: 'restore-x', pid: process.pid, host: os.hostname() }),
    );
  });
  afterAll(async () => rig?.cleanup());

  const ids = async () => (await store.list()).manifests.map((manifest) => manifest.id).sort();

  it('--dry-run shows what would go and deletes nothing', async () => {
    const run = await rig.cli(['backups', 'prune', '--env', 'app', '--dry-run', '--local']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain(
      'app (database app, file store): policy last=2,daily=3,weekly=2,monthly=2; 6 kept, 4 would be pruned',
    );
    for (const id of ['app-c', 'app-f', 'app-g', 'app-i']) expect(run.stdout).toMatch(new RegExp(`would prune ${id} `));
    expect(run.stdout).toMatch(/keep\s+app-j .*\(in use\)/);
    expect(await ids()).toEqual(APP.map((manifest) => manifest.id).sort());
  });

  it('deletes exactly what the policy does not keep, archive and manifest', async () => {
    const run = await rig.cli(['backups', 'prune', '--env', 'app', '--local', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).environments[0].pruned.map((item: { id: string }) => item.id)).toEqual([
      'app-c',
      'app-f',
      'app-g',
      'app-i',
    ]);
    expect(await ids()).toEqual(['app-a', 'app-b', 'app-d', 'app-e', 'app-h', 'app-j']);
    for (const gone of ['app-c', 'app-f', 'app-g', 'app-i'])
      expect(existsSync(path.join(rig.backupDir, `${gone}.dump`))).toBe(false);
  });

  it('refuses an environment without a policy, with the variable to set', async () => {
    const run = await rig.cli(['backups', 'prune', '--env', 'other', '--local']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain('BACKUP_RETENTION_OTHER');
    expect(await ids()).toEqual(['app-a', 'app-b', 'app-d', 'app-e', 'app-h', 'app-j']);
  });
});

describe('retention after each backup', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create({ BACKUP_RETENTION: 'last=2' });
    await createDatabase(rig.db('small'));
    await sql(rig.db('small'), 'CREATE TABLE t (id int); INSERT INTO t VALUES (1)');
    rig.setEnv('small', rig.db('small'));
  });
  afterAll(async () => rig?.cleanup());

  it('a prune job follows every successful backup and keeps the last N', async () => {
    await rig.startWorker('backup');
    const made: string[] = [];
    for (let index = 0; index < 3; index += 1) {
      const run = await rig.cli(['backup', '--env', 'small', '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      made.push(JSON.parse(run.stdout).backupId);
    }
    const store = ownFileStore(rig.backupDir);
    await waitFor('the oldest backup to be pruned', async () => (await store.list()).manifests.length === 2, 20_000);
    expect((await store.list()).manifests.map((manifest) => manifest.id)).toEqual(made.slice(1));
    const prunes = await rig.producer().list({ types: ['prune'] });
    expect(prunes.map((job) => job.id).sort()).toEqual(made.map((id) => `prune-after-${id}`).sort());
    expect(prunes.every((job) => job.state === 'completed')).toBe(true);
  });
});

describe('retention and a running restore', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    await sourceAndTarget(rig);
    await rig.startWorker('backup');
    await rig.startWorker('restore');
  });
  afterAll(async () => rig?.cleanup());

  it('never prunes the backup a running restore reads; once the restore is done, it may', async () => {
    const made: string[] = [];
    for (let index = 0; index < 2; index += 1) {
      const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      made.push(JSON.parse(run.stdout).backupId);
    }
    const [older, newer] = made as [string, string];
    // The restore waits for the target's lock, held here, with its backup marked in use meanwhile.
    const lock = await holdDatabaseLock(rig.db('target'));
    const producer = rig.producer();
    const job = await producer.enqueue('restore', { env: 'target', backup: older, jobs: 1 });
    await waitFor('the restore to mark its backup', () =>
      existsSync(path.join(rig.backupDir, '.in-use', `${older}@restore.${job.id}`)),
    );
    const during = await rig.cli(['backups', 'prune', '--env', 'source', '--policy', 'last=1', '--local', '--json']);
    expect(during.exitCode, during.stderr).toBe(0);
    expect(JSON.parse(during.stdout).environments[0].kept).toEqual([
      expect.objectContaining({ id: newer, reasons: ['last'] }),
      expect.objectContaining({ id: older, reasons: ['in use'] }),
    ]);
    await lock.release();
    expect((await producer.wait(job.id)).state).toBe('completed');
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));

    const after = await rig.cli(['backups', 'prune', '--env', 'source', '--policy', 'last=1', '--local', '--json']);
    expect(JSON.parse(after.stdout).environments[0].pruned.map((item: { id: string }) => item.id)).toEqual([older]);
    expect((await ownFileStore(rig.backupDir).list()).manifests.map((manifest) => manifest.id)).toEqual([newer]);
  });
});
