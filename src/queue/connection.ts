import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config.js';

/**
 * A Redis connection for BullMQ. Workers and QueueEvents block, so they need maxRetriesPerRequest: null
 * (keep retrying forever across a Redis restart); producers fail fast instead of hanging a request.
 */
export function createRedis(config: Pick<Config, 'REDIS_URL'>, purpose: 'worker' | 'producer' = 'worker'): Redis {
  const options: RedisOptions = {
    maxRetriesPerRequest: purpose === 'worker' ? null : 3,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 200, 5_000),
  };
  if (purpose === 'producer') options.enableOfflineQueue = true;
  const redis = new Redis(config.REDIS_URL, options);
  redis.on('error', () => undefined); // reconnects on its own; callers see failures on their commands
  return redis;
}
