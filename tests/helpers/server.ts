import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { startServer, type RunningServer } from '../../src/server/app.js';
import type { Rig } from './rig.js';

/** The dashboard/API server in the test's process, on a free port, configured from the rig. */
export async function startTestServer(rig: Rig, extra: Record<string, string> = {}): Promise<RunningServer> {
  const config = loadConfig({ ...rig.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...extra });
  return startServer(config, createLogger(config));
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}
