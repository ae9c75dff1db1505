/**
 * One worker process of one operation type: `npm run worker -- <type>`. Start as many as you like, on
 * as many hosts as share the Redis; each takes jobs of its type only.
 */
import { loadConfigOrExit, noEnvironmentWarning } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { watchJobOutcomes } from '../src/schedules/outcomes.js';
import { isWorkerType, workerTypes, type WorkerType } from '../src/operations/index.js';
import { createRedis } from '../src/queue/connection.js';
import { Queues } from '../src/queue/queues.js';
import { startWorker } from '../src/queue/worker.js';
import { startScheduleUpkeep, type ScheduleUpkeep } from '../src/schedules/upkeep.js';

const type = process.argv[2] ?? '';
if (type === 'wal') {
  const { runWalArchiver } = await import('./wal-archiver.js');
  await runWalArchiver();
} else if (!isWorkerType(type)) {
  process.stderr.write(`worker: unknown type "${type}" (one of: ${workerTypes.join(', ')}, wal)\n`);
  process.exit(2);
} else {
  await runQueueWorker(type);
}

async function runQueueWorker(type: WorkerType): Promise<void> {
  const config = loadConfigOrExit();
  // Backups hold whole databases: whatever this worker or its tools create is its owner's alone.
  process.umask(0o077);

  const logger = createLogger(config, { worker: type });
  const lonely = noEnvironmentWarning(config);
  if (lonely) logger.warn(lonely);
  const queues = new Queues(config, createRedis(config, 'producer'));
  let upkeep: ScheduleUpkeep;
  try {
    upkeep = await startScheduleUpkeep(config, queues, logger);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`invalid configuration: ${error.message}\n`);
    process.exit(2);
  }
  // Beside the jobs: outcomes of scheduled runs and their notifications, watched by every worker (from
  // before the worker takes its first job).
  const outcomes = await watchJobOutcomes({
    config,
    queues,
    queue: type,
    schedules: upkeep.schedules,
    notifier: upkeep.notifier,
    logger,
  });
  const running = await startWorker(type, config, logger);

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: running jobs go back to the queue');
    // Should a job refuse to wind down, leave anyway: the queue's stall detection hands it to another worker.
    const deadline = setTimeout(() => process.exit(1), 30_000);
    deadline.unref();
    running
      .shutdown()
      .then(async () => {
        await outcomes.close();
        await upkeep.stop();
        await queues.close();
        await queues.connection.quit().catch(() => undefined);
      })
      .then(
        () => {
          logger.info('stopped');
          process.exit(0);
        },
        (error: unknown) => {
          logger.error({ err: error }, 'error while stopping');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
