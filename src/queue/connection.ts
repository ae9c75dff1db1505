import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config.js';

export type RedisConnection = Redis | Cluster;

/**
 * A Redis connection for BullMQ: a single server (redis:// or rediss:// for TLS), a master found through
 * Sentinel (REDIS_SENTINELS), or a Redis Cluster (REDIS_CLUSTER, REDIS_URL naming one node).
 * Workers and QueueEvents block, so they need maxRetriesPerRequest: null (keep retrying across a
 * Redis restart); producers fail fast instead of hanging a request.
 */
export function createRedis(
  config: Pick<
    Config,
    'REDIS_URL' | 'REDIS_CLUSTER' | 'REDIS_SENTINELS' | 'REDIS_SENTINEL_NAME' | 'REDIS_SENTINEL_PASSWORD'
  >,
  purpose: 'worker' | 'producer' = 'worker',
): RedisConnection {
  const options: RedisOptions = {
    maxRetriesPerRequest: purpose === 'worker' ? null : 3,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 200, 5_000),
  };
  let connection: RedisConnection;
  if (config.REDIS_CLUSTER) {
    const url = new URL(config.REDIS_URL);
    const tls = url.protocol === 'rediss:' ? {} : undefined;
    connection = new Cluster([{ host: url.hostname, port: Number(url.port || 6379) }], {
      redisOptions: {
        ...options,
        username: decodeURIComponent(url.username) || undefined,
        password: decodeURIComponent(url.password) || undefined,
        tls,
      },
      clusterRetryStrategy: (times) => Math.min(times * 200, 5_000),
    });
  } else if (config.REDIS_SENTINELS) {
    const url = new URL(config.REDIS_URL);
    // ioredis ignores `tls` in Sentinel mode unless told otherwise: without enableTLSForSentinelMode a
    // rediss: URL would reach the master in clear text. rediss: means TLS to the sentinels and to the master.
    const tls = url.protocol === 'rediss:' ? {} : undefined;
    connection = new Redis({
      ...options,
      sentinels: config.REDIS_SENTINELS.split(',').map((entry) => {
        const [host, port] = entry.split(':');
        return { host: host!, port: Number(port) };
      }),
      name: config.REDIS_SENTINEL_NAME,
      sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
      username: decodeURIComponent(url.username) || undefined,
      password: decodeURIComponent(url.password) || undefined,
      tls,
      sentinelTLS: tls,
      enableTLSForSentinelMode: tls !== undefined,
    });
  } else {
    connection = new Redis(config.REDIS_URL, options);
  }
  // Reconnects on its own; callers see failures on their commands, and lastConnectionError says why.
  connection.on('error', (error: Error) => lastErrors.set(connection, error));
  connection.on('ready', () => lastErrors.delete(connection));
  return connection;
}

const lastErrors = new WeakMap<RedisConnection, Error>();

/** Why the connection last failed to reach Redis (`connect ECONNREFUSED …`); undefined once it is up. */
export function lastConnectionError(connection: RedisConnection): Error | undefined {
  return lastErrors.get(connection);
}
