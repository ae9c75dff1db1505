import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolDirFor, toolDirForArchive } from '../src/postgres/binaries.js';
import { sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

/** A stand-in pg_dump that only tells its version. */
function fakeTools(root: string, version: string): string {
  const dir = path.join(root, version.split('.')[0]!, 'bin');
  mkdirSync(dir, { recursive: true });
  for (const tool of ['pg_dump', 'pg_restore']) {
    writeFileSync(path.join(dir, tool), `#!/bin/sh\necho "${tool} (PostgreSQL) ${version}"\n`);
    chmodSync(path.join(dir, tool), 0o755);
  }
  return dir;
}

describe('choosing pg_dump and pg_restore for the server', () => {
  let root: string;
  let rig: Rig;

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'dbops-pgbin-'));
    rig = await Rig.create();
  });
  afterAll(async () => {
    rmSync(root, { recursive: true, force: true });
    await rig?.cleanup();
  });

  it('takes the newest versioned directory at least as new as the server', async () => {
    const versions = path.join(root, 'lib');
    fakeTools(versions, '14.9');
    const sixteen = fakeTools(versions, '16.2');
    expect(await toolDirFor(15, undefined, versions)).toBe(sixteen);
    expect(await toolDirFor(16, undefined, versions)).toBe(sixteen);
    // For reading an archive, the pg_dump that made it decides.
    expect(await toolDirForArchive('pg_dump (PostgreSQL) 16.2 (Debian 16.2-1)', undefined, versions)).toBe(sixteen);
    await expect(toolDirForArchive('pg_dump (PostgreSQL) 99.0', undefined, versions)).rejects.toThrow(
      /no pg_dump\/pg_restore for PostgreSQL 99/,
    );
  });

  it('fails clearly when nothing is new enough, instead of dumping with an older pg_dump', async () => {
    const versions = path.join(root, 'old');
    fakeTools(versions, '12.1');
    await expect(toolDirFor(99, undefined, versions)).rejects.toThrow(
      /no pg_dump\/pg_restore for PostgreSQL 99: found 12 \(.*12\/bin\), \d+ \(PATH\); install postgresql-client-99 or point PG_BIN_DIR/,
    );
    const configured = fakeTools(path.join(root, 'configured'), '9.6.24');
    await expect(toolDirFor(15, configured)).rejects.toThrow(/found 9.6 \(/);
  });

  it('a backup job with a too-old PG_BIN_DIR fails at once with that message and writes nothing', async () => {
    await sql('postgres', `CREATE DATABASE "${rig.db('app')}"`);
    rig.setEnv('app', rig.db('app'));
    await rig.startWorker('backup', { PG_BIN_DIR: fakeTools(path.join(root, 'worker'), '11.22') });
    const run = await rig.cli(['backup', '--env', 'app', '--wait']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/no pg_dump\/pg_restore for PostgreSQL 1[0-9]: found 11 \(/);
    expect(readdirSync(rig.backupDir).filter((name) => !name.startsWith('.'))).toEqual([]);
    const shown = JSON.parse((await rig.cli(['jobs', 'list', '--json'])).stdout) as { attemptsMade: number }[];
    expect(shown[0]!.attemptsMade).toBe(1); // permanent: not retried
  });
});
