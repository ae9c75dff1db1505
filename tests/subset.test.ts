import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { pgUrl } from './helpers/services.js';

const LAST_WEEK = "rental_date >= (SELECT max(rental_date) - interval '7 days' FROM rental)";

/** Every foreign key of the source is in the copy, and holds: each dropped and re-added with validation. */
async function expectEveryKeyHolds(source: string, copy: string): Promise<void> {
  const keys = await sql<{ child: string; name: string; definition: string }>(
    copy,
    `SELECT conrelid::regclass::text AS child, conname AS name, pg_get_constraintdef(oid) AS definition
       FROM pg_constraint WHERE contype = 'f' AND conparentid = 0`,
  );
  const [expected] = await sql<{ n: number }>(
    source,
    "SELECT count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND conparentid = 0",
  );
  expect(keys.length).toBe(expected!.n);
  const client = new pg.Client({ connectionString: pgUrl(copy) });
  await client.connect();
  try {
    await client.query('BEGIN');
    for (const key of keys) {
      await client.query(`ALTER TABLE ${key.child} DROP CONSTRAINT "${key.name}"`);
      await client.query(`ALTER TABLE ${key.child} ADD CONSTRAINT "${key.name}" ${key.definition}`);
    }
    await client.query('ROLLBACK');
  } finally {
    await client.end();
  }
}

