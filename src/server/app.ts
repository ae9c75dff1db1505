import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import type { Config } from '../config.js';
import { isLoopbackHost } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { Producer } from '../queue/producer.js';
import { consoleRouter } from './console/routes.js';
import { Schedules } from '../schedules/schedules.js';
import { startScheduleUpkeep, type ScheduleUpkeep } from '../schedules/upkeep.js';
import { apiRouter } from './api.js';
import { basicAuth } from './auth.js';
import { DASHBOARD_PATH, dashboardRouter } from './dashboard.js';
import { hostGuard, readOnlyGuard, sameOriginGuard } from './guards.js';
import { createMetrics, type Metrics } from './metrics.js';
import { redisTrouble } from './redis-health.js';
import { scrubSecrets } from '../secrets.js';

/** How long closing the server waits for Redis before it drops the connections. */
const CLOSE_GRACE_MS = 3_000;

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export function createApp(config: Config, producer: Producer, metrics: Metrics, logger: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(hostGuard(config));
  const credentials =
    config.DASHBOARD_USER && config.DASHBOARD_PASSWORD
      ? { user: config.DASHBOARD_USER, password: config.DASHBOARD_PASSWORD }
      : undefined;
  // With credentials: basic auth, and changes only from the dashboard's own pages. Without: read-only.
  const dashboardAuth: RequestHandler[] =
    credentials && !config.DASHBOARD_READONLY
      ? [basicAuth(credentials.user, credentials.password), sameOriginGuard()]
      : credentials
        ? [basicAuth(credentials.user, credentials.password), readOnlyGuard()]
        : [readOnlyGuard()];

  app.get('/healthz', async (_req, res) => {
    const trouble = await redisTrouble(producer.queues.connection);
    if (!trouble) return res.json({ status: 'ok' });
    res
      .status(503)
      .json({ status: 'unavailable', reason: `Redis does not answer: ${scrubSecrets(trouble, config.secrets)}` });
  });
  app.get('/metrics', ...dashboardAuth, async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use('/api/v1', apiRouter(config, producer));
  app.use(
    DASHBOARD_PATH,
    ...dashboardAuth,
    dashboardRouter(producer.queues, { readOnly: !credentials || config.DASHBOARD_READONLY }),
  );
  app.use(
    consoleRouter(config, producer, {
      readOnly: !credentials || config.DASHBOARD_READONLY,
      guard: dashboardAuth,
      authenticated: Boolean(credentials),
    }),
  );
  app.use((_req, res) => res.status(404).json({ error: 'not found' }));

  // No stack traces in responses: the message for client errors, a generic line otherwise.
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    const status = typeof error?.status === 'number' && error.status >= 400 && error.status < 600 ? error.status : 500;
    if (status >= 500) logger.error({ err: error }, 'request failed');
    const message =
      status === 413
        ? 'request body too large'
        : status < 500
          ? String(error.message ?? 'bad request')
          : 'internal error';
    res.status(status).json({ error: message });
  };
  app.use(onError);
  return app;
}

/**
 * Starts the server. Redis away at start does not keep it from listening: it says so (within seconds),
 * /healthz answers 503 until Redis answers, and the schedules' upkeep starts once it does. A fault that
 * waiting cannot mend (an invalid SCHEDULES_FILE) met then goes to `onFatal`.
 */
export async function startServer(
  config: Config,
  logger: Logger,
  onFatal: (error: unknown) => void = (error) => logger.error({ err: error }, 'server upkeep failed'),
): Promise<RunningServer> {
  if (!isLoopbackHost(config.HOST) && !(config.DASHBOARD_USER && config.DASHBOARD_PASSWORD)) {
    throw new Error(`refusing to listen on ${config.HOST} without DASHBOARD_USER and DASHBOARD_PASSWORD`);
  }
  const producer = new Producer(config);
  const reachable = await producer.ensureReachable(3_000).then(
    () => true,
    (error: unknown) => {
      logger.warn(`${errorMessage(error)}; retrying, and listening meanwhile`);
      return false;
    },
  );
  const schedules = new Schedules(config, producer.queues);
  let upkeep: ScheduleUpkeep | undefined;
  let closing = false;
  if (reachable) upkeep = await startScheduleUpkeep(config, producer.queues, logger, schedules);
  else {
    void (async () => {
      while (
        !closing &&
        !(await producer.ensureReachable(2_000).then(
          () => true,
          () => false,
        ))
      )
        await sleep(1_000);
      if (closing) return;
      logger.info('Redis answers again');
      upkeep = await startScheduleUpkeep(config, producer.queues, logger, schedules);
    })().catch(onFatal);
  }
  const metrics = await createMetrics(config, producer.queues, schedules, reachable);
  const app = createApp(config, producer, metrics, logger);
  // Express 5 hands a failure to listen (the port taken, say) to this callback, not to an 'error' event.
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(config.PORT, config.HOST, (error?: Error) =>
      error ? reject(error) : resolve(listening),
    );
  }).catch(async (error: NodeJS.ErrnoException) => {
    closing = true;
    await upkeep?.stop();
    await metrics.close();
    await producer.close();
    const why =
      error.code === 'EADDRINUSE'
        ? 'the port is already in use'
        : error.code === 'EACCES'
          ? 'permission denied'
          : error.message;
    throw new Error(`cannot listen on ${config.HOST}:${config.PORT}: ${why}`, { cause: error });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.PORT;
  const url = `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${port}`;
  // Not under `url`: the logger censors every `url` field, as those usually carry database passwords.
  logger.info(
    { address: url, api: Boolean(config.API_TOKEN), auth: Boolean(config.DASHBOARD_USER) },
    'server listening',
  );
  return {
    server,
    url,
    async close() {
      closing = true;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Closing waits on Redis; with Redis away it would wait for ever: then the connections are dropped
      // (at once when Redis is known to be away, else after a grace period).
      const graceful = (async () => {
        await upkeep?.stop();
        await metrics.close();
        await producer.close();
      })().catch(() => undefined);
      const away = producer.queues.connection.status !== 'ready';
      if (away || (await Promise.race([graceful.then(() => false), sleep(CLOSE_GRACE_MS).then(() => true)]))) {
        metrics.disconnect();
        producer.disconnect();
      }
    },
  };
}
