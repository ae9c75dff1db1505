import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { WorkArea } from '../src/backups/work-area.js';
import { loadConfig } from '../src/config.js';
import { PitrArchive } from '../src/pitr/wal-archive.js';
import type { RecoveryContext } from '../src/ownership.js';
import { ownFileStore } from './helpers/manifests.js';

const FILE_STORE = pathToFileURL(path.resolve(import.meta.dirname, '../dist/src/backups/file-store.js')).href;

describe('a base backup on its way into a file store', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dbops-pitr-store-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('lies in its job’s work area, so that recovery clears what a killed worker left; nothing hides among the base backups', async () => {
    const storeDir = path.join(root, 'store');
    const local = path.join(root, 'local');
    mkdirSync(storeDir);
    // A data directory big enough that copying it takes a while: 128 files of 4 MiB.
    for (let index = 0; index < 128; index += 1) {
      mkdirSync(path.join(local, 'base', String(index % 4)), { recursive: true });
      writeFileSync(path.join(local, 'base', String(index % 4), `${index}`), Buffer.alloc(4 << 20, index));
    }
    const job = { prefix: 'dbops-pitr-store', queue: 'backup', id: 'physicalbackup-1' };
    const key = '7000000000000000001/base/base-20261207t000000z-000000000000';
    // Another process copies it (mayTake false: the copy a second store gets) and is killed on the way.
    const child = execa(
      'node',
      [
        '--input-type=module',
        '-e',
        `import { FileStore } from ${JSON.stringify(FILE_STORE)};
         const store = new FileStore(${JSON.stringify(storeDir)}, async () => { throw new Error('no seal here'); });
         await store.putTree(${JSON.stringify(job)}, ${JSON.stringify(key)}, ${JSON.stringify(local)}, false);
         console.log('stored');`,
      ],
      { reject: false },
    );
    const work = new WorkArea(storeDir);
    // As soon as its work directory appears (polled closely: the copy takes a fraction of a second).
    const deadline = Date.now() + 20_000;
    while ((await work.partialWork(job.prefix)).jobs.length === 0) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('the copy never started');
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    child.kill('SIGKILL');
    const ended = await child;
    expect(ended.stdout).not.toContain('stored'); // it was killed before the tree arrived
    const bases = path.join(storeDir, 'pitr', '7000000000000000001', 'base');
    // No hidden half-copy beside the base backups (the kill may come before their directory is made).
    expect(existsSync(bases) ? readdirSync(bases) : []).toEqual([]);
    expect((await work.partialWork(job.prefix)).jobs).toEqual([job]);

    // The job is gone (no live worker has it): recovery removes its work, and nothing else.
    const store = ownFileStore(storeDir);
    const recovery = {
      logger: pino({ level: 'silent' }),
      prefix: job.prefix,
      isJobActive: async () => false,
    } as unknown as RecoveryContext;
    await store.recover(recovery);
    expect(await work.partialWork(job.prefix)).toEqual({ jobs: [], unknown: [] });

    // Put in full, the tree is where it belongs and nothing is left on the way.
    await store.putTree!(job, key, local, false);
    expect(await store.treePath!(key)).toBe(path.join(bases, 'base-20261207t000000z-000000000000'));
    expect(readdirSync(path.join(bases, 'base-20261207t000000z-000000000000', 'base')).sort()).toEqual([
      '0',
      '1',
      '2',
      '3',
    ]);
    expect(await work.partialWork(job.prefix)).toEqual({ jobs: [], unknown: [] });
  });
  it("an archiver's half-written WAL files are swept once they are a minute old; nothing else is", async () => {
    const storeDir = path.join(root, 'sweep');
    const server = '7000000000000000002';
    const wal = path.join(storeDir, 'pitr', server, 'wal');
    mkdirSync(wal, { recursive: true });
    const old = new Date(Date.now() - 5 * 60_000);
    const files: Record<string, Date | undefined> = {
      '.000000010000000000000003.gz.0123abcd': old, // a segment, half written by a killed archiver
      '.000000010000000000000004.00000000048F2A10.partial.json.89abcdef': old, // a partial's sidecar
      '.000000010000000000000005.gz.fedcba98': undefined, // being written now
      '.notes.txt.0123abcd': old, // not a name dbops gives a WAL file
      '.000000010000000000000006.gz.tmp': old, // not putObject's temporary
      '000000010000000000000003.gz': old, // a stored segment
    };
    for (const [name, time] of Object.entries(files)) {
      writeFileSync(path.join(wal, name), 'x');
      if (time) utimesSync(path.join(wal, name), time, time);
    }
    writeFileSync(path.join(storeDir, 'pitr', server, '.status.json.00ff00ff'), '{}');
    utimesSync(path.join(storeDir, 'pitr', server, '.status.json.00ff00ff'), old, old);
    const archive = await PitrArchive.of(loadConfig({ BACKUP_DIR: storeDir }));
    expect(await archive.sweepLeftovers(server)).toBe(3);
    expect(readdirSync(wal).sort()).toEqual([
      '.000000010000000000000005.gz.fedcba98',
      '.000000010000000000000006.gz.tmp',
      '.notes.txt.0123abcd',
      '000000010000000000000003.gz',
    ]);
    expect(readdirSync(path.join(storeDir, 'pitr', server)).sort()).toEqual(['wal']);
  });
});
