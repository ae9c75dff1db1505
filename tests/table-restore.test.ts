import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

describe('restore --table --suffix', () => {
  let rig: Rig;
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
    rig.setEnv('app', db());
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    for (const format of ['custom', 'directory']) {
      const run = await rig.cli(['backup', '--env', 'app', '--format', format, '--wait', '--json']);
      expect(run.exitCode, run.stderr).toBe(0);
      backups[format] = (JSON.parse(run.stdout) as { backupId: string }).backupId;
    }
    // An hour later, someone deletes rows.
    await sql(db(), 'DELETE FROM orders WHERE id % 5 = 0');
  });
  afterAll(async () => rig?.cleanup());

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
      tables: [{ table: 'public.orders', restoredAs: 'public.orders_restored', rows: 500 }],
    });
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
    const result = JSON.parse(run.stdout) as { tables: { table: string; rows: number }[] };
    expect(result.tables.map((table) => [table.table, table.rows])).toEqual([
      ['public.orders', 500],
      ['public.film', 1000],
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
      'manage-db: --table needs --suffix: each table comes back beside the live one as <table><suffix>',
    );
  });
});
