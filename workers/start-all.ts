/**
 * `npm start`: one process per worker type plus the dashboard/API server, supervised. A process that
 * dies is started again (with a growing delay); SIGTERM/SIGINT stop them all gracefully.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SAID_NO_ENVIRONMENT, loadConfigOrExit, noEnvironmentWarning } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { workerTypes } from '../src/operations/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));

const config = loadConfigOrExit();
const logger = createLogger(config, { process: 'supervisor' });
// Said once, here, rather than by every process it starts.
const lonely = noEnvironmentWarning(config);
if (lonely) logger.warn(lonely);

function withoutBackupKeys(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { BACKUP_ENCRYPTION_KEY: _key, BACKUP_DECRYPTION_KEYS: _older, ...rest } = env;
  return rest;
}

interface Managed {
  name: string;
  script: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  child?: ChildProcess;
  restarts: number;
}

const managed: Managed[] = [
  ...workerTypes.map((type) => ({
    name: `worker:${type}`,
    script: path.join(here, 'worker.js'),
    args: [type],
    restarts: 0,
  })),
  // The WAL archiver, when servers are to be archived (PITR_ENVS).
  ...(config.pitrEnvs.length > 0
    ? [{ name: 'worker:wal', script: path.join(here, 'worker.js'), args: ['wal'], restarts: 0 }]
    : []),
  // The server never opens an archive: it is started without the backup keys.
  {
    name: 'dashboard',
    script: path.join(here, '..', 'dashboards', 'server.js'),
    args: [],
    env: withoutBackupKeys(process.env),
    restarts: 0,
  },
];
let stopping = false;

function launch(entry: Managed): void {
  const started = Date.now();
  const env = { ...(entry.env ?? process.env), ...(lonely ? { [SAID_NO_ENVIRONMENT]: '1' } : {}) };
  const child = fork(entry.script, entry.args, { stdio: 'inherit', env });
  entry.child = child;
  child.on('exit', (code, signal) => {
    entry.child = undefined;
    if (stopping) return maybeExit();
    if (code === 2) {
      logger.fatal({ process: entry.name }, 'configuration refused; stopping everything');
      return stopAll('configuration');
    }
    if (Date.now() - started > 60_000) entry.restarts = 0;
    const delay = Math.min(30_000, 1_000 * 2 ** entry.restarts);
    entry.restarts += 1;
    logger.error({ process: entry.name, code, signal, restartInMs: delay }, 'process exited; restarting');
    setTimeout(() => {
      if (!stopping) launch(entry);
    }, delay);
  });
}

function maybeExit(): void {
  if (managed.every((entry) => !entry.child)) process.exit(0);
}

function stopAll(reason: string): void {
  if (stopping) return;
  stopping = true;
  logger.info({ reason }, 'stopping all processes');
  for (const entry of managed) entry.child?.kill('SIGTERM');
  setTimeout(() => process.exit(1), 40_000).unref();
  maybeExit();
}

process.on('SIGTERM', () => stopAll('SIGTERM'));
process.on('SIGINT', () => stopAll('SIGINT'));
for (const entry of managed) launch(entry);
logger.info({ processes: managed.map((entry) => entry.name) }, 'started');
