import type { Config } from '../config.js';
import type { CreatedDatabase, DatabaseLedger } from '../ownership.js';
import type { RedisConnection } from './connection.js';

/**
 * The databases dbops created, in Redis under the queue prefix: out of reach of the SQL that jobs run
 * (a triggers job can forge a database comment, not this record).
 */
export function redisLedger(connection: RedisConnection, config: Pick<Config, 'QUEUE_PREFIX'>): DatabaseLedger {
  const key = `${config.QUEUE_PREFIX}:dbops:databases`;
  return {
    async record(database: CreatedDatabase) {
      await connection.hset(key, database.name, JSON.stringify(database));
    },
    async get(name: string) {
      const text = await connection.hget(key, name);
      if (!text) return undefined;
      try {
        return JSON.parse(text) as CreatedDatabase;
      } catch {
        return undefined;
      }
    },
    async forget(name: string) {
      await connection.hdel(key, name);
    },
  };
}
