import { readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Directory, sha256File } from '../src/backups/checksum.js';
import { fingerprint, scratchDatabasesOf, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { rewriteOwnManifest } from './helpers/manifests.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';

/** A damaged archive must never touch the target: it stays exactly as it was, and no shadow is left. */
describe('restore of a damaged archive', () => {
  let rig: Rig;
  let target: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create();
    target = await sourceAndTarget(rig);
    await rig.startWorker('backup');
    await rig.startWorker('restore');
  });
  afterAll(async () => rig?.cleanup());

  async function freshBackup(...extra: string[]): Promise<{ backupId: string; path: string }> {
    const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json', ...extra]);
    expect(run.exitCode).toBe(0);
    return JSON.parse(run.stdout);
  }

  async function expectRefused(backupId: string, reason: RegExp, verifyDetects = true) {
    // The quick check (sha256 + table of contents) cannot see damage that a forged manifest covers up;
    // the full one (a scratch restore, row counts against the manifest) sees all of it.
    const verify = await rig.cli(['backups', 'verify', backupId, '--local']);
    expect(verify.exitCode).toBe(verifyDetects ? 1 : 0);
    if (verifyDetects) expect(verify.stderr).toContain(`backup ${backupId} is damaged`);
    const full = await rig.cli(['backups', 'verify', backupId, '--full', '--local']);
    expect(full.exitCode, full.stderr).toBe(1);
    expect(full.stderr).toContain(`backup ${backupId} is damaged`);
    const recorded = JSON.parse(readFileSync(path.join(rig.backupDir, `${backupId}.json`), 'utf8'));
    expect(recorded.verifications.at(-1)).toMatchObject({ level: 'full', ok: false });
    expect(await scratchDatabasesOf(rig.db('source'))).toEqual([]);
    const run = await rig.cli(['restore', '--env', 'target', '--backup', backupId, '--wait']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(reason);
    expect(await fingerprint(rig.db('target'))).toEqual(target);
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
  }

  /** As if dbops itself had recorded a damaged archive's digest (a forged manifest is safety-stores.test.ts's). */
  const rewriteManifest = (backupId: string, change: (manifest: Record<string, unknown>) => void) =>
    rewriteOwnManifest(rig.backupDir, backupId, change);

  it('backups verify passes an intact archive', async () => {
    const backup = await freshBackup();
    const verify = await rig.cli(['backups', 'verify', backup.backupId, '--local', '--json']);
    expect(verify.exitCode).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ backupId: backup.backupId, ok: true, level: 'toc' });
    expect(JSON.parse(verify.stdout).tocEntries).toBeGreaterThan(100);

    // As a scheduled drill runs it: a verify job on a restore worker, for the newest backup.
    const full = await rig.cli(['backups', 'verify', '--latest', 'source', '--full', '--wait', '--json']);
    expect(full.exitCode, full.stderr).toBe(0);
    const result = JSON.parse(full.stdout);
    expect(result).toMatchObject({ backupId: backup.backupId, ok: true, level: 'full' });
    // Pagila's 21 tables with rows (partitions included), each counted against the manifest.
    const manifest = JSON.parse(readFileSync(path.join(rig.backupDir, `${backup.backupId}.json`), 'utf8'));
    expect(result.tablesCompared).toBe(Object.keys(manifest.rowCounts).length);
    expect(manifest.rowCounts['public.rental']).toBe(16044);
    expect(manifest.verifications.map((check: { level: string; ok: boolean }) => `${check.level}:${check.ok}`)).toEqual(
      ['toc:true', 'toc:true', 'full:true'],
    );
    expect(await scratchDatabasesOf(rig.db('source'))).toEqual([]);

    // Without --wait, like every command, it enqueues the job and prints only its id.
    const queued = await rig.cli(['backups', 'verify', backup.backupId]);
    expect(queued.exitCode, queued.stderr).toBe(0);
    const id = queued.stdout.trim();
    expect(id).toMatch(/^verify-/);
    const outcome = await rig.producer().wait(id);
    expect(outcome).toMatchObject({
      state: 'completed',
      result: { backupId: backup.backupId, ok: true, level: 'toc' },
    });
  });

  it('a truncated archive is refused as damaged before the target is touched', async () => {
    const backup = await freshBackup();
    truncateSync(backup.path, Math.floor(readFileSync(backup.path).length / 2));
    await expectRefused(backup.backupId, /archive is damaged/);
  });

  it('an archive with one byte altered is refused as damaged', async () => {
    const backup = await freshBackup();
    const bytes = readFileSync(backup.path);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = bytes[middle]! ^ 0xff;
    writeFileSync(backup.path, bytes);
    await expectRefused(backup.backupId, /archive is damaged: sha256 does not match/);
  });

  it('an archive damaged with a manifest to match fails inside the shadow database; the target is untouched', async () => {
    const backup = await freshBackup();
    truncateSync(backup.path, Math.floor(readFileSync(backup.path).length * 0.8));
    const digest = await sha256File(backup.path);
    await rewriteManifest(backup.backupId, (manifest) => {
      manifest.sha256 = digest.sha256;
      manifest.sizeBytes = digest.sizeBytes;
    });
    await expectRefused(backup.backupId, /pg_restore failed/, false);
  });

  it('an archive whose table of contents is unreadable is refused before the target is touched', async () => {
    const backup = await freshBackup();
    writeFileSync(backup.path, 'this is not a pg_dump archive\n');
    const digest = await sha256File(backup.path);
    await rewriteManifest(backup.backupId, (manifest) => {
      manifest.sha256 = digest.sha256;
      manifest.sizeBytes = digest.sizeBytes;
    });
    await expectRefused(backup.backupId, /archive is damaged: pg_restore cannot read its table of contents/);
  });

  it('a directory archive with one data file altered is refused as damaged', async () => {
    const backup = await freshBackup('--format', 'directory', '--jobs', '2');
    const dataFile = readdirSync(backup.path).find((name) => /^\d+\.dat/.test(name))!;
    writeFileSync(path.join(backup.path, dataFile), Buffer.from('garbage'));
    await expectRefused(
      backup.backupId,
      new RegExp(`archive is damaged: sha256 does not match the manifest \\(changed: ${dataFile.replace('.', '\\.')}`),
    );
    expect((await sha256Directory(backup.path)).sha256).not.toBe(
      JSON.parse(readFileSync(path.join(rig.backupDir, `${backup.backupId}.json`), 'utf8')).sha256,
    );
  });

  it("a full verify (a restore drill) passes on a server that lacks the backup's roles", async () => {
    const role = `${rig.dbPrefix}_owner`;
    await sql('postgres', `CREATE ROLE "${role}"`);
    try {
      await sql('postgres', `CREATE DATABASE "${rig.db('owned')}"`);
      await sql(
        rig.db('owned'),
        `CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); ALTER TABLE t OWNER TO "${role}"; GRANT SELECT ON t TO "${role}"`,
      );
      rig.setEnv('owned', rig.db('owned'));
      const run = await rig.cli(['backup', '--env', 'owned', '--local', '--json']); // the running workers do not know 'owned'
      expect(run.exitCode, run.stderr).toBe(0);
      await sql('postgres', `DROP DATABASE "${rig.db('owned')}" WITH (FORCE)`);
      await sql('postgres', `DROP ROLE "${role}"`); // as on a drill server of its own
      await sql('postgres', `CREATE DATABASE "${rig.db('owned')}"`);
      const verify = await rig.cli([
        'backups',
        'verify',
        JSON.parse(run.stdout).backupId,
        '--full',
        '--local',
        '--json',
      ]);
      expect(verify.exitCode, verify.stderr).toBe(0);
      expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, level: 'full', tablesCompared: 1 });
    } finally {
      await sql('postgres', `DROP DATABASE IF EXISTS "${rig.db('owned')}" WITH (FORCE)`);
      await sql('postgres', `DROP ROLE IF EXISTS "${role}"`);
    }
  });
});
