import type { Server } from 'node:http';
import express from 'express';
import type { Config } from '../config.js';
import { isLoopbackHost } from '../config.js';
import type { Logger } from '../logger.js';
import { createRedis } from '../queue/connection.js';

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export function createApp(config: Config, redis: ReturnType<typeof createRedis>): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', async (_req, res) => {
    try {
      await redis.ping();
      res.json({ status: 'ok' });
    } catch {
      res.status(503).json({ status: 'unavailable', reason: 'Redis does not answer' });
    }
  });
  return app;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  if (!isLoopbackHost(config.HOST) && !(config.DASHBOARD_USER && config.DASHBOARD_PASSWORD)) {
    throw new Error(`refusing to listen on ${config.HOST} without DASHBOARD_USER and DASHBOARD_PASSWORD`);
  }
  const redis = createRedis(config, 'producer');
  const app = createApp(config, redis);
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(config.PORT, config.HOST, () => resolve(listening));
    listening.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.PORT;
  const url = `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${port}`;
  logger.info({ url }, 'server listening');
  return {
    server,
    url,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await redis.quit().catch(() => undefined);
    },
  };
}
