import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { differences } from '../src/postgres/compare.js';
import { fingerprint, loadPagila, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

describe('copy between environments', () => {
  let rig: Rig;
  let source: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'prod' });
    await loadPagila(rig.db('prod'));
    rig.setEnv('prod', rig.db('prod'));
    rig.setEnv('alias', rig.db('prod')); // another name for the same database
    rig.setEnv('staging', rig.db('staging'));
    rig.setEnv('qa', rig.db('qa'));
    source = await fingerprint(rig.db('prod'));
    await rig.startWorker('copy');
  });
  afterAll(async () => rig?.cleanup());

  it('streams production into a new staging database, identical and verified', async () => {
    const run = await rig.cli(['copy', '--from', 'prod', '--to', 'staging', '--verify', '--wait', '--json']);
    expect(run.stderr).not.toMatch(/failed/);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ from: 'prod', to: 'staging', mode: 'stream', verified: true, tables: 21 });
    expect(await fingerprint(rig.db('staging'))).toEqual(source);
    expect(await fingerprint(rig.db('prod'))).toEqual(source);
  });

  it('copies in parallel through a temporary directory that is removed afterwards', async () => {
    await sql('postgres', `CREATE DATABASE "${rig.db('qa')}"`);
    await sql(rig.db('qa'), 'CREATE TABLE leftover (x int)');
    const run = await rig.cli(['copy', '--from', 'prod', '--to', 'qa', '--jobs', '2', '--wait', '--json']);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ mode: 'parallel', verified: false });
    expect(await fingerprint(rig.db('qa'))).toEqual(source);
    expect(readdirSync(path.join(rig.backupDir, '.partial'))).toEqual([]);
  });

  it('sanitises inside the copy before it becomes visible; production keeps its data', async () => {
    const script = path.join(rig.backupDir, 'scrub-emails.sql');
    writeFileSync(script, "UPDATE customer SET email = 'customer' || customer_id || '@example.invalid';\nUPDATE staff SET password = NULL;\n");
    const run = await rig.cli(['copy', '--from', 'prod', '--to', 'staging', '--sanitize', script, '--verify', '--wait', '--json']);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout).sanitized).toEqual(['scrub-emails.sql']);
    const leaked = await sql<{ n: number }>(rig.db('staging'), "SELECT count(*)::int AS n FROM customer WHERE email NOT LIKE '%@example.invalid'");
    expect(leaked).toEqual([{ n: 0 }]);
    expect(await sql(rig.db('staging'), 'SELECT count(*)::int AS n FROM staff WHERE password IS NOT NULL')).toEqual([{ n: 0 }]);
    expect(await sql(rig.db('prod'), "SELECT count(*)::int AS n FROM customer WHERE email LIKE '%@sakilacustomer.org'")).toEqual([{ n: 599 }]);
  });

  it('a failing sanitize script aborts the copy and leaves the target as it was', async () => {
    const before = await fingerprint(rig.db('staging'));
    const script = path.join(rig.backupDir, 'broken.sql');
    writeFileSync(script, 'UPDATE customer SET email = NULL; UPDATE no_such_table SET x = 1;');
    const run = await rig.cli(['copy', '--from', 'prod', '--to', 'staging', '--sanitize', script, '--wait']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/sanitize script broken.sql failed: relation "no_such_table" does not exist/);
    expect(await fingerprint(rig.db('staging'))).toEqual(before);
    expect(await shadowDatabasesFor(rig.db('staging'))).toEqual([]);
  });

  it('refuses a copy onto itself, a protected target without --confirm, and unreadable scripts', async () => {
    for (const [args, message] of [
      [['--from', 'prod', '--to', 'prod'], /are the same database/],
      [['--from', 'prod', '--to', 'alias'], /are the same database/],
      [['--from', 'staging', '--to', 'prod'], /repeat its name with --confirm prod/],
      [['--from', 'prod', '--to', 'qa', '--sanitize', '/nonexistent.sql'], /cannot read \/nonexistent.sql: ENOENT/],
    ] as const) {
      const run = await rig.cli(['copy', ...args]);
      expect(run.exitCode).toBe(2);
      expect(run.stderr).toMatch(message);
    }
    expect(await fingerprint(rig.db('prod'))).toEqual(source);
  });

  it('compares table digests as pgcopydb does', () => {
    const a = [
      { table: 'public.a', rows: 2, hash: 'x' },
      { table: 'public.b', rows: 1, hash: 'y' },
    ];
    expect(differences(a, a)).toEqual([]);
    expect(
      differences(a, [
        { table: 'public.a', rows: 2, hash: 'z' },
        { table: 'public.c', rows: 0, hash: '' },
      ]),
    ).toEqual(['public.a: same row count, different contents', 'public.b: missing in the copy', 'public.c: only in the copy']);
  });
});
