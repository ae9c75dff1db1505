import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, loadPagila } from './helpers/pg.js';
import { redisUnavailableReason, startCluster, type TestRedis } from './helpers/redis-servers.js';
import { Rig } from './helpers/rig.js';

const unavailable = redisUnavailableReason();

// Skipped only where redis-server cannot run at all (the stated reason is printed in the test name).
describe.skipIf(unavailable !== undefined)(
  `a Redis Cluster of three masters${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    let cluster: TestRedis;
    let rig: Rig;

    beforeAll(async () => {
      cluster = await startCluster(7311 + Math.floor(Math.random() * 200) * 3);
      rig = await Rig.create({ REDIS_URL: cluster.url, REDIS_CLUSTER: 'true' });
      await loadPagila(rig.db('source'));
      rig.setEnv('source', rig.db('source'));
      rig.setEnv('target', rig.db('target'));
      await rig.startWorker('backup');
      await rig.startWorker('restore');
    });
    afterAll(async () => {
      await rig?.cleanup();
      await cluster?.stop();
    });

    it('runs a backup and a restore, with every queue key in one hash slot', async () => {
      const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
      expect(backup.exitCode).toBe(0);
      const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
      const restore = await rig.cli(['restore', '--env', 'target', '--backup', backupId, '--wait', '--json']);
      expect(restore.exitCode).toBe(0);
      expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));

      // The prefix became the hash tag {test-…}: all keys live on the node that owns its slot.
      const port = new URL(cluster.url).port;
      const slot = (await execa('redis-cli', ['-p', port, 'cluster', 'keyslot', `{${rig.prefix}}`])).stdout.trim();
      const nodes = (await execa('redis-cli', ['-p', port, 'cluster', 'nodes'])).stdout.split('\n').filter(Boolean);
      let keysElsewhere = 0;
      let keysFound = 0;
      for (const node of nodes) {
        const address = node.split(' ')[1]!.split('@')[0]!;
        const nodePort = address.split(':')[1]!;
        const keys = (await execa('redis-cli', ['-p', nodePort, '--scan', '--pattern', `*${rig.prefix}*`])).stdout
          .split('\n')
          .filter(Boolean);
        const inSlot = await Promise.all(
          keys.map(
            async (key) =>
              (await execa('redis-cli', ['-p', nodePort, 'cluster', 'keyslot', key])).stdout.trim() === slot,
          ),
        );
        keysElsewhere += inSlot.filter((same) => !same).length;
        keysFound += keys.length;
      }
      expect(keysFound).toBeGreaterThan(5);
      expect(keysElsewhere).toBe(0);
    });
  },
);
