/**
 * The dashboard and API server: `npm run dashboard` (and part of `npm start`).
 */
import { loadConfigOrExit, noEnvironmentWarning } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startServer } from '../src/server/app.js';

// The server lists backups and enqueues jobs; it never opens an archive, so it holds no backup key.
const config = loadConfigOrExit({ backupKeys: false });
delete process.env.BACKUP_ENCRYPTION_KEY;
delete process.env.BACKUP_DECRYPTION_KEYS;

const logger = createLogger(config, { process: 'dashboard' });
const lonely = noEnvironmentWarning(config);
if (lonely) logger.warn(lonely);
try {
  const server = await startServer(config, logger, (error) => {
    process.stderr.write(`dashboard: ${(error as Error).message}\n`);
    process.exit(2);
  });
  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (error) {
  process.stderr.write(`dashboard: ${(error as Error).message}\n`);
  process.exit(2);
}
