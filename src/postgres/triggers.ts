import type pg from 'pg';
import type { TableRef } from './catalog.js';
import { quoteIdent } from './client.js';

/** A user trigger as the catalog has it (`type`: pg_trigger.tgtype's bits; `mode`: tgenabled). */
export interface TriggerRow {
  schema: string;
  table: string;
  name: string;
  mode: string;
  type: number;
  function: string;
  definition: string;
}

/** Every user trigger of the database (not the internal ones of constraints), by schema, table and name. */
export async function readTriggers(client: pg.ClientBase): Promise<TriggerRow[]> {
  const { rows } = await client.query<TriggerRow>(
    `SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name, t.tgenabled AS mode, t.tgtype AS type,
            format('%I.%I', pn.nspname, p.proname) AS function, pg_get_triggerdef(t.oid) AS definition
       FROM pg_trigger t
       JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
      WHERE NOT t.tgisinternal
      ORDER BY 1, 2, 3`,
  );
  return rows;
}

export async function dropTrigger(client: pg.ClientBase, table: TableRef, name: string): Promise<void> {
  await client.query(`DROP TRIGGER ${quoteIdent(name)} ON ${table.sql}`);
}

export async function setTriggerEnabled(
  client: pg.ClientBase,
  table: TableRef,
  name: string,
  enabled: boolean,
): Promise<void> {
  await client.query(`ALTER TABLE ${table.sql} ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER ${quoteIdent(name)}`);
}
