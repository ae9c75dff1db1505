import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rig } from './helpers/rig.js';
import { redisUnavailableReason, startRedis, type TestRedis } from './helpers/redis-servers.js';
import { waitFor } from './helpers/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const unavailable = redisUnavailableReason();

describe.skipIf(unavailable !== undefined)(`the server while Redis is away${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let rig: Rig;
  let redis: TestRedis | undefined;
  const redisPort = 46_000 + Math.floor(Math.random() * 2_000);
  const httpPort = 48_000 + Math.floor(Math.random() * 2_000);

  beforeAll(async () => {
    rig = await Rig.create({ REDIS_URL: `redis://:redis-secret-1@127.0.0.1:${redisPort}` });
  });
  afterAll(async () => {
    await redis?.stop();
    await rig?.cleanup();
  });

  it('listens anyway, says within 5 s that it cannot reach Redis (no password), answers /healthz 503 until Redis is back', async () => {
    const started = Date.now();
    const server = execa('node', [path.join(ROOT, 'dist/dashboards/server.js')], {
      env: { PATH: process.env.PATH!, ...rig.env, PORT: String(httpPort), HOST: '127.0.0.1' },
      extendEnv: false,
      reject: false,
      all: true,
      buffer: false,
    });
    let output = '';
    server.all!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      await waitFor('the line about Redis', () => output.includes(`cannot reach Redis at redis://:***@127.0.0.1:${redisPort}`), 10_000);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(output).not.toContain('redis-secret-1');
      await waitFor('the server to listen', () => output.includes('"msg":"server listening"'), 10_000);
      expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(503);

      redis = await startRedis(redisPort, { password: 'redis-secret-1' });
      await waitFor('/healthz to answer 200', async () => (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status === 200, 30_000);
      await waitFor('the upkeep to start', () => output.includes('Redis answers again'), 10_000);
    } finally {
      server.kill('SIGTERM');
      await server;
    }
  });
});
