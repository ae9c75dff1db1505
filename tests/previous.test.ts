import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseExists, databasesLike, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

interface Kept {
  name: string;
  proven: boolean;
  sizeBytes: number | null;
  note: string;
}

describe('previous list|drop: the versions a restore kept', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'guarded' });
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await sql('postgres', `CREATE DATABASE "${rig.db('guarded')}"`);
    rig.setEnv('guarded', rig.db('guarded'));
    for (const type of ['backup', 'restore']) await rig.startWorker(type);
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('lists what a restore kept, drops it only confirmed, and never drops a look-alike', async () => {
    const { backupId } = JSON.parse((await rig.cli(['backup', '--env', 'source', '--wait', '--json'])).stdout) as {
      backupId: string;
    };
    const restore = await rig.cli([
      'restore',
      '--env',
      'guarded',
      '--backup',
      backupId,
      '--confirm',
      'guarded',
      '--wait',
      '--json',
    ]);
    expect(restore.exitCode, restore.stderr).toBe(0);
    const { previousDatabase } = JSON.parse(restore.stdout) as { previousDatabase: string };
    // A database made to look like a kept version, as any job running SQL could.
    const forged = `${rig.db('guarded')}_prev_20000101t000000`;
    await sql('postgres', `CREATE DATABASE "${forged}"`);
    await sql(
      'postgres',
      `COMMENT ON DATABASE "${forged}" IS 'dbops: previous "${rig.db('guarded')}", replaced by nothing'`,
    );

    const list = await rig.cli(['previous', 'list', '--env', 'guarded', '--wait', '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    const kept = (JSON.parse(list.stdout) as { previous: Kept[] }).previous;
    expect(kept.map((entry) => [entry.name, entry.proven])).toEqual([
      [forged, false],
      [previousDatabase, true],
    ]);
    expect(kept.find((entry) => entry.proven)!.sizeBytes).toBeGreaterThan(0);
    const printed = (await rig.cli(['previous', 'list', '--env', 'guarded', '--wait'])).stdout.trim().split('\n');
    const human = printed.slice(printed.findIndex((line) => line.startsWith('KEPT VERSION')));
    expect(human[0]).toMatch(/^KEPT VERSION +SIZE +RECORDED +NOTE$/);
    expect(human.slice(1).map((line) => line.split(/ {2,}/).slice(0, 3))).toEqual([
      [forged, expect.stringMatching(/^\d+(\.\d)? (B|KiB|MiB|GiB)$/), 'NOT recorded by dbops'],
      [previousDatabase, expect.stringMatching(/^\d+(\.\d)? (B|KiB|MiB|GiB)$/), 'kept by dbops'],
    ]);

    const unconfirmed = await rig.cli(['previous', 'drop', '--env', 'guarded', '--name', previousDatabase]);
    expect(unconfirmed.exitCode).toBe(2);
    expect(unconfirmed.stderr).toContain('"guarded" is a protected environment');
    const lookAlike = await rig.cli([
      'previous',
      'drop',
      '--env',
      'guarded',
      '--name',
      forged,
      '--confirm',
      'guarded',
      '--wait',
    ]);
    expect(lookAlike.exitCode).toBe(1);
    expect(lookAlike.stderr).toContain('dbops has no record of keeping it: it is left alone');
    expect(await databaseExists(forged)).toBe(true);

    const dropped = await rig.cli([
      'previous',
      'drop',
      '--env',
      'guarded',
      '--name',
      previousDatabase,
      '--confirm',
      'guarded',
      '--wait',
      '--json',
    ]);
    expect(dropped.exitCode, dropped.stderr).toBe(0);
    expect(JSON.parse(dropped.stdout)).toMatchObject({ action: 'drop', dropped: previousDatabase });
    expect(await databasesLike(`${rig.db('guarded')}_prev_%`)).toEqual([forged]);
  });
});
