import type pg from 'pg';
import { tableRef } from './catalog.js';
import { quoteIdent } from './client.js';

/*
 * A table restored into a scratch database, made ready to travel alone into a live database under
 * another name: renamed, and cut loose from the sequences it shares a name with there (a column's
 * default from one, an identity, a sequence it owns), so that its dump creates the table and its rows
 * and nothing else. Its indexes, constraints to other tables and triggers were never restored (only
 * the definitions and the rows were), so none of their names can collide either.
 */

/** Whether `schema.table` exists (as any relation) in the database `client` is connected to. */
export async function relationExists(client: pg.ClientBase, schema: string, table: string): Promise<boolean> {
  const { rows } = await client.query<{ found: boolean }>(
    'SELECT to_regclass(format($3, $1::text, $2::text)) IS NOT NULL AS found',
    [schema, table, '%I.%I'],
  );
  return rows[0]!.found;
}

export async function countTableRows(client: pg.ClientBase, schema: string, table: string): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${tableRef(schema, table).sql}`);
  return Number(rows[0]!.n);
}

export async function detachForTravel(
  client: pg.ClientBase,
  schema: string,
  table: string,
  newName: string,
): Promise<void> {
  const relation = tableRef(schema, table).sql;
  const { rows: identities } = await client.query<{ name: string }>(
    `SELECT attname AS name FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attidentity <> ''`,
    [relation],
  );
  for (const { name } of identities)
    await client.query(`ALTER TABLE ${relation} ALTER COLUMN ${quoteIdent(name)} DROP IDENTITY`);
  const { rows: sequenced } = await client.query<{ name: string }>(
    `SELECT a.attname AS name FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
      WHERE d.adrelid = $1::regclass AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'`,
    [relation],
  );
  for (const { name } of sequenced)
    await client.query(`ALTER TABLE ${relation} ALTER COLUMN ${quoteIdent(name)} DROP DEFAULT`);
  const { rows: owned } = await client.query<{ sequence: string }>(
    `SELECT d.objid::regclass::text AS sequence FROM pg_depend d
      WHERE d.refobjid = $1::regclass AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'
        AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'`,
    [relation],
  );
  for (const { sequence } of owned) await client.query(`ALTER SEQUENCE ${sequence} OWNED BY NONE`);
  await client.query(`ALTER TABLE ${relation} RENAME TO ${quoteIdent(newName)}`);
}
