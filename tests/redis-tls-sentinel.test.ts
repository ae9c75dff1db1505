import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from './helpers/pg.js';
import { cliArgs, redisUnavailableReason, startRedis, type TestRedis } from './helpers/redis-servers.js';
import { Rig } from './helpers/rig.js';

const unavailable = redisUnavailableReason('tls');
const firstPort = 8311 + Math.floor(Math.random() * 300) * 2;

const CASES = [
  { name: 'over TLS (rediss://)', tls: true, sentinel: false, passwords: false },
  { name: 'through Redis Sentinel', tls: false, sentinel: true, passwords: false },
  { name: 'through Redis Sentinel, everything over TLS', tls: true, sentinel: true, passwords: false },
  {
    name: 'through a Sentinel with a password of its own, to a master with another',
    tls: false,
    sentinel: true,
    passwords: true,
  },
];
const MASTER_PASSWORD = 'master-pass-7f3a';
const SENTINEL_PASSWORD = 'sentinel-pass-91c2';

// Skipped only where redis-server cannot serve TLS (the stated reason is printed in the test name).
describe.skipIf(unavailable !== undefined)(
  `Redis over TLS and through Sentinel${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    let rig: Rig;
    const servers: TestRedis[] = [];

    beforeAll(async () => {
      rig = await Rig.create();
      await sql('postgres', `CREATE DATABASE "${rig.db('source')}"`);
      await sql(rig.db('source'), 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)');
      rig.setEnv('source', rig.db('source'));
    });
    afterAll(async () => {
      await rig?.cleanup();
      for (const server of servers) await server.stop();
    });

    it.each(CASES.map((testCase, index) => ({ ...testCase, port: firstPort + index * 2 })))(
      'a worker and the CLI run a backup $name',
      async ({ tls, sentinel, passwords, port }) => {
        const password = passwords ? MASTER_PASSWORD : undefined;
        const redis = await startRedis(port, {
          tls,
          sentinelPort: sentinel ? port + 1 : undefined,
          password,
          sentinelPassword: passwords ? SENTINEL_PASSWORD : undefined,
        });
        servers.push(redis);
        const env: Record<string, string> = sentinel
          ? // REDIS_URL names no server here (nothing listens on port 1): only its scheme and credentials count.
            {
              REDIS_URL: `${tls ? 'rediss' : 'redis'}://${password ? `:${password}@` : ''}127.0.0.1:1`,
              REDIS_SENTINELS: `127.0.0.1:${port + 1}`,
              REDIS_SENTINEL_NAME: 'mymaster',
            }
          : { REDIS_URL: redis.url };
        if (passwords) env.REDIS_SENTINEL_PASSWORD = SENTINEL_PASSWORD;
        if (redis.ca) env.NODE_EXTRA_CA_CERTS = redis.ca; // the test CA, trusted the way an operator would
        const worker = await rig.startWorker('backup', env);

        const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json'], env);
        expect(run.exitCode, run.stderr).toBe(0);
        const result = JSON.parse(run.stdout) as { backupId: string; path: string };
        expect(existsSync(result.path)).toBe(true);

        // The queue lives on this server, and nowhere else.
        const keys = (
          await execa('redis-cli', [...cliArgs(port, redis.ca, password), '--scan', '--pattern', `${rig.prefix}:*`])
        ).stdout
          .split('\n')
          .filter(Boolean);
        expect(keys).toContain(`${rig.prefix}:backup:${run.stderr.match(/job (\S+)/)?.[1]}`);
        expect(await rig.redisKeys()).toEqual([]);

        worker.process.kill('SIGTERM');
        expect(await worker.exited).toBe(0);
        for (const secret of [MASTER_PASSWORD, SENTINEL_PASSWORD]) {
          expect(worker.output()).not.toContain(secret);
          expect(run.stdout + run.stderr).not.toContain(secret);
        }
      },
    );
  },
);
