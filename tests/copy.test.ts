import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { differences } from '../src/postgres/compare.js';
import { fingerprint, loadPagila, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { pgUrl } from './helpers/services.js';

describe('copy between environments', () => {
  let rig: Rig;
  let source: Fingerprint;

  beforeAll(async () => {
    rig = await Rig.create({ PROTECTED_ENVS: 'prod' });
    await loadPagila(rig.db('prod'));
    // A table big enough for a stream of its own in a parallel copy, with what text COPY must carry exactly.
    await sql(
      rig.db('prod'),
      `CREATE TABLE big_events (id bigserial PRIMARY KEY, body text, ratio float8, at timestamptz, span interval, doubled bigint GENERATED ALWAYS AS (id * 2) STORED);
       INSERT INTO big_events (body, ratio, at, span)
         SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE repeat(md5(g::text), 3) || E'\\t tab \\n newline \\\\ backslash é' END,
                1.0 / (g + 0.1), timestamptz '2020-01-01 00:00:00.123456+00' + g * interval '1 second', g * interval '1 minute 0.5 second'
           FROM generate_series(1, 100000) g`,
    );
    rig.setEnv('prod', rig.db('prod'));
    rig.setEnv('alias', rig.db('prod')); // another name for the same database
    rig.setEnv('staging', rig.db('staging'));
    rig.setEnv('qa', rig.db('qa'));
    // Production again, under a URL whose options change how its sessions write dates, intervals, floats
    // and times: a copy from it, its streams and its comparison must not depend on them.
    rig.env.DATABASE_URL_SKEWED = `${pgUrl(rig.db('prod'))}?options=${encodeURIComponent('-c DateStyle=SQL,DMY -c IntervalStyle=sql_standard -c TimeZone=Asia/Tokyo -c extra_float_digits=0')}`;
    source = await fingerprint(rig.db('prod'));
    await rig.startWorker('copy');
  });
  afterAll(async () => rig?.cleanup());

  it('streams production into a new staging database, identical and verified', async () => {
    const run = await rig.cli(['copy', '--from', 'prod', '--to', 'staging', '--verify', '--wait', '--json']);
    expect(run.stderr).not.toMatch(/failed/);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      from: 'prod',
      to: 'staging',
      mode: 'stream',
      verified: true,
      tables: 22,
    });
    expect(await fingerprint(rig.db('staging'))).toEqual(source);
    expect(await fingerprint(rig.db('prod'))).toEqual(source);
  });

  it('copies in parallel streams of one snapshot, a big table in a stream of its own, and leaves no file behind', async () => {
    await sql('postgres', `CREATE DATABASE "${rig.db('qa')}"`);
    await sql(rig.db('qa'), 'CREATE TABLE leftover (x int)');
    const run = await rig.cli([
      'copy',
      '--from',
      'skewed',
      '--to',
      'qa',
      '--jobs',
      '2',
      '--verify',
      '--wait',
      '--json',
    ]);
    expect(run.stderr).not.toMatch(/failed/);
    expect(run.exitCode).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result).toMatchObject({ mode: 'parallel', verified: true, tables: 22 });
    expect(await fingerprint(rig.db('qa'))).toEqual(source); // schema, every row, every sequence's value
    expect(await sql(rig.db('qa'), "SELECT nextval('big_events_id_seq')::int AS next")).toEqual([{ next: 100_001 }]);
    expect(readdirSync(path.join(rig.backupDir, '.partial'))).toEqual([]);
    const jobId = /^job (\S+)$/m.exec(run.stderr)![1]!;
    const { logs } = await rig.producer().queues.get('copy').getJobLogs(jobId);
    expect(logs.filter((line) => line.startsWith('copied table'))).toEqual([
      expect.stringMatching(/^copied table "public\.big_events" \(\d+(\.\d)? MiB on disk\)$/),
    ]);
    expect(logs).toContain('pg_restore: processing data for table "public.rental"'); // the small tables' shared stream
  });

  it('sanitises inside the copy before it becomes visible; production keeps its data', async () => {
    const script = path.join(rig.backupDir, 'scrub-emails.sql');
    writeFileSync(
      script,
      "UPDATE customer SET email = 'customer' || customer_id || '@example.invalid';\nUPDATE staff SET password = NULL;\n",
    );
    const run = await rig.cli([
      'copy',
      '--from',
      'prod',
      '--to',
      'staging',
      '--sanitize',
      script,
      '--verify',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout).sanitized).toEqual(['scrub-emails.sql']);
    const leaked = await sql<{ n: number }>(
      rig.db('staging'),
      "SELECT count(*)::int AS n FROM customer WHERE email NOT LIKE '%@example.invalid'",
    );
    expect(leaked).toEqual([{ n: 0 }]);
    expect(await sql(rig.db('staging'), 'SELECT count(*)::int AS n FROM staff WHERE password IS NOT NULL')).toEqual([
      { n: 0 },
    ]);
    expect(
      await sql(rig.db('prod'), "SELECT count(*)::int AS n FROM customer WHERE email LIKE '%@sakilacustomer.org'"),
    ).toEqual([{ n: 599 }]);
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
    ).toEqual([
      'public.a: same row count, different contents',
      'public.b: missing in the copy',
      'public.c: only in the copy',
    ]);
  });
});
