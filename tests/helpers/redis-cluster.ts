import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';

export interface TestCluster {
  url: string;
  stop(): Promise<void>;
}

/** Whether this machine can run redis-server in cluster mode (the binary exists and accepts it). */
export function clusterUnavailableReason(): string | undefined {
  const probe = spawnSync('redis-server', ['--version']);
  if (probe.error || probe.status !== 0) return 'redis-server is not installed';
  return undefined;
}

/** Three masters on loopback ports, slots spread by redis-cli --cluster create. */
export async function startCluster(firstPort: number): Promise<TestCluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-cluster-'));
  const ports = [firstPort, firstPort + 1, firstPort + 2];
  const servers: ResultPromise[] = ports.map((port) =>
    execa('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--dir', dir, '--save', '', '--appendonly', 'no'], {
      reject: false,
      stdio: 'ignore',
    }),
  );
  const stop = async () => {
    for (const server of servers) server.kill('SIGKILL');
    await Promise.all(servers);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      for (let tries = 0; ; tries += 1) {
        const ping = await execa('redis-cli', ['-p', String(port), 'ping'], { reject: false });
        if (ping.stdout === 'PONG') break;
        if (tries > 50) throw new Error(`redis-server on ${port} did not start in cluster mode`);
        await sleep(100);
      }
    }
    await execa('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (let tries = 0; ; tries += 1) {
      const info = await execa('redis-cli', ['-p', String(firstPort), 'cluster', 'info'], { reject: false });
      if (info.stdout.includes('cluster_state:ok')) break;
      if (tries > 100) throw new Error('the cluster did not reach cluster_state:ok');
      await sleep(100);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `redis://127.0.0.1:${firstPort}`, stop };
}
