import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rig } from './helpers/rig.js';
import { redisUnavailableReason, startRedis, type TestRedis } from './helpers/redis-servers.js';
import { waitFor } from './helpers/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const unavailable = redisUnavailableReason();

/** `npm run dashboard` on the rig's configuration, on a port of its own; its output as it comes. */
function startServerProcess(rig: Rig, port: number) {
  const server = execa('node', [path.join(ROOT, 'dist/dashboards/server.js')], {
    env: { PATH: process.env.PATH!, ...rig.env, PORT: String(port), HOST: '127.0.0.1' },
    extendEnv: false,
    reject: false,
    all: true,
    buffer: false,
  });
  let output = '';
  server.all!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { server, output: () => output };
}

describe.skipIf(unavailable !== undefined)(
  `the server while Redis is away${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    let rig: Rig;
    let redis: TestRedis | undefined;
    // Below Linux's ephemeral range (32768–60999), where a client connection may hold the port.
    const redisPort = 26_000 + Math.floor(Math.random() * 2_000);
    const httpPort = 28_000 + Math.floor(Math.random() * 2_000);

    beforeAll(async () => {
      rig = await Rig.create({ REDIS_URL: `redis://:redis-secret-1@127.0.0.1:${redisPort}` });
    });
    afterAll(async () => {
      await redis?.stop();
      await rig?.cleanup();
    });

    it('listens anyway, says within 5 s that it cannot reach Redis (no password), answers /healthz 503 until Redis is back', async () => {
      const started = Date.now();
      const { server, output } = startServerProcess(rig, httpPort);
      try {
        await waitFor(
          'the line about Redis',
          () => output().includes(`cannot reach Redis at redis://:***@127.0.0.1:${redisPort}`),
          10_000,
        );
        expect(Date.now() - started).toBeLessThan(5_000);
        expect(output()).not.toContain('redis-secret-1');
        await waitFor('the server to listen', () => output().includes('"msg":"server listening"'), 10_000);
        expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(503);

        redis = await startRedis(redisPort, { password: 'redis-secret-1' });
        await waitFor(
          '/healthz to answer 200',
          async () => (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status === 200,
          30_000,
        );
        await waitFor('the upkeep to start', () => output().includes('Redis answers again'), 10_000);
      } finally {
        server.kill('SIGTERM');
        await server;
      }
    });
  },
);

describe('the server on a terminal', () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await Rig.create();
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('logs one readable line per event (JSON when its output is not a terminal)', async () => {
    // Port 0: any free port (a fixed one may be a client's ephemeral port under a busy suite).
    const env = { PATH: process.env.PATH!, ...rig.env, PORT: '0', HOST: '127.0.0.1' };
    // script(1) gives the server a pseudo-terminal, as a person's shell would.
    const server = execa(
      'script',
      [
        '--quiet',
        '--flush',
        '--return',
        '--command',
        `node ${path.join(ROOT, 'dist/dashboards/server.js')}`,
        '/dev/null',
      ],
      {
        env,
        extendEnv: false,
        reject: false,
        buffer: false,
      },
    );
    let output = '';
    server.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const plain = () => output.replace(/\x1b\[[0-9;]*m/g, ''); // eslint-disable-line no-control-regex
    try {
      await waitFor('the server to listen', () => plain().includes('server listening'), 30_000).catch(
        (error: Error) => {
          throw new Error(`${error.message}; it wrote: ${plain()}`);
        },
      );
      const line = plain()
        .split(/\r?\n/)
        .find((candidate) => candidate.includes('server listening'))!;
      expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): dashboard: server listening /);
      expect(plain()).not.toContain('"level":');
    } finally {
      server.kill('SIGTERM');
      await server;
    }

    const piped = execa('node', [path.join(ROOT, 'dist/dashboards/server.js')], {
      env,
      extendEnv: false,
      reject: false,
      buffer: false,
    });
    let json = '';
    let errors = '';
    piped.stdout!.on('data', (chunk: Buffer) => (json += chunk.toString()));
    piped.stderr!.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    try {
      await waitFor('the server to listen', () => json.includes('"msg":"server listening"'), 30_000).catch(
        (error: Error) => {
          throw new Error(`${error.message}; it wrote: ${json} ${errors}`);
        },
      );
      expect(JSON.parse(json.split('\n').find((candidate) => candidate.includes('server listening'))!)).toMatchObject({
        level: 30,
        process: 'dashboard',
      });
    } finally {
      piped.kill('SIGTERM');
      await piped;
    }
  });
});

describe('the HTTP API while Redis is a closed port', () => {
  let rig: Rig;
  const httpPort = 30_000 + Math.floor(Math.random() * 2_000);
  const redisPort = 26_000 + Math.floor(Math.random() * 2_000);
  const TOKEN = 'outage-token-0123456789abcdef';

  beforeAll(async () => {
    rig = await Rig.create({ REDIS_URL: `redis://127.0.0.1:${redisPort}`, API_TOKEN: TOKEN });
    rig.setEnv('app', 'postgres');
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it('answers 503 with the reason in a line, well within a client timeout, and SIGTERM ends the server at once', async () => {
    const { server, output } = startServerProcess(rig, httpPort);
    try {
      await waitFor('the server to listen', () => output().includes('"msg":"server listening"'), 10_000);
      const api = (route: string, init: RequestInit = {}) =>
        fetch(`http://127.0.0.1:${httpPort}/api/v1${route}`, {
          ...init,
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          signal: AbortSignal.timeout(10_000),
        });
      for (const [route, init] of [
        ['/jobs/backup', { method: 'POST', body: '{"env":"app"}' }],
        ['/jobs', {}],
        ['/jobs/backup/backup-x', {}],
        ['/jobs/backup/backup-x/cancel', { method: 'POST' }],
      ] as const) {
        const asked = Date.now();
        const answer = await api(route, init);
        expect(Date.now() - asked, route).toBeLessThan(5_000);
        expect(answer.status, route).toBe(503);
        expect(await answer.json(), route).toEqual({
          error: `dbops is up but its Redis does not answer: connect ECONNREFUSED 127.0.0.1:${redisPort}`,
        });
      }
      // What needs no Redis still answers: the contract, and what a worker would say to a payload.
      expect((await api('/schemas/backup')).status).toBe(200);
      expect((await api('/validate/backup', { method: 'POST', body: '{"env":"app"}' })).status).toBe(200);
    } finally {
      const stopping = Date.now();
      server.kill('SIGTERM');
      const result = await server;
      expect(Date.now() - stopping).toBeLessThan(5_000);
      expect(result.exitCode).toBe(0);
    }
  });
});
