import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { Config } from './config.js';
import { scrubSecrets } from './secrets.js';

export type { Logger };

type LoggerConfig = Pick<Config, 'LOG_LEVEL' | 'secrets'> & Partial<Pick<Config, 'LOG_FORMAT'>>;

/**
 * Logs on stdout (stderr for the CLI): JSON lines, or one readable line per event on a terminal.
 * Every line passes through the secret scrubber before it is written, whichever the format.
 */
export function createLogger(
  config: LoggerConfig,
  bindings: Record<string, unknown> = {},
  destination: 1 | 2 = 1,
): Logger {
  const format = config.LOG_FORMAT ?? 'auto';
  const pretty = format === 'pretty' || (format === 'auto' && isatty(destination));
  return pino(
    {
      level: config.LOG_LEVEL,
      base: { pid: process.pid, ...bindings },
      redact: {
        paths: ['url', '*.url', 'password', '*.password', 'connectionString', '*.connectionString'],
        censor: '***',
      },
      hooks: { streamWrite: (line) => scrubSecrets(line, config.secrets) },
    },
    pretty ? prettyStream(destination) : pino.destination({ fd: destination, sync: destination === 2 }),
  );
}

/** pino-pretty in this thread (no transport worker), loaded only when a terminal is there to read it. */
function prettyStream(destination: 1 | 2): DestinationStream {
  const require = createRequire(import.meta.url);
  const { PinoPretty } = require('pino-pretty') as typeof import('pino-pretty');
  return PinoPretty({
    destination,
    sync: true,
    singleLine: true,
    colorize: isatty(destination),
    translateTime: 'SYS:HH:MM:ss.l',
    // One line per event: who speaks, what happened, and an error's message (its stack is in the JSON format).
    messageFormat: (log, messageKey) => {
      const speaker = log.worker ? `${String(log.worker)} worker: ` : log.process ? `${String(log.process)}: ` : '';
      const error = (log.err as { message?: unknown } | undefined)?.message;
      return `${speaker}${String(log[messageKey])}${error === undefined ? '' : `: ${String(error)}`}`;
    },
    ignore: 'hostname,worker,process,err',
  });
}
