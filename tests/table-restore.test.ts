import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobTag } from '../src/job-ids.js';
import { toolSessions } from './helpers/blocker.js';
import { rewriteOwnManifest } from './helpers/manifests.js';
import { fingerprint, loadPagila, scratchDatabasesOf, sql } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

describe('restore --table --suffix', () => {
  let rig: Rig;
  let restoreWorker: WorkerProcess;
  const backups: Record<string, string> = {};
  const db = () => rig.db('app');
  const count = async (query: string) => Number(Object.values((await sql(db(), query))[0]!)[0]);

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(db());
    // A table of the application's with a key, a reference, an identity, a serial and a trigger of its own.
    await sql(
      db(),
      `CREATE TABLE orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line serial,
                            customer_id int NOT NULL REFERENCES customer, note text CHECK (note <> ''));
       INSERT INTO orders (customer_id, note) SELECT 1 + g % 599, 'order ' || g FROM generate_series(1, 500) g;
       CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION last_updated()`,
    );
    // A schema of its own, for --schema.
    await sql(
      db(),
      `CREATE SCHEMA billing;
       CREATE FUNCTION billing.positive(numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
       CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric CHECK (billing.positive(total)));
       CREATE TABLE billing.lines (invoice int REFERENCES billing.invoices, amount numeric);
       INSERT INTO billing.invoices SELECT g, g * 10 FROM generate_series(1, 30) g;
       INSERT INTO billing.lines SELECT 1 + g % 30, g FROM generate_series(1, 90) g;
       CREATE TABLE billing.usage (day date NOT NULL, units int) PARTITION BY RANGE (day);
       CREATE TABLE billing.usage_h1 PARTITION OF billing.usage FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
       CREATE TABLE billing.usage_h2 PARTITION OF billing.usage FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
       INSERT INTO billing.usage SELECT date '2026-01-01' + g, g FROM generate_series(0, 299) g`,
    );
    // Names that need quoting: a mixed-case schema, a table with a space, a column in capitals.
    await sql(
      db(),
      `CREATE SCHEMA "Sales";
       CREATE TABLE "Sales"."Order Lines" (id serial PRIMARY KEY, "Qty" int NOT NULL);
       INSERT INTO "Sales"."Order Lines" ("Qty") SELECT g FROM generate_series(1, 40) g;
       CREATE TABLE "Sales"."Refs" (line int REFERENCES "Sales"."Order Lines");
       INSERT INTO "Sales"."Refs" SELECT g FROM generate_series(1, 10) g`,
    );
    rig.setEnv('app', db());
    await rig.startWorker('backup');
    restoreWorker = await rig.startWorker('restore');
    for (const format of ['custom', 'directory']) {
      // The custom-format backup records each table's digest too.
      const digests = format === 'custom' ? ['--digests'] : [];
      const run = await rig.cli(['backup', '--env', 'app', '--format', format, ...digests, '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      backups[format] = (JSON.parse(run.stdout) as { backupId: string }).backupId;
    }
    // An hour later, someone deletes rows.
    await sql(db(), 'DELETE FROM orders WHERE id % 5 = 0');
  });
  afterAll(async () => rig?.cleanup());

  /** `restore` from the custom-format backup, as the user runs it (`--wait --json`). */
  const restore = (...args: string[]) =>
    rig.cli(['restore', '--env', 'app', '--backup', backups.custom!, ...args, '--wait', '--json']);

  it('brings the deleted rows back beside the table; every other table is untouched', async () => {
    const before = await fingerprint(db());
    const run = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--table',
      'public.orders',
      '--suffix',
      '_restored',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      env: 'app',
      backupId: backups.custom,
      tables: [{ table: 'public.orders', restoredAs: 'public.orders_restored', rows: 500, checked: 'content digest' }],
    });
    // Only the definitions the table needs were restored into the scratch database, not every one, and
    // none of its rows: they went from the archive into the live database alone.
    const jobId = /job (\S+)/.exec(run.stderr)?.[1];
    const shown = JSON.parse((await rig.cli(['jobs', 'show', jobId!, '--json'])).stdout) as { logs: string[] };
    expect(shown.logs.join('\n')).not.toContain('processing data for table');
    expect(shown.logs.join('\n')).not.toContain('restoring every definition');
    expect(shown.logs.join('\n')).toMatch(/restoring what 1 table\(s\) need: \d+ of the archive's \d+ entries/);
    const after = await fingerprint(db());
    const { 'public.orders_restored': added, ...rest } = after.tables;
    expect(rest).toEqual(before.tables);
    expect(added).toMatchObject({ rows: 500 });
    expect(after.sequences).toEqual(before.sequences);
    expect(await count('SELECT count(*) FROM orders')).toBe(400);
    // The deleted rows, found and copied back as a person would.
    expect(
      await count('SELECT count(*) FROM orders_restored r WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.id)'),
    ).toBe(100);
    await sql(
      db(),
      `INSERT INTO orders (id, line, customer_id, note) OVERRIDING SYSTEM VALUE
         SELECT * FROM orders_restored r WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.id)`,
    );
    expect(await count('SELECT count(*) FROM orders')).toBe(500);
    // The restored table has its columns and checks, and nothing that could collide: no keys, no triggers.
    expect(
      await count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders_restored'::regclass AND contype = 'c'"),
    ).toBe(1);
    expect(await count("SELECT count(*) FROM pg_index WHERE indrelid = 'orders_restored'::regclass")).toBe(0);
    expect(await count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_restored'::regclass")).toBe(0);
  });

  it('from a directory-format backup, several tables at once', async () => {
    const run = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.directory!,
      '--table',
      'public.orders',
      '--table',
      'public.film',
      '--suffix',
      '_dir',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { tables: { table: string; rows: number; checked: string }[] };
    expect(result.tables.map((table) => [table.table, table.rows, table.checked])).toEqual([
      ['public.orders', 500, 'row count'],
      ['public.film', 1000, 'row count'],
    ]);
    expect(await count('SELECT count(*) FROM film_dir f JOIN film USING (film_id) WHERE f.title = film.title')).toBe(
      1000,
    );
  });

  it('an unknown table, or a name already taken, fails naming it; nothing is changed', async () => {
    const before = await fingerprint(db());
    const unknown = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--table',
      'public.nope',
      '--suffix',
      '_x',
      '--wait',
    ]);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain(`backup ${backups.custom} has no table public.nope; nothing was changed`);
    const taken = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--table',
      'public.orders',
      '--suffix',
      '_restored',
      '--wait',
    ]);
    expect(taken.exitCode).toBe(1);
    expect(taken.stderr).toContain(
      'public.orders_restored already exists in app: choose another suffix; nothing was changed',
    );
    // A backup from before dbops recorded partitions: a partitioned table is named by its partitions.
    await rewriteOwnManifest(rig.backupDir, backups.directory!, (manifest) => delete manifest.partitions);
    const partitioned = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.directory!,
      '--table',
      'public.payment',
      '--suffix',
      '_x',
      '--wait',
    ]);
    expect(partitioned.exitCode).toBe(1);
    expect(partitioned.stderr).toContain(
      `public.payment is a partitioned table, and backup ${backups.directory} was made before dbops recorded partitions: ` +
        'name its partitions, each brought back as a table of its own ' +
        '(--table public.payment_p2022_01 --table public.payment_p2022_02 --table public.payment_p2022_03 ' +
        '--table public.payment_p2022_04 --table public.payment_p2022_05 --table public.payment_p2022_06 ' +
        '--table public.payment_p2022_07); nothing was changed',
    );
    expect(await fingerprint(db())).toEqual(before);

    const noSuffix = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--table',
      'public.orders',
    ]);
    expect(noSuffix.exitCode).toBe(2);
    expect(noSuffix.stderr.trim()).toBe(
      'manage-db: --table and --schema need either --suffix (each table comes back beside the live one as <table><suffix>) or --replace',
    );
  });

  it('a partitioned table comes back whole: beside the live one, its partitions attached as in the backup', async () => {
    const before = await fingerprint(db());
    const backupRows = before.tables['public.payment_p2022_01']!.rows;
    await sql(db(), 'DELETE FROM payment WHERE payment_id % 3 = 0');
    const deleted = await fingerprint(db());
    const run = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--table',
      'public.payment',
      '--suffix',
      '_back',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      tables: { table: string; restoredAs: string; rows: number; checked: string; partitionOf?: string }[];
    };
    const partitions = Object.keys(before.tables).filter((name) => name.startsWith('public.payment_p2022_'));
    expect(partitions).toHaveLength(7);
    // Only what the eight tables need was restored into the scratch database, not every definition.
    const jobId = /job (\S+)/.exec(run.stderr)?.[1];
    const logs = (JSON.parse((await rig.cli(['jobs', 'show', jobId!, '--json'])).stdout) as { logs: string[] }).logs;
    expect(logs.join('\n')).toMatch(/restoring what 8 table\(s\) need/);
    expect(logs.join('\n')).not.toContain('restoring every definition');
    const total = partitions.reduce((sum, name) => sum + before.tables[name]!.rows, 0);
    expect(result.tables[0]).toEqual({
      table: 'public.payment',
      restoredAs: 'public.payment_back',
      rows: total,
      checked: 'content digest',
    });
    expect(result.tables.slice(1)).toEqual(
      partitions.map((name) => ({
        table: name,
        restoredAs: `${name}_back`,
        rows: before.tables[name]!.rows,
        partitionOf: 'public.payment',
        checked: 'content digest',
      })),
    );
    expect(result.tables.find((table) => table.table === 'public.payment_p2022_01')!.rows).toBe(backupRows);
    // In the live database: a partitioned payment_back, its seven partitions attached, every row of the backup.
    expect(await count('SELECT count(*) FROM payment_back')).toBe(total);
    expect(
      await sql(
        db(),
        `SELECT c.relname AS partition FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'public.payment_back'::regclass ORDER BY 1`,
      ),
    ).toEqual(partitions.map((name) => ({ partition: `${name.slice('public.'.length)}_back` })));
    expect(await count('SELECT count(*) FROM payment_back WHERE payment_id % 3 = 0')).toBeGreaterThan(0);
    // Every other table as it was.
    const after = await fingerprint(db());
    const added = Object.keys(after.tables).filter((name) => !(name in deleted.tables));
    expect(added.sort()).toEqual(partitions.map((name) => `${name}_back`).sort()); // (the parent holds no rows of its own)
    for (const name of Object.keys(deleted.tables)) expect(after.tables[name], name).toEqual(deleted.tables[name]);

    await sql(db(), 'DROP TABLE payment_back');

    // --replace: the backup's rows go back into the live partitions, through the partitioned table.
    // A live table without a partition for some of the backup's rows: refused, nothing changed.
    await sql(db(), 'ALTER TABLE payment DETACH PARTITION payment_p2022_07');
    const detached = await fingerprint(db());
    const unfit = await replace('public.payment');
    expect(unfit.exitCode).toBe(1);
    expect(unfit.stderr).toMatch(
      /the backup's rows of public\.payment do not fit the live table: no partition of relation "payment" found for row.*; nothing was changed/,
    );
    expect(await fingerprint(db())).toEqual(detached);
    await sql(
      db(),
      "ALTER TABLE payment ATTACH PARTITION payment_p2022_07 FOR VALUES FROM ('2022-07-01 00:00:00+00') TO ('2022-08-01 00:00:00+00')",
    );
    // A trigger of one partition's own, made since the backup: a restore is no application's insert.
    await sql(
      db(),
      `CREATE FUNCTION zero_amount() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.amount := 0; RETURN NEW; END';
       CREATE TRIGGER p01_zero BEFORE INSERT ON payment_p2022_01 FOR EACH ROW EXECUTE FUNCTION zero_amount()`,
    );
    const replaced = await replace('public.payment');
    expect(replaced.exitCode, replaced.stderr).toBe(0);
    const swapped = (
      JSON.parse(replaced.stdout) as {
        tables: {
          table: string;
          restoredAs: string;
          rows: number;
          partitionOf?: string;
          replaced?: { keptAs: string; views: string[] };
        }[];
      }
    ).tables;
    expect(swapped[0]).toMatchObject({
      table: 'public.payment',
      restoredAs: 'public.payment',
      rows: total,
      checked: 'content digest',
      replaced: {
        keptAs: expect.stringMatching(/^public\.payment_prev_\d{8}t\d{6}$/),
        views: expect.arrayContaining(['public.sales_by_store']),
        triggers: ['public.payment_p2022_01.p01_zero'],
      },
    });
    expect(await count("SELECT count(*) FROM pg_trigger WHERE tgname = 'p01_zero' AND tgenabled = 'O'")).toBe(1);
    expect(swapped.slice(1).map((table) => [table.table, table.restoredAs, table.partitionOf])).toEqual(
      partitions.map((name) => [name, 'public.payment', 'public.payment']),
    );
    // Each live partition holds exactly what it held at the backup; the deleted rows are kept beside.
    const restored = await fingerprint(db());
    for (const name of partitions) expect(restored.tables[name], name).toEqual(before.tables[name]);
    const kept = swapped[0]!.replaced!.keptAs;
    expect(await count(`SELECT count(*) FROM ${kept}`)).toBe(
      partitions.reduce((sum, name) => sum + deleted.tables[name]!.rows, 0),
    );
    expect(await count('SELECT count(*) FROM sales_by_store')).toBeGreaterThan(0);
    expect(await sql(db(), "SELECT relname FROM pg_class WHERE relname LIKE 'payment%dbops%'")).toEqual([]);
    for (const name of Object.keys(deleted.tables).filter((one) => !one.startsWith('public.payment')))
      expect(restored.tables[name], name).toEqual(deleted.tables[name]);
    await sql(db(), `DROP TABLE ${kept}; DROP TRIGGER p01_zero ON payment_p2022_01; DROP FUNCTION zero_amount()`);
  });

  it('--schema brings back every table of a schema the backup holds', async () => {
    await sql(db(), 'DELETE FROM billing.lines WHERE amount > 45');
    const run = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--schema',
      'billing',
      '--suffix',
      '_then',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      tables: { table: string; restoredAs: string; rows: number; partitionOf?: string }[];
    };
    expect(result.tables.map((table) => [table.table, table.restoredAs, table.rows, table.partitionOf])).toEqual([
      ['billing.usage', 'billing.usage_then', 300, undefined],
      ['billing.invoices', 'billing.invoices_then', 30, undefined],
      ['billing.lines', 'billing.lines_then', 90, undefined],
      ['billing.usage_h1', 'billing.usage_h1_then', 181, 'billing.usage'],
      ['billing.usage_h2', 'billing.usage_h2_then', 119, 'billing.usage'],
    ]);
    expect(await count('SELECT count(*) FROM billing.lines')).toBe(45);
    // The schema's partitioned table came back whole, its partitions attached.
    expect(await count('SELECT count(*) FROM billing.usage_then')).toBe(300);
    // The invoices' check calls a function of the schema's, which a table's own definitions leave out:
    // that restore fails in the scratch database, and every definition is restored instead.
    const jobId = /job (\S+)/.exec(run.stderr)?.[1];
    const shown = JSON.parse((await rig.cli(['jobs', 'show', jobId!, '--json'])).stdout) as { logs: string[] };
    expect(shown.logs.join('\n')).toContain("the tables' own definitions did not restore alone");
    expect(shown.logs.join('\n')).toContain('restoring every definition');
    const missing = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backups.custom!,
      '--schema',
      'nope',
      '--suffix',
      '_x',
      '--wait',
    ]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain(`backup ${backups.custom} has no table in schema nope; nothing was changed`);
  });

  it('names that need quoting are written as SQL writes them: "Sales"."Order Lines", beside and replaced', async () => {
    await sql(db(), 'DELETE FROM "Sales"."Order Lines" WHERE id > 30');
    const beside = await restore('--table', '"Sales"."Order Lines"', '--suffix', '_back');
    expect(beside.exitCode, beside.stderr).toBe(0);
    expect((JSON.parse(beside.stdout) as { tables: unknown[] }).tables).toEqual([
      expect.objectContaining({
        table: '"Sales"."Order Lines"',
        restoredAs: '"Sales"."Order Lines_back"',
        rows: 40,
        checked: 'content digest',
      }),
    ]);
    expect(await count('SELECT sum("Qty") FROM "Sales"."Order Lines_back"')).toBe(820);
    expect(await count('SELECT count(*) FROM "Sales"."Order Lines"')).toBe(30);
    // --schema takes the quoted schema; each of its tables once, however the table was also named.
    const schema = await restore('--schema', '"Sales"', '--table', '"Sales"."Refs"', '--suffix', '_s');
    expect(schema.exitCode, schema.stderr).toBe(0);
    expect(
      (JSON.parse(schema.stdout) as { tables: { table: string; restoredAs: string }[] }).tables
        .map((table) => [table.table, table.restoredAs])
        .sort(),
    ).toEqual([
      ['"Sales"."Order Lines"', '"Sales"."Order Lines_s"'],
      ['"Sales"."Refs"', '"Sales"."Refs_s"'],
    ]);
    // Replaced: the foreign key from "Refs" is named in the result and holds again.
    await sql(db(), 'DELETE FROM "Sales"."Refs" WHERE line > 5; DELETE FROM "Sales"."Order Lines" WHERE id > 20');
    const replaced = await restore('--table', '"Sales"."Order Lines"', '--replace');
    expect(replaced.exitCode, replaced.stderr).toBe(0);
    const [result] = (
      JSON.parse(replaced.stdout) as { tables: { replaced: { keptAs: string; foreignKeys: string[] } }[] }
    ).tables;
    expect(result).toMatchObject({
      table: '"Sales"."Order Lines"',
      rows: 40,
      replaced: {
        keptAs: expect.stringMatching(/^"Sales"\."Order Lines_prev_\d{8}t\d{6}"$/),
        foreignKeys: ['"Sales"."Refs"."Refs_line_fkey"'],
      },
    });
    expect(await count('SELECT count(*) FROM "Sales"."Order Lines"')).toBe(40);
    expect(await count(`SELECT count(*) FROM ${result!.replaced.keptAs}`)).toBe(20);
    // Unquoted capitals are not a name PostgreSQL would read as this table: refused, saying how to write it.
    const capitals = await restore('--table', 'Sales.Order', '--suffix', '_x');
    expect(capitals.exitCode).toBe(2);
    expect(capitals.stderr).toContain('each name lowercase or in double quotes');
    await sql(
      db(),
      `DROP TABLE "Sales"."Order Lines_back", "Sales"."Order Lines_s", "Sales"."Refs_s", ${result!.replaced.keptAs}`,
    );
  });

  const replace = (...tables: string[]) => restore(...tables.flatMap((table) => ['--table', table]), '--replace');
  const leftovers = () =>
    sql<{ name: string }>(
      db(),
      "SELECT relname AS name FROM pg_class WHERE relname ~ '^orders_(dbops|prev)_' AND relkind = 'r' ORDER BY 1",
    );

  it('--replace swaps the backup rows into a table referenced by foreign keys and a view; the live rows are kept', async () => {
    // Since the backup: a table referencing orders, a view on it, a grant; rows deleted and one added.
    await sql(
      db(),
      `CREATE TABLE order_lines (id serial PRIMARY KEY, order_id int NOT NULL REFERENCES orders, qty int);
       INSERT INTO order_lines (order_id, qty) SELECT 1 + g % 50, g FROM generate_series(1, 200) g;
       CREATE VIEW big_orders AS SELECT id, note FROM orders WHERE id > 100;
       GRANT SELECT ON orders TO PUBLIC;
       DELETE FROM orders WHERE id > 450;
       INSERT INTO orders (customer_id, note) VALUES (7, 'after the backup')`,
    );
    const lastId = await count('SELECT last_value FROM orders_id_seq');
    const before = await fingerprint(db());
    const run = await replace('public.orders');
    expect(run.exitCode, run.stderr).toBe(0);
    const [result] = (JSON.parse(run.stdout) as { tables: { replaced: { keptAs: string } }[] }).tables;
    expect(result).toMatchObject({
      table: 'public.orders',
      restoredAs: 'public.orders',
      rows: 500,
      checked: 'content digest',
      replaced: {
        keptAs: expect.stringMatching(/^public\.orders_prev_\d{8}t\d{6}$/),
        foreignKeys: ['public.order_lines.order_lines_order_id_fkey', 'public.orders.orders_customer_id_fkey'],
        views: ['public.big_orders'],
        grants: expect.arrayContaining(['PUBLIC: SELECT']),
        triggers: ['orders_touch'],
        sequences: ['public.orders_id_seq', 'public.orders_line_seq'],
      },
    });
    const kept = result!.replaced.keptAs;
    // The backup's rows are back, the live ones kept; the view reads the table; every key holds again.
    expect(await count('SELECT count(*) FROM orders')).toBe(500);
    expect(await count(`SELECT count(*) FROM ${kept}`)).toBe(451);
    expect(await count(`SELECT count(*) FROM ${kept} WHERE note = 'after the backup'`)).toBe(1);
    expect(await count('SELECT count(*) FROM big_orders')).toBe(400);
    expect(
      await count(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated AND conname IN ('order_lines_order_id_fkey', 'orders_customer_id_fkey')",
      ),
    ).toBe(2);
    // The table is the same relation: its trigger is on, its grant stands, its sequences were not rewound.
    expect(await count("SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_touch' AND tgenabled = 'O'")).toBe(1);
    expect(
      await count(
        "SELECT count(*) FROM information_schema.role_table_grants WHERE table_name = 'orders' AND grantee = 'PUBLIC'",
      ),
    ).toBe(1);
    expect(await count('SELECT last_value FROM orders_id_seq')).toBe(lastId);
    await sql(db(), "INSERT INTO orders (customer_id, note) VALUES (8, 'new after the replace')");
    expect(await count("SELECT id FROM orders WHERE note = 'new after the replace'")).toBe(lastId + 1);
    // Nothing else changed, and nothing of the job's was left behind.
    const after = await fingerprint(db());
    const others = (tables: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(tables).filter(([name]) => !/^public\.orders/.test(name)));
    expect(others(after.tables)).toEqual(others(before.tables));
    expect((await leftovers()).map((row) => row.name)).toEqual([kept.slice('public.'.length)]);
    await sql(db(), `DROP TABLE ${kept}; DELETE FROM orders WHERE note = 'new after the replace'`);
  });

  it('--replace refuses what would break: a row elsewhere referencing a row the backup lacks, changed columns', async () => {
    await sql(db(), "INSERT INTO orders (id, customer_id, note) OVERRIDING SYSTEM VALUE VALUES (900, 1, 'late')");
    await sql(db(), 'INSERT INTO order_lines (order_id, qty) VALUES (900, 1)');
    await sql(db(), 'ALTER TABLE film ADD COLUMN rating_note text');
    // A check added since the backup (not validated against the live rows) that a backup row breaks.
    await sql(db(), 'ALTER TABLE actor ADD CONSTRAINT actor_not_7 CHECK (actor_id <> 7) NOT VALID');
    const before = await fingerprint(db());
    const orphan = await replace('public.orders');
    expect(orphan.exitCode).toBe(1);
    expect(orphan.stderr).toMatch(
      /foreign key order_lines_order_id_fkey of public\.order_lines would not hold: .*; nothing was changed/,
    );
    const changed = await replace('public.film', 'public.orders');
    expect(changed.exitCode).toBe(1);
    expect(changed.stderr).toContain(
      'the columns of public.film changed since the backup (column rating_note is not in the backup); nothing was changed',
    );
    const checked = await replace('public.actor');
    expect(checked.exitCode).toBe(1);
    expect(checked.stderr).toMatch(
      /the backup's rows of public\.actor do not fit the live table: new row for relation "actor" violates check constraint "actor_not_7"; nothing was changed/,
    );
    // A protected environment needs its name again (here the CLI's check; the worker's is every operation's).
    rig.env.PROTECTED_ENVS = 'app';
    try {
      const unconfirmed = await replace('public.orders');
      expect(unconfirmed.exitCode).toBe(2);
      expect(unconfirmed.stderr).toContain('"app" is a protected environment: repeat its name with --confirm app');
    } finally {
      rig.env.PROTECTED_ENVS = 'none';
    }
    expect(await fingerprint(db())).toEqual(before);
    expect(await leftovers()).toEqual([]);
    await sql(db(), 'ALTER TABLE actor DROP CONSTRAINT actor_not_7');
  });

  it('a damaged archive never reaches the live database: the sha256 is checked before anything moves', async () => {
    const made = await rig.cli(['backup', '--env', 'app', '--wait', '--json']);
    expect(made.exitCode, made.stderr).toBe(0);
    const backup = JSON.parse(made.stdout) as { backupId: string; path: string };
    const bytes = readFileSync(backup.path);
    // A byte of the last table's data: the orders' own rows may well be intact.
    const at = bytes.length - 200;
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(backup.path, bytes);
    const before = await fingerprint(db());
    const run = await rig.cli([
      'restore',
      '--env',
      'app',
      '--backup',
      backup.backupId,
      '--table',
      'public.orders',
      '--replace',
      '--wait',
    ]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/the archive is damaged: sha256 does not match.*; nothing was changed/);
    expect(await fingerprint(db())).toEqual(before);
    expect(await leftovers()).toEqual([]);
  });

  it('the rows are checked against the manifest before they are committed: a count or a digest that differs leaves nothing', async () => {
    const made = await rig.cli(['backup', '--env', 'app', '--digests', '--wait', '--json']);
    expect(made.exitCode, made.stderr).toBe(0);
    const { backupId } = JSON.parse(made.stdout) as { backupId: string };
    const restoreChecked = () =>
      rig.cli([
        'restore',
        '--env',
        'app',
        '--backup',
        backupId,
        '--table',
        'public.orders',
        '--suffix',
        '_chk',
        '--wait',
      ]);
    const before = await fingerprint(db());
    let rows = 0;
    await rewriteOwnManifest(rig.backupDir, backupId, (manifest) => {
      const counts = manifest.rowCounts as Record<string, number>;
      rows = counts['public.orders']!;
      counts['public.orders'] = rows + 1;
    });
    const miscounted = await restoreChecked();
    expect(miscounted.exitCode).toBe(1);
    expect(miscounted.stderr).toContain(
      `public.orders restored with ${rows} rows where the backup's manifest says ${rows + 1}; nothing was changed`,
    );
    expect(await fingerprint(db())).toEqual(before);

    await rewriteOwnManifest(rig.backupDir, backupId, (manifest) => {
      (manifest.rowCounts as Record<string, number>)['public.orders'] = rows;
      (manifest.tableDigests as Record<string, string>)['public.orders'] = '0'.repeat(32);
    });
    const otherContents = await restoreChecked();
    expect(otherContents.exitCode).toBe(1);
    expect(otherContents.stderr).toContain(
      "public.orders restored with other contents than the backup's manifest records (its digest differs); nothing was changed",
    );
    expect(await fingerprint(db())).toEqual(before);
    expect(await scratchDatabasesOf(db())).toEqual([]);
  });

  it('--replace drops what an earlier attempt of its job left, and nothing of anyone else', async () => {
    // What an attempt killed mid-way left (its rows on their way in, marked with its job) goes at the
    // next attempt; a table of that name without the mark is someone else's, and stays.
    const producer = rig.producer();
    const attempt = async (jobId: string) => {
      await producer.enqueue(
        'restoretables',
        { env: 'app', backup: backups.custom!, tables: ['public.film'], replace: true },
        { jobId },
      );
      return producer.wait(jobId);
    };
    await sql(db(), 'ALTER TABLE film DROP COLUMN rating_note');
    const left = `film_dbops_${jobTag('restoretables-left')}`;
    await sql(
      db(),
      `CREATE TABLE ${left} (x int); COMMENT ON TABLE ${left} IS 'dbops restoretables restoretables-left: rows on their way in'`,
    );
    expect((await attempt('restoretables-left')).state).toBe('completed');
    const strangers = `film_dbops_${jobTag('restoretables-stranger')}`;
    await sql(db(), `CREATE TABLE ${strangers} (x int)`);
    const refused = await attempt('restoretables-stranger');
    expect(refused).toMatchObject({ state: 'failed' });
    expect(JSON.stringify(refused)).toContain(`public.${strangers} exists and is not dbops' own; nothing was changed`);
    expect(
      (
        await sql<{ name: string }>(
          db(),
          "SELECT relname AS name FROM pg_class WHERE relname ~ '^film_(dbops|prev)_' AND relkind = 'r' ORDER BY 1",
        )
      ).map((row) => row.name),
    ).toEqual([strangers, expect.stringMatching(/^film_prev_/)]);
    await sql(db(), `DROP TABLE ${strangers}`);
  });

  it('a worker killed while the rows load leaves nothing; another worker completes the job', async () => {
    await sql(db(), 'CREATE TABLE ledger AS SELECT g AS id, md5(g::text) AS entry FROM generate_series(1, 1500000) g');
    const made = await rig.cli(['backup', '--env', 'app', '--wait', '--json']);
    expect(made.exitCode, made.stderr).toBe(0);
    const { backupId } = JSON.parse(made.stdout) as { backupId: string };
    const before = await fingerprint(db());
    const producer = rig.producer();
    const job = await producer.enqueue('restoretables', {
      env: 'app',
      backup: backupId,
      tables: ['public.ledger'],
      suffix: '_back',
    });
    const outcome = producer.wait<'restoretables'>(job.id);
    await waitFor(
      'psql to be loading the rows',
      async () =>
        (
          await sql(
            db(),
            `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'dbops-psql'
                AND query LIKE 'COPY public.ledger_back %'`,
          )
        ).length > 0,
      30_000,
    );
    restoreWorker.process.kill('SIGKILL');
    await restoreWorker.exited;
    await waitFor("the dead worker's psql to end", async () => (await toolSessions(db(), 'psql')).length === 0);
    expect(await fingerprint(db())).toEqual(before);

    restoreWorker = await rig.startWorker('restore');
    expect((await outcome).state).toBe('completed');
    expect(await count('SELECT count(*) FROM ledger_back')).toBe(1500000);
    expect(await scratchDatabasesOf(db())).toEqual([]);
    await sql(db(), 'DROP TABLE ledger, ledger_back');
  });
});
