/**
 * The dashboard and API server: `npm run dashboard` (and part of `npm start`).
 */
import { ConfigError, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startServer } from '../src/server/app.js';

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`invalid configuration: ${error.message}\n`);
  process.exit(2);
}

const logger = createLogger(config, { process: 'dashboard' });
try {
  const server = await startServer(config, logger);
  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (error) {
  process.stderr.write(`dashboard: ${(error as Error).message}\n`);
  process.exit(2);
}
