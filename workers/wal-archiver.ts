/**
 * The WAL archiver: `npm run worker -- wal`. One archives each server of PITR_ENVS at a time across all
 * hosts; start one on two hosts and the second stands by, taking over within seconds when the first dies.
 */
import { loadConfigOrExit } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { runArchiver } from '../src/pitr/archiver.js';
import { createRedis } from '../src/queue/connection.js';
import { redisServerLock, saveArchiverReport, saveUnreachableEnvs } from '../src/queue/wal-archivers.js';

export async function runWalArchiver(): Promise<void> {
  const config = loadConfigOrExit();
  process.umask(0o077);
  const logger = createLogger(config, { worker: 'wal' });
  if (config.pitrEnvs.length === 0) {
    process.stderr.write('worker wal: PITR_ENVS names no environment: nothing to archive\n');
    process.exit(2);
  }
  const redis = createRedis(config, 'producer');
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'stopping the WAL archiver');
    stop.abort();
    setTimeout(() => process.exit(1), 15_000).unref();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await runArchiver(
      {
        config,
        logger,
        lock: redisServerLock(redis, config),
        report: (report) => saveArchiverReport(redis, config, report),
        reportUnreachable: (envs) => saveUnreachableEnvs(redis, config, envs),
      },
      stop.signal,
    );
  } catch (error) {
    logger.error({ err: error }, 'the WAL archiver failed');
    await redis.quit().catch(() => undefined);
    process.exit(1);
  }
  await redis.quit().catch(() => undefined);
  logger.info('stopped');
  process.exit(0);
}
