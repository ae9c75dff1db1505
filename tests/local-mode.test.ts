import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

/** --local: Redis is down and production must be restored now. */
describe('manage-db --local, with no Redis at all', () => {
  let rig: Rig;
  const noRedis = { REDIS_URL: 'redis://127.0.0.1:1' };

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'target' });
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    rig.setEnv('target', rig.db('target'));
    await sql('postgres', `CREATE DATABASE "${rig.db('target')}"`);
  });
  afterAll(async () => rig?.cleanup());

  it('backs up and restores in the CLI process, with the same checks and the per-database lock', async () => {
    const backup = await rig.cli(['backup', '--env', 'source', '--local', '--json'], noRedis);
    expect(backup.exitCode).toBe(0);
    const result = JSON.parse(backup.stdout) as { backupId: string; path: string };
    expect(readdirSync(rig.backupDir)).toContain(`${result.backupId}.json`);

    const unconfirmed = await rig.cli(['restore', '--env', 'target', '--backup', result.backupId, '--local'], noRedis);
    expect(unconfirmed.exitCode).toBe(2);
    expect(await sql(rig.db('target'), "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'")).toEqual(
      [{ n: 0 }],
    );

    const restore = await rig.cli(
      ['restore', '--env', 'target', '--backup', result.backupId, '--confirm', 'target', '--local', '--json'],
      noRedis,
    );
    expect(restore.exitCode).toBe(0);
    expect(restore.stderr).toContain('the per-database lock is taken on the PostgreSQL server');
    expect(JSON.parse(restore.stdout)).toMatchObject({ backupId: result.backupId, env: 'target' });
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await rig.redisKeys()).toEqual([]);
  });
});
