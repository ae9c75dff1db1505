import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeFifo, pipeTools, type PipeEnd } from '../src/postgres/pipe.js';
import { createDatabase, dropDatabase, sql } from './helpers/pg.js';
import { pgUrl } from './helpers/services.js';

const DB = `t_pipe_${process.pid}`;
const psql = ['--no-psqlrc', '--quiet', '--no-password', '--set=ON_ERROR_STOP=1'];

/** psql writing a query's rows into the FIFO, and psql loading them into a table from it. */
function copyThrough(fifo: string, query: string, table: string): [PipeEnd, PipeEnd] {
  return [
    {
      tool: 'psql',
      args: [...psql, `--output=${fifo}`, `--command=COPY (${query}) TO STDOUT`],
      options: { url: pgUrl(DB) },
    },
    { tool: 'psql', args: [...psql, `--command=\\copy ${table} FROM '${fifo}'`], options: { url: pgUrl(DB) } },
  ];
}

describe('two PostgreSQL tools joined by a FIFO', () => {
  let dir: string;
  let fifo: string;
  beforeAll(async () => {
    await createDatabase(DB);
    await sql(DB, 'CREATE TABLE target (a int, b int)');
    dir = await mkdtemp(path.join(os.tmpdir(), 'dbops-pipe-'));
    fifo = path.join(dir, 'fifo');
    expect(await makeFifo(fifo)).toBe(true);
  });
  afterAll(async () => {
    await dropDatabase(DB);
    await rm(dir, { recursive: true, force: true });
  });

  it('moves every row from one to the other', async () => {
    await pipeTools(...copyThrough(fifo, 'SELECT g, g * 2 FROM generate_series(1, 200000) g', 'target'));
    expect(await sql(DB, 'SELECT count(*)::int AS n, sum(b)::bigint::text AS total FROM target')).toEqual([
      { n: 200_000, total: '40000200000' },
    ]);
    await sql(DB, 'TRUNCATE target');
  });

  it("fails with the writer's error when the writer fails half-way, though the reader saw a clean end of its input", async () => {
    // Rows stream out before the division by zero: the reader gets them, then an end of file.
    const failing = 'SELECT g, 1 / (g - 150000) FROM generate_series(1, 200000) g';
    await expect(pipeTools(...copyThrough(fifo, failing, 'target'))).rejects.toThrow(
      /psql failed \(exit \d\): .*division by zero/,
    );
  });

  it("fails with pg_dump's error, not pg_restore's complaint about its input, when pg_dump fails", async () => {
    const dump: PipeEnd = {
      tool: 'pg_dump',
      args: ['--format=custom', '--snapshot=00000003-0000FFFF-1', `--file=${fifo}`],
      options: { url: pgUrl(DB) },
    };
    const restore: PipeEnd = {
      tool: 'pg_restore',
      args: ['--format=custom', '--exit-on-error', fifo],
      options: { url: pgUrl(DB) },
    };
    await expect(pipeTools(dump, restore)).rejects.toThrow(/^pg_dump failed \(exit 1\): .*snapshot/);
  });

  it("stops a writer left waiting for a reader that never came, and fails with the reader's error", async () => {
    const [writer] = copyThrough(fifo, 'SELECT 1, 2', 'target');
    const reader: PipeEnd = {
      tool: 'psql',
      args: [...psql, `--command=\\copy target FROM '${fifo}'`],
      options: { url: pgUrl(`${DB}_missing`) },
    };
    await expect(pipeTools(writer, reader)).rejects.toThrow(
      /^psql failed \(exit 2\): .*database "t_pipe_\d+_missing" does not exist/,
    );
  });

  it("fails with the reader's error, not the writer's broken pipe, when the reader fails", async () => {
    await expect(
      pipeTools(...copyThrough(fifo, 'SELECT g, g, g FROM generate_series(1, 200000) g', 'target')),
    ).rejects.toThrow(/psql failed \(exit \d\): .*extra data after last expected column/);
  });
});
