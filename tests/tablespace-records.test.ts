import { execFileSync } from 'node:child_process';
import { chownSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tablespacesCreated } from '../src/pitr/tablespace-records.js';
import { parseLsn } from '../src/pitr/wal-names.js';
import { newServer, postgresGid, postgresUid, type NewServer } from './helpers/new-server.js';

/*
 * Which CREATE TABLESPACE records a recovery would replay, read by pg_waldump from a live server's own
 * pg_wal: to the end, to a position and to a time, before the record and after it.
 */

const BIN = `/usr/lib/postgresql/${execFileSync('ls', ['/usr/lib/postgresql']).toString().trim().split('\n').sort().at(-1)}/bin`;

describe('CREATE TABLESPACE records a recovery would replay', () => {
  let server: NewServer;
  let client: pg.Client;
  let location: string;
  let walDir: string;
  /** Positions and times around the CREATE TABLESPACE. */
  let start: string;
  let beforeLsn: string;
  let afterLsn: string;
  let beforeTime: string;
  let afterTime: string;
  let oid: number;
  const signal = new AbortController().signal;
  const lsn = async () =>
    (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn;
  const commits = async (n: number) => {
    for (let i = 0; i < n; i += 1) await client.query('INSERT INTO beats DEFAULT VALUES');
  };

  beforeAll(async () => {
    server = await newServer();
    client = new pg.Client({ connectionString: server.url('postgres') });
    await client.connect();
    walDir = path.join(
      (await client.query<{ dir: string }>("SELECT current_setting('data_directory') AS dir")).rows[0]!.dir.replace(
        /\/$/,
        '',
      ),
      'pg_wal',
    );
    location = await mkdtemp(path.join(os.tmpdir(), 'dbops-test-space-'));
    chownSync(location, postgresUid(), postgresGid());
    await client.query('CREATE TABLE beats (at timestamptz DEFAULT clock_timestamp())');
    start = await lsn();
    await commits(5);
    await sleep(20);
    beforeTime = new Date().toISOString();
    await sleep(20);
    await commits(5);
    beforeLsn = await lsn();
    await client.query(`CREATE TABLESPACE scanned LOCATION '${location}'`);
    afterLsn = await lsn();
    oid = (await client.query<{ oid: number }>("SELECT oid::int AS oid FROM pg_tablespace WHERE spcname = 'scanned'"))
      .rows[0]!.oid;
    await sleep(20);
    afterTime = new Date().toISOString();
  }, 60_000);

  afterAll(async () => {
    await client?.end();
    server?.stop();
    if (location) await rm(location, { recursive: true, force: true });
  });

  const created = (target: Parameters<typeof tablespacesCreated>[3], from = start) =>
    tablespacesCreated(BIN, [walDir], from, target, signal);

  it('to the end of the WAL: the creation, with its directory and position', async () => {
    const [one, ...more] = await created({ latest: true });
    expect(more).toEqual([]);
    expect(one).toMatchObject({ oid, location });
    expect(parseLsn(one!.lsn)).toBeGreaterThanOrEqual(parseLsn(beforeLsn));
    expect(parseLsn(one!.lsn)).toBeLessThan(parseLsn(afterLsn));
  });

  it('to a position before it: none; at or after it: the creation', async () => {
    expect(await created({ lsn: beforeLsn })).toEqual([]);
    expect(await created({ lsn: afterLsn })).toHaveLength(1);
  });

  it('to a time before it (a transaction ended after that time, before it): none', async () => {
    expect(await created({ time: beforeTime })).toEqual([]);
  });

  it('to a time after it, with no transaction ending later: the creation', async () => {
    expect(await created({ time: afterTime })).toHaveLength(1);
  });

  it('without pg_waldump: one line that says so', async () => {
    await expect(tablespacesCreated('/nonexistent', [walDir], start, { latest: true }, signal)).rejects.toThrow(
      /^pg_waldump could not run: spawn \/nonexistent\/pg_waldump ENOENT$/,
    );
  });

  it('from a base backup that began after it: none', async () => {
    expect(await created({ latest: true }, afterLsn)).toEqual([]);
  });
});
