import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { waitFor } from './wait.js';

/** Redis servers a test starts for itself on loopback ports, in their own temporary directory. */
export interface TestRedis {
  url: string;
  dir: string;
  stop(): Promise<void>;
}

/** Why this machine cannot run the redis-server a test needs, or undefined when it can. */
export function redisUnavailableReason(feature?: 'tls'): string | undefined {
  const probe = spawnSync('redis-server', ['--version']);
  if (probe.error || probe.status !== 0) return 'redis-server is not installed';
  if (feature === 'tls') {
    if (spawnSync('openssl', ['version']).status !== 0) return 'openssl is not installed';
    // Given no certificate, a TLS build exits saying it could not configure TLS; a build without TLS
    // exits refusing the directive itself.
    const tls = spawnSync('redis-server', ['--port', '0', '--tls-port', '1', '--save', ''], { timeout: 5_000 });
    if (!/Failed to configure TLS/.test(String(tls.stdout) + String(tls.stderr)))
      return 'redis-server was built without TLS';
  }
  return undefined;
}

/** A CA and a certificate for 127.0.0.1 signed by it: `ca.pem`, `server.pem`, `server.key` in `dir`. */
export async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const file = (name: string) => path.join(dir, name);
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=dbops test CA',
  ]);
  await execa('openssl', [
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    '/CN=127.0.0.1',
  ]);
  writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  await execa('openssl', [
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.pem'),
    '-days',
    '2',
    '-extfile',
    file('san.ext'),
  ]);
  return { ca: file('ca.pem'), cert: file('server.pem'), key: file('server.key') };
}

/** What redis-cli needs to reach a server started by `startRedis` with `tls` (and a password). */
export function cliArgs(port: number, tlsCa?: string, password?: string): string[] {
  return [
    ...(tlsCa ? ['--tls', '--cacert', tlsCa] : []),
    ...(password ? ['--no-auth-warning', '-a', password] : []),
    '-p',
    String(port),
  ];
}

async function waitForPing(port: number, tlsCa?: string, password?: string): Promise<void> {
  for (let tries = 0; ; tries += 1) {
    const ping = await execa('redis-cli', [...cliArgs(port, tlsCa, password), 'ping'], { reject: false });
    if (ping.stdout === 'PONG') return;
    if (tries > 50) throw new Error(`redis-server on ${port} did not start: ${ping.stderr}`);
    await sleep(100);
  }
}

/** Servers started together, stopped together (SIGKILL; nothing of theirs is kept). */
async function serve(
  dir: string,
  starts: { args: string[]; port: number; tlsCa?: string; password?: string }[],
  then?: () => Promise<void>,
): Promise<() => Promise<void>> {
  const servers: ResultPromise[] = starts.map(({ args }) =>
    execa('redis-server', args, { reject: false, stdio: 'ignore', cwd: dir }),
  );
  const stop = async () => {
    for (const server of servers) server.kill('SIGKILL');
    await Promise.all(servers);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const { port, tlsCa, password } of starts) await waitForPing(port, tlsCa, password);
    await then?.();
  } catch (error) {
    await stop();
    throw error;
  }
  return stop;
}

const PLAIN = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];

function tlsArgs(certificates: { ca: string; cert: string; key: string }): string[] {
  return [
    '--tls-cert-file',
    certificates.cert,
    '--tls-key-file',
    certificates.key,
    '--tls-ca-cert-file',
    certificates.ca,
    '--tls-auth-clients',
    'no',
  ];
}

/** Three masters on loopback ports, slots spread by redis-cli --cluster create. */
export async function startCluster(firstPort: number): Promise<TestRedis> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-cluster-'));
  const ports = [firstPort, firstPort + 1, firstPort + 2];
  const stop = await serve(
    dir,
    ports.map((port) => ({
      port,
      args: [
        '--port',
        String(port),
        ...PLAIN,
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--dir',
        dir,
      ],
    })),
    async () => {
      await execa('redis-cli', [
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ]);
      for (let tries = 0; ; tries += 1) {
        const info = await execa('redis-cli', ['-p', String(firstPort), 'cluster', 'info'], { reject: false });
        if (info.stdout.includes('cluster_state:ok')) break;
        if (tries > 100) throw new Error('the cluster did not reach cluster_state:ok');
        await sleep(100);
      }
    },
  );
  return { url: `redis://127.0.0.1:${firstPort}`, dir, stop };
}

/**
 * One Redis on `port`, over TLS when `tls` (certificates made in its directory, `ca.pem` the CA to
 * trust), and with `sentinelPort` a Sentinel (TLS alike) that monitors it as master `mymaster`.
 * `password` is the server's requirepass, `sentinelPassword` the Sentinel's.
 */
export async function startRedis(
  port: number,
  options: { tls?: boolean; sentinelPort?: number; password?: string; sentinelPassword?: string } = {},
): Promise<TestRedis & { ca?: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-redis-'));
  const certificates = options.tls ? await makeCertificates(dir) : undefined;
  const listen = (onPort: number) =>
    certificates ? ['--port', '0', '--tls-port', String(onPort), ...tlsArgs(certificates)] : ['--port', String(onPort)];
  const requirePass = (password?: string) => (password ? ['--requirepass', password] : []);
  const starts = [
    {
      port,
      tlsCa: certificates?.ca,
      password: options.password,
      args: [...listen(port), ...PLAIN, ...requirePass(options.password), '--dir', dir],
    },
  ];
  if (options.sentinelPort !== undefined) {
    const config = path.join(dir, 'sentinel.conf');
    const authPass = options.password ? `sentinel auth-pass mymaster ${options.password}\n` : '';
    const ownPass = options.sentinelPassword ? `requirepass ${options.sentinelPassword}\n` : '';
    writeFileSync(config, `sentinel monitor mymaster 127.0.0.1 ${port} 1\n${authPass}${ownPass}`); // Sentinel rewrites its file: it must be its own
    starts.push({
      port: options.sentinelPort,
      tlsCa: certificates?.ca,
      password: options.sentinelPassword,
      args: [
        config,
        '--sentinel',
        ...listen(options.sentinelPort),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        ...(certificates ? ['--tls-replication', 'yes'] : []),
      ],
    });
  }
  const stop = await serve(dir, starts);
  return { url: `${certificates ? 'rediss' : 'redis'}://127.0.0.1:${port}`, dir, ca: certificates?.ca, stop };
}

/** A Redis of a test's own, persisting every write (AOF, fsync always), so that a restart loses nothing acknowledged. */
export class PersistentRedis {
  private server?: ResultPromise;
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-redis-'));
  constructor(
    readonly port: number,
    /** How long a start may take before it counts as failed. */
    private readonly answerWithinMs = 10_000,
  ) {}
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    this.server = execa(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
      ],
      {
        reject: false,
        stdio: 'ignore',
      },
    );
    await waitFor(
      'redis-server to answer',
      async () => (await execa('redis-cli', ['-p', String(this.port), 'ping'], { reject: false })).stdout === 'PONG',
      this.answerWithinMs,
    );
  }
  /** Stopped (its process gone) and started again, after `downMs` down. */
  async restart(downMs: number): Promise<void> {
    await execa('redis-cli', ['-p', String(this.port), 'shutdown'], { reject: false });
    await this.server;
    await sleep(downMs);
    await this.start();
  }
  async stop(): Promise<void> {
    this.server?.kill('SIGKILL');
    await this.server;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
