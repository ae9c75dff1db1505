import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows } from '../src/postgres/compare.js';
import { createDatabase, dropDatabase, sql } from './helpers/pg.js';
import { pgUrl } from './helpers/services.js';

/** The row counts a backup records in its manifest, and a verification compares a restore with. */
describe('counting rows, in batches', () => {
  const database = `dbops_rowcounts_${randomBytes(4).toString('hex')}`;
  const expected: Record<string, number> = {};

  beforeAll(async () => {
    await createDatabase(database);
    // 120 plain tables over two schemas, table i with i rows: across three batches, every count differs.
    const statements: string[] = ['CREATE SCHEMA a', 'CREATE SCHEMA "Odd ""Schema"""'];
    for (let i = 0; i < 120; i += 1) {
      const schema = i % 2 === 0 ? 'a' : '"Odd ""Schema"""';
      statements.push(
        `CREATE TABLE ${schema}.t${i} (id int)`,
        `INSERT INTO ${schema}.t${i} SELECT generate_series(1, ${i})`,
      );
      expected[`${schema}.t${i}`] = i;
    }
    // Inheritance and partitions: each table counts its own rows (ONLY), as pg_dump dumps them.
    statements.push(
      'CREATE TABLE a.parent (id int)',
      'CREATE TABLE a.child () INHERITS (a.parent)',
      'INSERT INTO a.parent VALUES (1), (2)',
      'INSERT INTO a.child VALUES (3), (4), (5)',
      'CREATE TABLE a.measures (at int) PARTITION BY RANGE (at)',
      'CREATE TABLE a.measures_low PARTITION OF a.measures FOR VALUES FROM (0) TO (100)',
      'CREATE TABLE a.measures_high PARTITION OF a.measures FOR VALUES FROM (100) TO (200)',
      'INSERT INTO a.measures SELECT generate_series(0, 149)',
    );
    Object.assign(expected, { 'a.parent': 2, 'a.child': 3, 'a.measures_low': 100, 'a.measures_high': 50 });
    await sql(database, statements.join(';\n'));
  });
  afterAll(async () => dropDatabase(database));

  it('counts every table exactly, a batch of tables per query, in the snapshot of a backup, without parallel workers', async () => {
    const client = new pg.Client({ connectionString: pgUrl(database) });
    await client.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const batches: number[] = [];
      const counts = await countRows(client, (_table, index) => batches.push(index));
      expect(counts).toEqual(expected);
      const tables = Object.keys(expected).length;
      expect(batches).toEqual(Array.from({ length: Math.ceil(tables / 50) }, (_, batch) => batch * 50));
      expect(
        (await client.query<{ max_parallel_workers_per_gather: string }>('SHOW max_parallel_workers_per_gather'))
          .rows[0],
      ).toEqual({
        max_parallel_workers_per_gather: '0',
      });
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
  });
});
