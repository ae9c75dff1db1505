import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTables, type TableLoadOptions } from '../src/backups/table-load.js';
import { createDatabase, dropDatabase, sql } from './helpers/pg.js';
import { pgUrl } from './helpers/services.js';

/*
 * Tables loaded from an archive into a live database in one psql transaction: every row, or, when the
 * archive's script fails half-way or the caller refuses the counts, nothing at all.
 */

describe('loadTables', () => {
  const tag = randomBytes(4).toString('hex');
  const [source, scratch, live] = ['source', 'scratch', 'live'].map((role) => `dbops_load_${role}_${tag}`);
  let dir: string;
  let archive: string;
  let dataList: string;
  const options = (file: string, beforeCommit: TableLoadOptions['beforeCommit'] = () => undefined) => ({
    liveUrl: pgUrl(live!),
    scratchUrl: pgUrl(scratch!),
    binDir: undefined,
    signal: new AbortController().signal,
    onLine: () => undefined,
    archive: { args: [file], parallel: false },
    dataList,
    targets: new Map([['public.events', 'public.events_back']]),
    definitions: ['public.events_back'],
    checks: '',
    beforeCommit,
  });
  const liveTables = async () =>
    (
      await sql<{ name: string }>(live!, "SELECT relname AS name FROM pg_class WHERE relname LIKE 'events%' ORDER BY 1")
    ).map((row) => row.name);

  beforeAll(async () => {
    for (const name of [source!, scratch!, live!]) await createDatabase(name);
    await sql(
      source!,
      `CREATE TABLE events (id int PRIMARY KEY, note text);
       INSERT INTO events SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g`,
    );
    // The scratch database as a table restore leaves it: the table's definition alone, renamed.
    await sql(scratch!, 'CREATE TABLE events_back (id int NOT NULL, note text)');
    dir = await mkdtemp(path.join(os.tmpdir(), 'dbops-load-'));
    archive = path.join(dir, 'source.dump');
    await execa('pg_dump', ['--format=custom', '--compress=0', `--file=${archive}`, pgUrl(source!)]);
    const toc = (await execa('pg_restore', ['--list', archive])).stdout.split('\n');
    dataList = path.join(dir, 'rows.list');
    writeFileSync(dataList, `${toc.filter((line) => / TABLE DATA public events /.test(line)).join('\n')}\n`);
  });
  afterAll(async () => {
    for (const name of [source!, scratch!, live!]) await dropDatabase(name);
    await rm(dir, { recursive: true, force: true });
  });

  it('an archive cut off inside the rows: psql is stopped before its commit, and nothing was made', async () => {
    const cut = path.join(dir, 'cut.dump');
    const bytes = readFileSync(archive);
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    await expect(loadTables(options(cut))).rejects.toThrow();
    expect(await liveTables()).toEqual([]);
  });

  it('counts the caller refuses: nothing was made', async () => {
    let seen: Map<string, number> | undefined;
    const refused = loadTables(
      options(archive, (rows) => {
        seen = rows;
        throw new Error('not these');
      }),
    );
    await expect(refused).rejects.toThrow('not these');
    expect(seen).toEqual(new Map([['public.events_back', 20000]]));
    expect(await liveTables()).toEqual([]);
  });

  it('every row, in the new table, committed', async () => {
    const rows = await loadTables(options(archive));
    expect(rows).toEqual(new Map([['public.events_back', 20000]]));
    const digest = `SELECT count(*)::int AS n, md5(string_agg(id || ':' || note, ',' ORDER BY id)) AS hash FROM `;
    expect(await sql(live!, `${digest} events_back`)).toEqual(await sql(source!, `${digest} events`));
    expect(await liveTables()).toEqual(['events_back']);
  });
});
