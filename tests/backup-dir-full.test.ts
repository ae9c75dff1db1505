import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPagila } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

/** Mounting a small tmpfs needs root (as on the dev machines and CI); elsewhere this suite cannot run. */
function canMount(): boolean {
  const probe = path.join('/tmp', `dbops-mount-probe-${process.pid}`);
  mkdirSync(probe, { recursive: true });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (mounted) spawnSync('umount', [probe]);
  return mounted;
}
const mountable = canMount();

describe.skipIf(!mountable)(`a full BACKUP_DIR${mountable ? '' : ' (skipped: cannot mount a tmpfs here)'}`, () => {
  let rig: Rig;
  let dir: string;

  beforeAll(async () => {
    rig = await Rig.create();
    dir = path.join(rig.backupDir, 'tiny');
    mkdirSync(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=200k', 'tmpfs', dir]); // Pagila's archive is ~850 kB
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await rig.startWorker('backup', { BACKUP_DIR: dir });
  });
  afterAll(async () => {
    await rig?.stopWorkers();
    if (dir) spawnSync('umount', [dir]);
    await rig?.cleanup();
  });

  it('fails the backup with a clear error, at once, and leaves nothing that looks like a backup', async () => {
    const run = await rig.cli(['backup', '--env', 'source', '--wait'], { BACKUP_DIR: dir });
    expect(run.exitCode).toBe(1);
    expect(run.stderr.trim()).toMatch(/failed: cannot write the backup to BACKUP_DIR: no space left on the device$/);
    // The work area and the signing key are dbops' own bookkeeping, not backups.
    expect(readdirSync(dir).filter((name) => name !== '.partial' && name !== '.dbops')).toEqual([]);
    expect(readdirSync(path.join(dir, '.partial'))).toEqual([]);
    const listed = await rig.cli(['backups', 'list', '--json'], { BACKUP_DIR: dir });
    expect(JSON.parse(listed.stdout)).toEqual([]);
  });
});