describe('copy --subset', () => {
  let rig: Rig;
  /** `copy --from source --to dev` with these arguments, as the user runs it. */
  const copyToDev = (args: string[]) => rig.cli(['copy', '--from', 'source', '--to', 'dev', ...args]);
  const count = async (database: string, query: string) => Number(Object.values((await sql(database, query))[0]!)[0]);

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await sql('postgres', `CREATE DATABASE "${rig.db('dev')}"`);
    rig.setEnv('dev', rig.db('dev'));
    await rig.startWorker('copy');
  });
  afterAll(async () => rig?.cleanup());

  it('a week of rentals and every row they reference, nothing else; every foreign key validates; masking on top', async () => {
    const policy = path.join(rig.backupDir, 'policy.yml');
    writeFileSync(policy, 'tables:\n  public.customer:\n    email: fake_email\n    "*": keep\nother_tables: keep\n');
    const before = await fingerprint(rig.db('source'));
    const run = await copyToDev([
      '--subset',
      `public.rental:${LAST_WEEK}`,
      '--rest',
      'empty',
      '--mask',
      policy,
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { subset: { table: string; rows: number }[] };
    const kept = Object.fromEntries(result.subset.map((table) => [table.table, table.rows]));
    const source = rig.db('source');
    const dev = rig.db('dev');
    // What the closure predicts, computed on the source on its own.
    const chosen = `(SELECT * FROM rental WHERE ${LAST_WEEK})`;
    const expected = {
      'public.rental': await count(source, `SELECT count(*) FROM ${chosen} r`),
      'public.customer': await count(source, `SELECT count(DISTINCT customer_id) FROM ${chosen} r`),
      'public.inventory': await count(source, `SELECT count(DISTINCT inventory_id) FROM ${chosen} r`),
      'public.film': await count(
        source,
        `SELECT count(DISTINCT film_id) FROM inventory WHERE inventory_id IN (SELECT inventory_id FROM ${chosen} r)`,
      ),
      'public.payment': 0,
      'public.film_actor': 0,
      'public.actor': 0,
    };
    expect(expected['public.rental']).toBeGreaterThan(100);
    expect(expected['public.rental']).toBeLessThan(await count(source, 'SELECT count(*) FROM rental'));
    for (const [table, rows] of Object.entries(expected)) {
      expect(kept[table], table).toBe(rows);
      expect(await count(dev, `SELECT count(*) FROM ${table}`), table).toBe(rows);
    }
    await expectEveryKeyHolds(source, dev);
    // Masking on top of the subset; the source unchanged.
    expect(await count(dev, "SELECT count(*) FROM customer WHERE email NOT LIKE 'user\\_%@example.invalid'")).toBe(0);
    expect(await fingerprint(source)).toEqual(before);
  });

  it('the newest 10 % of customers with --with children: their rentals and payments, and all these reference', async () => {
    const run = await copyToDev([
      '--subset',
      'public.customer:10% order by customer_id desc',
      '--with',
      'children',
      '--rest',
      'empty',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { mode: string; subset: { table: string; rows: number }[] };
    expect(result.mode).toBe('subset');
    const kept = Object.fromEntries(result.subset.map((table) => [table.table, table.rows]));
    const source = rig.db('source');
    const dev = rig.db('dev');
    // The closure, computed on the source on its own: 60 customers (10 % of 599, rounded up), their
    // rentals and payments (and the payments of their rentals), then every row those reference.
    const customers = '(SELECT customer_id FROM customer ORDER BY customer_id DESC LIMIT 60)';
    const rentals = `(SELECT rental_id, inventory_id, staff_id FROM rental WHERE customer_id IN ${customers})`;
    // Pagila declares its payments' keys on each partition, and none on payment_p2022_07: its rows are
    // nobody's children, and what they reference is not kept for them.
    const referencing = `(SELECT * FROM payment WHERE tableoid <> 'payment_p2022_07'::regclass AND (customer_id IN ${customers} OR rental_id IN (SELECT rental_id FROM ${rentals} r)))`;
    const keptRentals = `(SELECT rental_id FROM ${rentals} r UNION SELECT rental_id FROM ${referencing} p)`;
    const expected = {
      'public.customer': await count(
        source,
        `SELECT count(*) FROM customer WHERE customer_id IN ${customers} OR customer_id IN (SELECT customer_id FROM ${referencing} p)`,
      ),
      'public.rental': await count(source, `SELECT count(*) FROM ${keptRentals} k`),
      'public.payment': await count(source, `SELECT count(*) FROM ${referencing} p`),
      'public.inventory': await count(
        source,
        `SELECT count(DISTINCT inventory_id) FROM rental WHERE rental_id IN ${keptRentals}`,
      ),
      'public.actor': 0,
      'public.film_actor': 0,
    };
    expect(expected['public.customer']).toBeGreaterThanOrEqual(60);
    expect(expected['public.payment']).toBeGreaterThan(0);
    for (const [table, rows] of Object.entries(expected)) {
      expect(kept[table], table).toBe(rows);
      expect(await count(dev, `SELECT count(*) FROM ${table}`), table).toBe(rows);
    }
    expect(await count(dev, 'SELECT count(*) FROM customer WHERE customer_id > 599 - 60')).toBe(60);
    await expectEveryKeyHolds(source, dev);
    // Sequences come with the schema: a new row in the copy takes the source's next id, not a kept one's.
    expect(await count(dev, 'SELECT last_value FROM customer_customer_id_seq')).toBe(
      await count(source, 'SELECT last_value FROM customer_customer_id_seq'),
    );
  });

  it('a 10 % sample, the rest copied whole: the same rows every time, every key holding', async () => {
    const sample = async () => {
      const run = await copyToDev(['--subset', 'public.rental:10%', '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      return (await sql<{ id: number }>(rig.db('dev'), 'SELECT rental_id AS id FROM rental ORDER BY 1')).map(
        (row) => row.id,
      );
    };
    const first = await sample();
    const total = await count(rig.db('source'), 'SELECT count(*) FROM rental');
    // Bernoulli sampling: about 10 %, plus the rentals payments reference (payment is kept whole).
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThanOrEqual(total);
    expect(await count(rig.db('dev'), 'SELECT count(*) FROM payment')).toBe(
      await count(rig.db('source'), 'SELECT count(*) FROM payment'),
    );
    expect(await count(rig.db('dev'), 'SELECT count(*) FROM film')).toBe(1000);
    await expectEveryKeyHolds(rig.db('source'), rig.db('dev'));
    expect(await sample()).toEqual(first);
  });

  it('the newest 10 % of a partitioned table nothing references, the rest whole: exactly those rows, every key holding', async () => {
    // payment is read by its rule as it is copied (no key leads to or from its chosen rows): no list.
    const run = await copyToDev([
      '--subset',
      'public.payment:10% order by payment_date desc, payment_id desc',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const total = await count(rig.db('source'), 'SELECT count(*) FROM payment');
    const wanted = Math.ceil(total / 10);
    const result = JSON.parse(run.stdout) as { subset: { table: string; rows: number }[] };
    expect(result.subset.find((one) => one.table === 'public.payment')?.rows).toBe(wanted);
    const newest = (database: string, limit: string) =>
      sql<{ id: number }>(
        database,
        `SELECT payment_id AS id FROM payment ORDER BY payment_date DESC, payment_id DESC ${limit}`,
      );
    expect(await newest(rig.db('dev'), '')).toEqual(await newest(rig.db('source'), `LIMIT ${wanted}`));
    expect(await count(rig.db('dev'), 'SELECT count(*) FROM rental')).toBe(
      await count(rig.db('source'), 'SELECT count(*) FROM rental'),
    );
    await expectEveryKeyHolds(rig.db('source'), rig.db('dev'));
  });

  it('refuses --verify with --subset, a table the copy does not have, and a subset without its condition', async () => {
    const verify = await copyToDev(['--subset', 'public.rental:true', '--verify']);
    expect(verify.exitCode).toBe(2);
    expect(verify.stderr).toContain('verify compares whole tables: it does not go with subset');
    const bare = await copyToDev(['--subset', 'public.rental']);
    expect(bare.exitCode).toBe(2);
    expect(bare.stderr.trim()).toBe(
      'manage-db: --subset "public.rental": expected schema.table:SQL condition, or schema.table:N%',
    );
    const before = await fingerprint(rig.db('dev'));
    const unknown = await copyToDev(['--subset', 'public.nope:true', '--wait']);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain(
      'the subset failed: --subset names public.nope, which the copy does not have; the target was not touched',
    );
    expect(await fingerprint(rig.db('dev'))).toEqual(before);
  });
});
