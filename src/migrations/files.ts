import { createHash } from 'node:crypto';
import { readFile, readdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { PermanentError, ValidationError } from '../errors.js';

/*
 * Migration files in the node-pg-migrate SQL format: `<number>_<name>.sql` with `-- Up Migration` and an
 * optional `-- Down Migration` section. node-pg-migrate runs them; this module reads what it needs for
 * status, dry runs and checksums without touching the database.
 */

export interface MigrationFile {
  /** The name node-pg-migrate records: the file name without `.sql`. */
  name: string;
  file: string;
  sha256: string;
  up: string;
  down: string | undefined;
}

export const MIGRATIONS_TABLE = 'pgmigrations';
export const CHECKSUMS_TABLE = 'dbops_migration_checksums';

function sections(text: string): { up: string; down: string | undefined } {
  const upAt = text.search(/^--\s*Up Migration\s*$/im);
  const downAt = text.search(/^--\s*Down Migration\s*$/im);
  if (upAt < 0) return { up: text.trim(), down: undefined };
  const up = downAt > upAt ? text.slice(upAt, downAt) : text.slice(upAt);
  const down = downAt >= 0 ? text.slice(downAt, downAt > upAt ? undefined : upAt) : undefined;
  const strip = (section: string) => section.replace(/^--\s*(Up|Down) Migration\s*$/im, '').trim();
  return { up: strip(up), down: down === undefined ? undefined : strip(down) };
}

function isWithin(root: string, candidate: string): boolean {
  const relative = path.relative(root, candidate);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/**
 * The migrations directory a payload names, confined to MIGRATIONS_ROOT: relative to it or absolute,
 * no `..`, and inside it once symlinks are followed. A path outside gets one answer whether or not it
 * exists, so a payload cannot probe the worker's file system either.
 */
export async function migrationsDir(root: string, dir: string): Promise<string> {
  const outside = () =>
    new ValidationError(`dir: "${dir}" is not inside MIGRATIONS_ROOT on the worker`, [
      { path: 'dir', message: 'must be inside MIGRATIONS_ROOT' },
    ]);
  if (dir.includes('\0') || dir.split(/[\\/]/).includes('..')) throw outside();
  const realRoot = await realpath(root).catch(() => {
    // A configuration to mend, said with the mending (the path itself stays the worker's).
    throw new ValidationError(
      `MIGRATIONS_ROOT (${path.basename(root)}) does not exist on the worker: create it, or set MIGRATIONS_ROOT to the directory that holds the migration folders`,
      [{ path: 'dir', message: 'MIGRATIONS_ROOT does not exist on the worker' }],
    );
  });
  const candidate = path.resolve(root, dir);
  if (!isWithin(root, candidate) && !isWithin(realRoot, candidate)) throw outside();
  const real = await realpath(candidate).catch(() => undefined);
  if (real !== undefined && !isWithin(realRoot, real)) throw outside();
  if (real === undefined)
    throw new ValidationError(`dir: no migrations directory "${dir}" in MIGRATIONS_ROOT`, [
      { path: 'dir', message: 'no such directory' },
    ]);
  return real;
}

/** Reads the migrations of a directory that migrationsDir returned. */
export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    throw new PermanentError(`no migrations directory ${dir}`);
  }
  const files = names
    .filter((name) => /^\d+_.+\.sql$/.test(name))
    .sort((a, b) => Number(a.split('_')[0]) - Number(b.split('_')[0]) || a.localeCompare(b));
  const migrations: MigrationFile[] = [];
  for (const file of files) {
    const text = await readFile(path.join(dir, file), 'utf8');
    migrations.push({
      name: file.replace(/\.sql$/, ''),
      file,
      sha256: createHash('sha256').update(text).digest('hex'),
      ...sections(text),
    });
  }
  return migrations;
}

export interface AppliedMigration {
  name: string;
  runOn: string;
  sha256: string | null;
}

/** What the database says was applied (none if the tables do not exist yet: nothing is created here). */
export async function readApplied(client: pg.ClientBase): Promise<AppliedMigration[]> {
  const { rows: exists } = await client.query<{ migrations: string | null; checksums: string | null }>(
    `SELECT to_regclass('public.${MIGRATIONS_TABLE}')::text AS migrations, to_regclass('public.${CHECKSUMS_TABLE}')::text AS checksums`,
  );
  if (!exists[0]?.migrations) return [];
  const checksums = exists[0].checksums
    ? `LEFT JOIN public.${CHECKSUMS_TABLE} c ON c.name = m.name`
    : 'LEFT JOIN (SELECT NULL::text AS name, NULL::text AS sha256) c ON false';
  const { rows } = await client.query<{ name: string; run_on: Date; sha256: string | null }>(
    `SELECT m.name, m.run_on, c.sha256 FROM public.${MIGRATIONS_TABLE} m ${checksums} ORDER BY m.run_on, m.id`,
  );
  return rows.map((row) => ({ name: row.name, runOn: row.run_on.toISOString(), sha256: row.sha256 }));
}

/** Applied migrations whose file changed since (as Flyway's validate): their names. */
export function changedSinceApplied(files: MigrationFile[], applied: AppliedMigration[]): string[] {
  const byName = new Map(files.map((file) => [file.name, file]));
  return applied
    .filter(
      (migration) =>
        migration.sha256 && byName.get(migration.name) && byName.get(migration.name)!.sha256 !== migration.sha256,
    )
    .map((migration) => byName.get(migration.name)!.file);
}

export async function recordChecksums(client: pg.ClientBase, files: MigrationFile[], names: string[]): Promise<void> {
  await client.query(
    `CREATE TABLE IF NOT EXISTS public.${CHECKSUMS_TABLE} (name text PRIMARY KEY, sha256 text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())`,
  );
  const byName = new Map(files.map((file) => [file.name, file]));
  for (const name of names) {
    const file = byName.get(name);
    if (!file) continue;
    await client.query(
      `INSERT INTO public.${CHECKSUMS_TABLE} (name, sha256) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, recorded_at = now()`,
      [name, file.sha256],
    );
  }
}

export async function forgetChecksums(client: pg.ClientBase, names: string[]): Promise<void> {
  if (names.length === 0) return;
  const { rows } = await client.query<{ t: string | null }>(
    `SELECT to_regclass('public.${CHECKSUMS_TABLE}')::text AS t`,
  );
  if (rows[0]?.t) await client.query(`DELETE FROM public.${CHECKSUMS_TABLE} WHERE name = ANY($1)`, [names]);
}
