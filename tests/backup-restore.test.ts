import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Directory, sha256File } from '../src/backups/checksum.js';
import { databaseExists, databasesLike, fingerprint, loadPagila, sql, type Fingerprint } from './helpers/pg.js';
import { rewriteOwnManifest } from './helpers/manifests.js';
import { Rig } from './helpers/rig.js';

describe('backup and restore of Pagila through the queue', () => {
  let rig: Rig;
  let source: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'guarded' });
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    rig.setEnv('fresh', rig.db('fresh'));
    rig.setEnv('existing', rig.db('existing'));
    rig.setEnv('guarded', rig.db('guarded'));
    source = await fingerprint(rig.db('source'));
    await rig.startWorker('backup');
    await rig.startWorker('restore');
  });
  afterAll(async () => rig?.cleanup());

  async function backupJson(...extra: string[]) {
    const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json', ...extra]);
    expect(run.stderr).not.toMatch(/failed/);
    expect(run.exitCode).toBe(0);
    return JSON.parse(run.stdout) as {
      backupId: string;
      path: string;
      sizeBytes: number;
      sha256: string;
      format: string;
    };
  }

  it('custom format: the backup is what its result says, and restores into a new database identical to the source', async () => {
    const result = await backupJson();
    expect(path.isAbsolute(result.path)).toBe(true);
    expect(path.dirname(result.path)).toBe(rig.backupDir);
    expect(statSync(result.path).size).toBe(result.sizeBytes);
    expect((await sha256File(result.path)).sha256).toBe(result.sha256);
    const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${result.backupId}.json`), 'utf8'));
    expect(manifest).toMatchObject({
      id: result.backupId,
      env: 'source',
      database: rig.db('source'),
      format: 'custom',
      sha256: result.sha256,
    });
    expect(manifest.pgDumpVersion).toMatch(/pg_dump/);
    expect(manifest.serverVersion).toMatch(/^\d+/);
    expect(readdirSync(path.join(rig.backupDir, '.partial'))).toEqual([]); // no work in progress left behind
    expect(readFileSync(path.join(rig.backupDir, `${result.backupId}.json`), 'utf8')).not.toContain('postgres://');

    expect(await databaseExists(rig.db('fresh'))).toBe(false);
    const restore = await rig.cli(['restore', '--env', 'fresh', '--backup', result.backupId, '--wait', '--json']);
    expect(restore.exitCode).toBe(0);
    expect(JSON.parse(restore.stdout)).toMatchObject({
      backupId: result.backupId,
      env: 'fresh',
      database: rig.db('fresh'),
    });
    expect(await fingerprint(rig.db('fresh'))).toEqual(source);
  });

  it('directory format with --jobs 2 replaces an existing database, keeping the old one under a dated name', async () => {
    const result = await backupJson('--format', 'directory', '--jobs', '2');
    expect(statSync(result.path).isDirectory()).toBe(true);
    const digest = await sha256Directory(result.path);
    expect(digest.sha256).toBe(result.sha256);
    expect(digest.sizeBytes).toBe(result.sizeBytes);

    await sql('postgres', `CREATE DATABASE "${rig.db('existing')}"`);
    await sql(
      rig.db('existing'),
      'CREATE TABLE marker (note text); INSERT INTO marker VALUES ($1)'.replace('$1', "'old contents'"),
    );
    const restore = await rig.cli([
      'restore',
      '--env',
      'existing',
      '--backup',
      result.backupId,
      '--jobs',
      '2',
      '--wait',
      '--json',
    ]);
    expect(restore.exitCode).toBe(0);
    const outcome = JSON.parse(restore.stdout) as { previousDatabase: string };
    expect(await fingerprint(rig.db('existing'))).toEqual(source);
    expect(outcome.previousDatabase).toMatch(new RegExp(`^${rig.db('existing')}_prev_\\d{8}t\\d{6}$`));
    expect(await sql(outcome.previousDatabase, 'SELECT note FROM marker')).toEqual([{ note: 'old contents' }]);

    // The kept copy takes space until someone drops it: the maintenance report lists it.
    const report = await rig.cli(['maintenance', 'report', '--env', 'existing', '--local', '--json']);
    expect(report.exitCode, report.stderr).toBe(0);
    expect(JSON.parse(report.stdout).previousDatabases).toEqual([
      // --local asks no Redis, so it cannot prove that dbops kept it (`previous drop` needs that proof).
      {
        name: outcome.previousDatabase,
        proven: false,
        sizeBytes: expect.any(Number),
        note: expect.stringContaining(`replaced by restore of ${result.backupId}`),
      },
    ]);
    const human = await rig.cli(['maintenance', 'report', '--env', 'existing', '--local']);
    expect(human.stdout).toContain(`kept previous versions (drop them once not needed): ${outcome.previousDatabase} (`);
  });

  it('--drop-previous leaves no copy of the replaced database', async () => {
    const result = await backupJson();
    const before = await databasesLike(`${rig.db('existing')}_prev_%`);
    const restore = await rig.cli([
      'restore',
      '--env',
      'existing',
      '--backup',
      result.backupId,
      '--drop-previous',
      '--wait',
      '--json',
    ]);
    expect(restore.exitCode).toBe(0);
    expect(JSON.parse(restore.stdout).previousDatabase).toBeUndefined();
    expect(await databasesLike(`${rig.db('existing')}_prev_%`)).toEqual(before);
    expect(await fingerprint(rig.db('existing'))).toEqual(source);
  });

  it('--latest restores the newest verified backup of --from (a damaged newer one is passed over)', async () => {
    const older = await backupJson();
    const newer = await backupJson();
    // The newest backup's last check failed: --latest takes the one before it.
    await rewriteOwnManifest(rig.backupDir, newer.backupId, (manifest) => {
      (manifest.verifications as unknown[]).push({
        at: new Date().toISOString(),
        level: 'toc',
        ok: false,
        reason: 'test: damaged',
      });
    });
    const restore = await rig.cli(['restore', '--env', 'existing', '--latest', '--from', 'source', '--wait', '--json']);
    expect(restore.exitCode, restore.stderr).toBe(0);
    expect(JSON.parse(restore.stdout).backupId).toBe(older.backupId);
    expect(await fingerprint(rig.db('existing'))).toEqual(source);
    const none = await rig.cli(['restore', '--env', 'fresh', '--latest']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr.trim()).toBe('manage-db: no verified backup of fresh');
  });

  it('a protected environment needs --confirm with its name; without it nothing is enqueued or changed', async () => {
    const result = await backupJson();
    await sql('postgres', `CREATE DATABASE "${rig.db('guarded')}"`);
    const keysBefore = await rig.queueKeys();
    for (const confirm of [[], ['--confirm', 'source']]) {
      const refused = await rig.cli(['restore', '--env', 'guarded', '--backup', result.backupId, '--wait', ...confirm]);
      expect(refused.exitCode).toBe(2);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toContain('--confirm guarded');
    }
    expect(await rig.queueKeys()).toEqual(keysBefore);
    expect(
      await sql(rig.db('guarded'), "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'"),
    ).toEqual([{ n: 0 }]);

    const confirmed = await rig.cli([
      'restore',
      '--env',
      'guarded',
      '--backup',
      result.backupId,
      '--confirm',
      'guarded',
      '--wait',
    ]);
    expect(confirmed.exitCode).toBe(0);
    expect(await fingerprint(rig.db('guarded'))).toEqual(source);
  });

  it("a job log and the progress show the tables as they are dumped, without the tool's chatter", async () => {
    const run = await rig.cli(['backup', '--env', 'source']);
    expect(run.exitCode).toBe(0);
    const jobId = run.stdout.trim();
    expect(jobId).toMatch(/^backup-/);
    const producer = rig.producer();
    const outcome = await producer.wait(jobId);
    expect(outcome.state).toBe('completed');
    const shown = JSON.parse((await rig.cli(['jobs', 'show', jobId, '--json'])).stdout);
    expect(shown.state).toBe('completed');
    expect(shown.progress).toMatchObject({ percent: 100 });
    expect(shown.logs.join('\n')).toContain('dumping contents of table "public.rental"');
    // The log is what Bull Board shows too: pg_dump's --verbose chatter is left out of it.
    expect(
      shown.logs.filter((line: string) =>
        /^pg_dump: (reading|saving|identifying|finding|flagging|last built-in)/.test(line),
      ),
    ).toEqual([]);
  });
});
