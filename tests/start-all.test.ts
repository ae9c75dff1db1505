import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerTypes } from '../src/operations/index.js';
import { newServer, type NewServer } from './helpers/new-server.js';
import { createDatabase } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** `npm start` on the rig's configuration, once every worker and the server say they are up. */
async function startSupervisor(rig: Rig) {
  const supervisor = execa('node', [path.join(ROOT, 'dist/workers/start-all.js')], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', ...rig.env, PORT: '0' },
    extendEnv: false,
    reject: false,
    all: true,
    buffer: false,
  });
  let output = '';
  supervisor.all!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(
    'every worker and the server to be up',
    () =>
      (output.match(/"msg":"worker ready"/g) ?? []).length === workerTypes.length &&
      output.includes('"msg":"server listening"'),
    60_000,
  );
  return { supervisor, output: () => output };
}

/** `npm start`'s supervisor: every worker type and the server, and a stop that leaves nothing behind. */
describe('npm start', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    await createDatabase(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
  });
  afterAll(async () => rig?.cleanup());

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'starts one process per worker type and the server; %s stops every one of them',
    async (signal) => {
      const { supervisor } = await startSupervisor(rig);
      const children = (await execa('ps', ['-o', 'pid=', '--ppid', String(supervisor.pid)])).stdout
        .split('\n')
        .map((line) => Number(line.trim()))
        .filter(Boolean);
      expect(children).toHaveLength(workerTypes.length + 1);

      supervisor.kill(signal);
      const ended = await supervisor;
      expect(ended.exitCode).toBe(0);
      await waitFor('every child to be gone', () => children.every((pid) => !alive(pid)), 10_000);
    },
  );
});

describe('npm start with no environment', () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await Rig.create();
  });
  afterAll(async () => rig?.cleanup());

  it('says once, not once per process, that no environment is configured', async () => {
    const { supervisor, output } = await startSupervisor(rig);
    try {
      expect(output().match(/no database environment is configured/g)).toHaveLength(1);
    } finally {
      supervisor.kill('SIGTERM');
      await supervisor;
    }
  });
});

describe('npm start with PITR_ENVS', () => {
  let rig: Rig;
  let server: NewServer;
  beforeAll(async () => {
    server = await newServer();
    rig = await Rig.create({ PITR_ENVS: 'archived', PITR_OS_USER: 'postgres' });
    rig.env.DATABASE_URL_ARCHIVED = server.url('postgres');
  });
  afterAll(async () => {
    await rig?.cleanup();
    server?.stop();
  });

  it('also starts the WAL archiver, and stops it with the rest', async () => {
    const { supervisor, output } = await startSupervisor(rig);
    try {
      await waitFor('the archiver to archive', () => output().includes('"msg":"archiving WAL"'), 30_000);
      const children = (await execa('ps', ['-o', 'args=', '--ppid', String(supervisor.pid)])).stdout.split('\n');
      expect(children).toHaveLength(workerTypes.length + 2);
      expect(children.filter((args) => args.endsWith('worker.js wal'))).toHaveLength(1);
    } finally {
      supervisor.kill('SIGTERM');
      expect((await supervisor).exitCode).toBe(0);
    }
  });
});
