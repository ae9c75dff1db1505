import { errorMessage } from '../errors.js';
import { lastConnectionError, type RedisConnection } from '../queue/connection.js';

/** How long a request waits for Redis to answer before the server says it is down. */
export const REDIS_ANSWER_MS = 2_000;

/** Undefined when Redis answers a PING within `ms`; else why not, in a line. */
export async function redisTrouble(connection: RedisConnection, ms = REDIS_ANSWER_MS): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      connection.ping(),
      new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${ms / 1000} s`)), ms);
      }),
    ]);
    return undefined;
  } catch (error) {
    // The connection's own error says why (refused, unknown host); the command's only that it gave up.
    const cause = lastConnectionError(connection);
    return cause ? errorMessage(cause) : errorMessage(error);
  } finally {
    clearTimeout(timer);
  }
}

/** A failure that says Redis is away (a refused or closed connection, retries run out), not a fault of the request. */
export function isRedisOutage(error: unknown): boolean {
  const text = `${(error as Error)?.name ?? ''} ${errorMessage(error)}`;
  return /MaxRetriesPerRequest|Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|cannot reach Redis|Stream isn't writeable/i.test(
    text,
  );
}
