import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, sql, type Fingerprint } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';

/** Every customer column named: a column added later is not covered. */
const POLICY = `
seed: masking-test
tables:
  public.customer:
    customer_id: keep
    store_id: keep
    first_name: fake_name
    last_name: fake_name
    email: fake_email
    address_id: keep
    activebool: keep
    create_date: truncate_month
    last_update: keep
    active: keep
  public.staff:
    first_name: fake_name
    last_name: fake_name
    email: fake_email
    username: hash
    password: "null"
    picture: "null"
    "*": keep
  public.address:
    address: { value: "1 Main Street" }
    address2: "null"
    phone: fake_phone
    "*": keep
  public.newsletter:
    email: fake_email
    "*": keep
  public.audit_log:
    _delete_where: "at < '2020-01-01'"
    "*": keep
  public.payment:
    amount: { value: 1 }
    "*": keep
other_tables: keep
`;

describe('copy --mask', () => {
  let rig: Rig;
  let target: Fingerprint;
  let policyFile: string;
  const value = async (database: string, query: string) => Object.values((await sql(database, query))[0]!)[0];

  beforeAll(async () => {
    rig = await Rig.create();
    target = await sourceAndTarget(rig);
    // Emails unique in the source, and a second table that joins on them.
    await sql(
      rig.db('source'),
      `CREATE UNIQUE INDEX customer_email_key ON customer (email);
       CREATE TABLE newsletter (id serial PRIMARY KEY, email text NOT NULL);
       INSERT INTO newsletter (email) SELECT email FROM customer WHERE customer_id % 10 = 0;
       CREATE TABLE audit_log (id serial PRIMARY KEY, at date NOT NULL);
       INSERT INTO audit_log (at) SELECT date '2019-01-01' + g * 3 FROM generate_series(1, 300) g`,
    );
    await sql('postgres', `CREATE DATABASE "${rig.db('dev')}"`);
    rig.setEnv('dev', rig.db('dev'));
    policyFile = path.join(rig.backupDir, 'policy.yml');
    writeFileSync(policyFile, POLICY);
    await rig.startWorker('copy');
  });
  afterAll(async () => rig?.cleanup());

  it('masks what the policy says, keeps the rest exactly, joins on masked emails still match, unique stays unique', async () => {
    const run = await rig.cli(['copy', '--from', 'source', '--to', 'target', '--mask', policyFile, '--wait', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { masked: { table: string; columns: number; rowsDeleted: number }[] };
    expect(result.masked.map((table) => [table.table, table.columns])).toEqual([
      ['public.address', 3],
      ['public.audit_log', 0],
      ['public.customer', 4],
      ['public.newsletter', 1],
      ['public.payment', 1],
      ['public.staff', 6],
    ]);
    const copy = rig.db('target');
    const source = rig.db('source');
    expect(result.masked.find((table) => table.table === 'public.audit_log')!.rowsDeleted).toBe(121);
    expect(await value(copy, "SELECT count(*) FROM audit_log WHERE at < '2020-01-01'")).toBe('0');
    expect(await value(copy, 'SELECT count(*) FROM audit_log')).toBe('179');
    // A partitioned table is one table in a policy: its partitions are masked through it.
    expect(await value(copy, 'SELECT count(*) FROM payment WHERE amount = 1')).toBe(
      await value(source, 'SELECT count(*) FROM payment'),
    );

    // No source email survives; every one is a fake; still unique (the index was kept and holds).
    expect(
      await value(copy, `SELECT count(*) FROM customer WHERE email !~ '^user_[0-9a-f]{16}@example\\.invalid$'`),
    ).toBe('0');
    const sourceEmails = (await sql<{ email: string }>(source, 'SELECT email FROM customer')).map((row) => row.email);
    const copied = (await sql<{ email: string }>(copy, 'SELECT email FROM customer')).map((row) => row.email);
    expect(copied.filter((email) => sourceEmails.includes(email))).toEqual([]);
    expect(new Set(copied).size).toBe(sourceEmails.length);
    expect(await value(copy, "SELECT count(*) FROM pg_indexes WHERE indexname = 'customer_email_key'")).toBe('1');
    // The same email masks to the same value in both tables: the join finds the same rows.
    const joined = 'SELECT count(*) FROM newsletter n JOIN customer c USING (email)';
    expect(await value(copy, joined)).toBe(await value(source, joined));
    expect(Number(await value(copy, joined))).toBeGreaterThan(50);

    // Names from the fake list, dates to the first of the month, a fixed value, nulls, phones, hashes.
    expect(
      await value(
        copy,
        "SELECT count(*) FROM customer WHERE first_name !~ '^[A-Z][a-z]+$' OR extract(day FROM create_date) <> 1",
      ),
    ).toBe('0');
    expect(
      await value(
        copy,
        "SELECT count(DISTINCT address) FROM address WHERE address2 IS NULL AND phone ~ '^\\+1-555-[0-9]{10}$'",
      ),
    ).toBe('1');
    expect(await value(copy, 'SELECT count(*) FROM address')).toBe(await value(source, 'SELECT count(*) FROM address'));
    expect(
      await value(
        copy,
        "SELECT count(*) FROM staff WHERE password IS NULL AND picture IS NULL AND username ~ '^[0-9a-f]{64}$'",
      ),
    ).toBe(await value(source, 'SELECT count(*) FROM staff'));
    // What the policy keeps is exact: the tables' own triggers did not touch last_update; untouched tables equal.
    const digest = (table: string, columns: string) =>
      `SELECT md5(string_agg(ROW(${columns})::text, ',' ORDER BY 1)) FROM ${table}`;
    expect(
      await value(copy, digest('customer', 'customer_id, store_id, address_id, activebool, last_update, active')),
    ).toBe(
      await value(source, digest('customer', 'customer_id, store_id, address_id, activebool, last_update, active')),
    );
    expect(await value(copy, digest('film', 'film_id, title, description, rental_rate'))).toBe(
      await value(source, digest('film', 'film_id, title, description, rental_rate')),
    );
    expect(await value(copy, "SELECT count(*) FROM pg_trigger WHERE tgname = 'last_updated' AND tgenabled = 'O'")).toBe(
      await value(source, "SELECT count(*) FROM pg_trigger WHERE tgname = 'last_updated' AND tgenabled = 'O'"),
    );

    // The seed makes it stable: a second copy masks every value the same way.
    const again = await rig.cli(['copy', '--from', 'source', '--to', 'dev', '--mask', policyFile, '--wait']);
    expect(again.exitCode, again.stderr).toBe(0);
    const byId = "SELECT string_agg(customer_id || email, ',' ORDER BY customer_id) FROM customer";
    expect(await value(rig.db('dev'), byId)).toBe(await value(copy, byId));
  });

  it('a column added to the source after the policy was written fails the copy, naming it; the target is untouched', async () => {
    await sql(rig.db('source'), 'ALTER TABLE customer ADD COLUMN phone text');
    const before = await fingerprint(rig.db('target'));
    try {
      const run = await rig.cli(['copy', '--from', 'source', '--to', 'target', '--mask', policyFile, '--wait']);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).not.toContain('creating the shadow database'); // refused before anything was made
      expect(run.stderr).toContain(
        'the masking policy does not fit source: public.customer: phone not covered by the policy; the target was not touched',
      );
      expect(await fingerprint(rig.db('target'))).toEqual(before);
    } finally {
      await sql(rig.db('source'), 'ALTER TABLE customer DROP COLUMN phone');
    }
    expect(before).not.toEqual(target); // the first test's masked copy is what stayed
  });

  it('a stale or incomplete policy fails naming every problem; a malformed one is refused before it is enqueued', async () => {
    const file = path.join(rig.backupDir, 'stale.yml');
    writeFileSync(
      file,
      'tables:\n  public.customer:\n    nickname: keep\n    email: truncate_month\n    first_name: "null"\n    "*": keep\n  public.gone:\n    "*": keep\n',
    );
    const run = await rig.cli(['copy', '--from', 'source', '--to', 'dev', '--mask', file, '--wait']);
    expect(run.exitCode).toBe(1);
    for (const problem of [
      'public.gone: the policy names a table the source does not have',
      'public.customer.nickname: the policy names a column the source does not have',
      'public.actor: not in the policy (its columns: actor_id, first_name, last_name, last_update)',
      'public.customer.email: truncate_month needs a date or timestamp column (it is text)',
      'public.customer.first_name: null on a NOT NULL column',
    ])
      expect(run.stderr, problem).toContain(problem);

    writeFileSync(file, 'tables:\n  public.customer:\n    email: scramble\n');
    const malformed = await rig.cli(['copy', '--from', 'source', '--to', 'dev', '--mask', file]);
    expect(malformed.exitCode).toBe(2);
    expect(malformed.stderr).toContain('unknown rule "scramble"');
    writeFileSync(file, 'tables: [oops');
    const notYaml = await rig.cli(['copy', '--from', 'source', '--to', 'dev', '--mask', file]);
    expect(notYaml.exitCode).toBe(2);
    expect(notYaml.stderr).toMatch(/^manage-db: .*stale\.yml is not YAML: /);
  });

  it('--mask-report lists exactly the columns a policy does not cover, as a starting policy', async () => {
    const expected = (
      await sql<{ name: string }>(
        rig.db('source'),
        `SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name AS name
           FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
          WHERE t.table_type = 'BASE TABLE' AND c.table_schema = 'public' AND c.table_name <> 'customer'
            AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                             WHERE p.relkind = 'p' AND i.inhrelid = format('%I.%I', c.table_schema, c.table_name)::regclass)
          ORDER BY c.table_name, c.ordinal_position`,
      )
    ).map((row) => row.name);
    const file = path.join(rig.backupDir, 'customer-only.yml');
    writeFileSync(file, POLICY.split('  public.staff:')[0]!.replace('seed: masking-test', ''));
    const run = await rig.cli(['copy', '--from', 'source', '--mask-report', '--mask', file, '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as {
      uncovered: { table: string; column: string }[];
      problems: string[];
      draft: string;
    };
    expect(report.uncovered.map((column) => `${column.table}.${column.column}`)).toEqual(expected);
    expect(report.problems).toContain(
      'public.actor: not in the policy (its columns: actor_id, first_name, last_name, last_update)',
    );
    expect(report.draft).toContain('  "public.actor":\n    "actor_id": keep   # integer, unique\n');

    const printed = await rig.cli(['copy', '--from', 'source', '--mask-report', '--mask', file]);
    expect(printed.exitCode).toBe(0);
    expect(printed.stdout).toMatch(new RegExp(`^# ${expected.length} of source's \\d+ columns not covered`, 'm'));
    expect(printed.stdout).toContain('    "picture": keep   # bytea');
    const covered = await rig.cli(['copy', '--from', 'source', '--mask-report', '--mask', policyFile]);
    expect(covered.stdout).toMatch(/the policy covers every one of source's \d+ columns/);

    const noTarget = await rig.cli(['copy', '--from', 'source']);
    expect(noTarget.exitCode).toBe(2);
    expect(noTarget.stderr.trim()).toBe("manage-db: required option '--to <env>' not specified");
  });
});
