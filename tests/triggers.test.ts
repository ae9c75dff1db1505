import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPagila, sql } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

const HOSTILE = 'film"; drop table actor; --';

describe('triggers', () => {
  let rig: Rig;
  let db: string;
  let worker: WorkerProcess;

  beforeAll(async () => {
    rig = await Rig.create();
    db = rig.db('app');
    await loadPagila(db);
    rig.setEnv('app', db);
    worker = await rig.startWorker('triggers');
  });
  afterAll(async () => rig?.cleanup());

  /** tgenabled of every user trigger, from the catalog: `schema.table.name` → O/D/R/A. */
  async function states(): Promise<Record<string, string>> {
    const rows = await sql<{ key: string; state: string }>(
      db,
      `SELECT n.nspname || '.' || c.relname || '.' || t.tgname AS key, t.tgenabled::text AS state FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal`,
    );
    return Object.fromEntries(rows.map((row) => [row.key, row.state]));
  }

  async function triggers(...args: string[]) {
    return rig.cli(['triggers', ...args, '--env', 'app', '--wait', '--json']);
  }

  it('lists every non-internal trigger with its table, state, timing, events and function', async () => {
    const run = await triggers('list');
    expect(run.exitCode).toBe(0);
    const { triggers: listed } = JSON.parse(run.stdout) as { triggers: Record<string, unknown>[] };
    const [count] = await sql<{ n: number }>(db, 'SELECT count(*)::int AS n FROM pg_trigger WHERE NOT tgisinternal');
    expect(listed).toHaveLength(count!.n);
    expect(listed).toContainEqual(
      expect.objectContaining({
        schema: 'public',
        table: 'film',
        name: 'film_fulltext_trigger',
        enabled: true,
        timing: 'BEFORE',
        level: 'ROW',
        events: ['INSERT', 'UPDATE'],
      }),
    );
  });

  it('disables and enables one trigger, all on a table, and all of the database', async () => {
    const before = await states();
    expect((await triggers('disable', '--table', 'public.film', '--name', 'last_updated')).exitCode).toBe(0);
    expect(await states()).toEqual({ ...before, 'public.film.last_updated': 'D' });

    expect((await triggers('disable', '--table', 'public.customer')).exitCode).toBe(0);
    const afterTable = await states();
    const customer = Object.keys(before).filter((key) => key.startsWith('public.customer.'));
    expect(customer.length).toBeGreaterThan(0);
    for (const key of customer) expect(afterTable[key]).toBe('D');

    expect((await triggers('disable')).exitCode).toBe(0);
    expect(Object.values(await states()).every((state) => state === 'D')).toBe(true);
    const enabled = await triggers('enable');
    expect(enabled.exitCode).toBe(0);
    expect(JSON.parse(enabled.stdout).changed).toHaveLength(Object.keys(before).length);
    expect(await states()).toEqual(before);
  });

  it('creates from a SQL file and drops by name, each in a transaction', async () => {
    const file = path.join(rig.backupDir, 'audit.sql');
    writeFileSync(
      file,
      'CREATE TRIGGER actor_touch BEFORE UPDATE ON public.actor FOR EACH ROW EXECUTE FUNCTION public.last_updated();',
    );
    const created = await triggers('create', '--file', file);
    expect(created.exitCode).toBe(0);
    expect(JSON.parse(created.stdout).changed).toEqual([{ table: 'public.actor', name: 'actor_touch' }]);
    expect((await states())['public.actor.actor_touch']).toBe('O');

    const dropped = await triggers('drop', '--table', 'public.actor', '--name', 'actor_touch');
    expect(dropped.exitCode).toBe(0);
    expect((await states())['public.actor.actor_touch']).toBeUndefined();

    const before = await states();
    writeFileSync(file, "CREATE TABLE sneaky (x int); SELECT 'no trigger here';");
    const nothing = await triggers('create', '--file', file);
    expect(nothing.exitCode).toBe(1);
    expect(nothing.stderr).toContain('created no trigger');
    expect(await sql(db, "SELECT to_regclass('public.sneaky') AS t")).toEqual([{ t: null }]);
    expect(await states()).toEqual(before);
  });

  it('treats hostile identifiers as names: refused when unknown, used as names when real, nothing dropped', async () => {
    const refused = await triggers('disable', '--table', HOSTILE);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`no table "${HOSTILE}"`);
    const unknownTrigger = await triggers('drop', '--name', `x'; drop table film; --`);
    expect(unknownTrigger.exitCode).toBe(1);

    await sql(db, `CREATE TABLE public."${HOSTILE.replace(/"/g, '""')}" (id int)`);
    await sql(
      db,
      `CREATE TRIGGER "tr ☃ ""; drop table actor" BEFORE INSERT ON public."${HOSTILE.replace(/"/g, '""')}" FOR EACH ROW EXECUTE FUNCTION public.last_updated()`,
    );
    const disabled = await triggers('disable', '--table', `public.${HOSTILE}`, '--name', 'tr ☃ "; drop table actor');
    expect(disabled.exitCode).toBe(0);
    expect((await states())[`public.${HOSTILE}.tr ☃ "; drop table actor`]).toBe('D');
    const dropped = await triggers('drop', '--table', `public.${HOSTILE}`, '--name', 'tr ☃ "; drop table actor');
    expect(dropped.exitCode).toBe(0);
    expect(await sql(db, 'SELECT count(*)::int AS n FROM actor')).toEqual([{ n: 200 }]);
    expect(await sql(db, 'SELECT count(*)::int AS n FROM film')).toEqual([{ n: 1000 }]);
  });

  it('disable --for re-enables the trigger later from a delayed job, even after the worker that disabled it died', async () => {
    const run = await triggers('disable', '--table', 'public.film', '--name', 'film_fulltext_trigger', '--for', '3s');
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout).reenableJobId).toMatch(/^triggers-reenable-/);
    expect((await states())['public.film.film_fulltext_trigger']).toBe('D');
    worker.process.kill('SIGKILL');
    await worker.exited;
    worker = await rig.startWorker('triggers');
    await waitFor(
      'the trigger to be re-enabled',
      async () => (await states())['public.film.film_fulltext_trigger'] === 'O',
      30_000,
    );
  });
});
