import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { differences, digestTables } from '../src/postgres/compare.js';
import { createDatabase, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { pgUrl } from './helpers/services.js';

/*
 * Issue 23: tables whose column order in the source differs from the order pg_dump recreates them in.
 * An inheritance child made before its parent gained a column has the parent's new column last in the
 * source, and second (after the parent's columns) in a copy: every path that moves rows must name them.
 */

const SCHEMA = `
  CREATE TABLE parent (a int);
  CREATE TABLE child (c int, d int, note text) INHERITS (parent);
  ALTER TABLE parent ADD COLUMN b int;
  CREATE TABLE shaped (id int GENERATED ALWAYS AS IDENTITY, gone text, x int, twice int GENERATED ALWAYS AS (x * 2) STORED, y float8, tags text[], doc jsonb, raw bytea, at timestamptz, empty text);
  ALTER TABLE shaped DROP COLUMN gone;
`;

const ROWS = `
  INSERT INTO child (a, b, c, d, note) SELECT i, -i, 7, -7, repeat('n', 50) FROM generate_series(1, 20000) i;
  INSERT INTO child (a, b, c, d, note) VALUES (0, NULL, NULL, 0, '');
  INSERT INTO shaped (x, y, tags, doc, raw, at, empty)
    SELECT i, i / 3.0, ARRAY['a', NULL, 'b c'], '{"z": 1, "a": [1, 2]}', '\\x00ff', '2026-01-01 12:00+05', CASE WHEN i % 2 = 0 THEN '' END
      FROM generate_series(1, 500) i;
`;

type Row = Record<string, unknown>;

/** Every row of a table, each column by name, in a fixed order: what "the same data" means. */
async function rowsByName(database: string, table: string, orderBy: string): Promise<Row[]> {
  return sql(database, `SELECT to_jsonb(t) AS row FROM ${table} t ORDER BY ${orderBy}`).then((rows) =>
    rows.map((row) => row.row as Row),
  );
}

async function columnOrder(database: string, table: string): Promise<string[]> {
  const rows = await sql<{ attname: string }>(
    database,
    `SELECT attname FROM pg_attribute WHERE attrelid = '${table}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
  );
  return rows.map((row) => row.attname);
}

describe('exact data whatever the column order', () => {
  let rig: Rig;

  beforeAll(async () => {
    // Every table gets a COPY lane of its own in copy --jobs.
    rig = await Rig.create({ COPY_OWN_STREAM_BYTES: '0' });
    await createDatabase(rig.db('source'));
    await sql(rig.db('source'), SCHEMA);
    await sql(rig.db('source'), ROWS);
    rig.setEnv('source', rig.db('source'));
    for (const name of ['stream', 'lanes', 'restored']) {
      await createDatabase(rig.db(name));
      rig.setEnv(name, rig.db(name));
    }
    await rig.startWorker('copy');
    await rig.startWorker('backup');
    await rig.startWorker('restore');
  });
  afterAll(async () => rig?.cleanup());

  const expectSameData = async (copy: string) => {
    // The premise: the copy's child has its columns in another order than the source's.
    expect(await columnOrder(rig.db('source'), 'child')).toEqual(['a', 'c', 'd', 'note', 'b']);
    expect(await columnOrder(rig.db(copy), 'child')).toEqual(['a', 'b', 'c', 'd', 'note']);
    for (const [table, order] of [
      ['ONLY child', 'a'],
      ['ONLY parent', 'a'],
      ['shaped', 'id'],
    ] as const) {
      expect(await rowsByName(rig.db(copy), table, order), `${copy}: ${table}`).toEqual(
        await rowsByName(rig.db('source'), table, order),
      );
    }
    const [first] = await sql(rig.db(copy), 'SELECT c, d FROM child WHERE a = 1');
    expect(first).toEqual({ c: 7, d: -7 });
  };

  it('copy --jobs 2 names the columns on both sides of each lane, and --verify passes', async () => {
    const run = await rig.cli([
      'copy',
      '--from',
      'source',
      '--to',
      'lanes',
      '--jobs',
      '2',
      '--verify',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    await expectSameData('lanes');
  });

  it('the stream copy, and --verify on it', async () => {
    const run = await rig.cli(['copy', '--from', 'source', '--to', 'stream', '--verify', '--wait', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    await expectSameData('stream');
  });

  it('backup and restore', async () => {
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const restore = await rig.cli([
      'restore',
      '--env',
      'restored',
      '--backup',
      (JSON.parse(backup.stdout) as { backupId: string }).backupId,
      '--wait',
    ]);
    expect(restore.exitCode, restore.stderr).toBe(0);
    await expectSameData('restored');
  });

  it('the digests compare by column name: equal for a correct copy in another column order, different when two columns swapped values in one row', async () => {
    const digest = async (database: string) => {
      const client = new pg.Client({ connectionString: pgUrl(database) });
      await client.connect();
      try {
        return await digestTables(client);
      } finally {
        await client.end();
      }
    };
    const source = await digest(rig.db('source'));
    expect(differences(source, await digest(rig.db('lanes')))).toEqual([]);
    await sql(rig.db('lanes'), 'UPDATE child SET c = d, d = c WHERE a = 5');
    expect(differences(source, await digest(rig.db('lanes')))).toEqual([
      'public.child: same row count, different contents',
    ]);
    // NULL and an empty string are told apart.
    await sql(rig.db('stream'), 'UPDATE child SET note = NULL WHERE a = 0');
    expect(differences(source, await digest(rig.db('stream')))).toEqual([
      'public.child: same row count, different contents',
    ]);
  });
});
