import type pg from 'pg';

/** The migration state of a database: Alembic's revision(s), or node-pg-migrate's last applied file. */
export interface SchemaVersion {
  tool: 'alembic' | 'node-pg-migrate';
  /** Alembic: the heads in alembic_version (several on a branched history); node-pg-migrate: the last file applied. */
  revisions: string[];
}

/** What the migration tables say (in the caller's snapshot), or null for a database without any. */
export async function readSchemaVersion(client: pg.ClientBase): Promise<SchemaVersion | null> {
  const { rows } = await client.query<{ alembic: string | null; pgmigrations: string | null }>(
    "SELECT to_regclass('public.alembic_version')::text AS alembic, to_regclass('public.pgmigrations')::text AS pgmigrations",
  );
  if (rows[0]?.alembic) {
    const heads = await client.query<{ version_num: string }>(
      'SELECT version_num FROM public.alembic_version ORDER BY 1',
    );
    return { tool: 'alembic', revisions: heads.rows.map((row) => row.version_num) };
  }
  if (rows[0]?.pgmigrations) {
    const last = await client.query<{ name: string }>(
      'SELECT name FROM public.pgmigrations ORDER BY run_on DESC, id DESC LIMIT 1',
    );
    return { tool: 'node-pg-migrate', revisions: last.rows.map((row) => row.name) };
  }
  return null;
}
