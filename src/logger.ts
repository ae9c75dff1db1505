import { pino, type Logger } from 'pino';
import type { Config } from './config.js';
import { scrubSecrets } from './secrets.js';

export type { Logger };

/** JSON logs on stdout (stderr for the CLI); every line passes through the secret scrubber before it is written. */
export function createLogger(config: Pick<Config, 'LOG_LEVEL' | 'secrets'>, bindings: Record<string, unknown> = {}, destination: 1 | 2 = 1): Logger {
  return pino(
    {
      level: config.LOG_LEVEL,
      base: { pid: process.pid, ...bindings },
      redact: { paths: ['url', '*.url', 'password', '*.password', 'connectionString', '*.connectionString'], censor: '***' },
      hooks: { streamWrite: (line) => scrubSecrets(line, config.secrets) },
    },
    pino.destination({ fd: destination, sync: destination === 2 }),
  );
}
