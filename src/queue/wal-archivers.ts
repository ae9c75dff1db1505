import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import type { ArchiverReport, ServerLock, UnreachableEnv } from '../pitr/archiver.js';
import type { RedisConnection } from './connection.js';

/*
 * The WAL archivers' state in Redis: which process archives which server (a lock with a time to live,
 * renewed while it works: a dead archiver's lock expires and a standby takes over), and each archiver's
 * latest report (lag, slot, recovery point), read by the console, the API and /metrics.
 */

const LOCK_TTL_MS = 10_000;
const REPORT_TTL_S = 60;

function keys(config: Pick<Config, 'QUEUE_PREFIX'>) {
  const base = `${config.QUEUE_PREFIX}:dbops:wal`;
  return {
    lock: (server: string) => `${base}:lock:${server}`,
    report: (server: string) => `${base}:report:${server}`,
    servers: `${base}:servers`,
    unreachable: `${base}:unreachable`,
  };
}

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export function redisServerLock(connection: RedisConnection, config: Pick<Config, 'QUEUE_PREFIX'>): ServerLock {
  const key = keys(config);
  const token = `${process.pid}:${randomBytes(8).toString('hex')}`;
  return {
    async acquire(server) {
      return (await connection.set(key.lock(server), token, 'PX', LOCK_TTL_MS, 'NX')) === 'OK';
    },
    async renew(server) {
      return Number(await connection.eval(RENEW, 1, key.lock(server), token, LOCK_TTL_MS)) === 1;
    },
    async release(server) {
      await connection.eval(RELEASE, 1, key.lock(server), token);
    },
  };
}

export async function saveArchiverReport(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
  report: ArchiverReport,
): Promise<void> {
  const key = keys(config);
  await connection.set(key.report(report.server), JSON.stringify(report), 'EX', REPORT_TTL_S);
  await connection.sadd(key.servers, report.server);
}

/** The latest report of every archiver that reported within the last minute. */
export async function archiverReports(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
): Promise<ArchiverReport[]> {
  const key = keys(config);
  const servers = await connection.smembers(key.servers);
  const reports: ArchiverReport[] = [];
  for (const server of servers.sort()) {
    const text = await connection.get(key.report(server));
    if (!text) continue;
    try {
      reports.push(JSON.parse(text) as ArchiverReport);
    } catch {
      // not ours to judge: skipped
    }
  }
  return reports;
}

/** The environments whose server the archivers cannot reach (kept a minute: an archiver says it again every 15 s). */
export async function saveUnreachableEnvs(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
  envs: UnreachableEnv[],
): Promise<void> {
  const key = keys(config).unreachable;
  if (envs.length === 0) await connection.del(key);
  else await connection.set(key, JSON.stringify(envs), 'EX', REPORT_TTL_S);
}

export async function unreachableEnvs(
  connection: RedisConnection,
  config: Pick<Config, 'QUEUE_PREFIX'>,
): Promise<UnreachableEnv[]> {
  const text = await connection.get(keys(config).unreachable);
  if (!text) return [];
  try {
    const parsed = JSON.parse(text) as unknown;
    return Array.isArray(parsed) ? (parsed as UnreachableEnv[]) : [];
  } catch {
    return [];
  }
}
