import { loadConfig, loadDotEnv, withoutServerSettings, type Config } from '../config.js';
import { CliExit, ConfigError } from '../errors.js';
import { EXIT, useSecrets } from './io.js';

let loaded: Config | undefined;

/**
 * The configuration (with `.env`), loaded once, when a command first needs it; a wrong one exits 2.
 * The server's own settings are not the CLI's: a too-short API_TOKEN stops the server, not the CLI.
 */
export function cliConfig(): Config {
  if (!loaded) {
    try {
      loadDotEnv();
      loaded = loadConfig(withoutServerSettings(process.env));
    } catch (error) {
      if (error instanceof ConfigError) throw new CliExit(EXIT.invalid, `invalid configuration: ${error.message}`);
      throw error;
    }
    // Still never printed, though the CLI does not use them.
    useSecrets([
      ...loaded.secrets,
      ...[process.env.API_TOKEN, process.env.DASHBOARD_PASSWORD].filter((secret): secret is string => Boolean(secret)),
    ]);
  }
  return loaded;
}
