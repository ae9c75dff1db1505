import { loadConfig, loadDotEnv, type Config } from '../config.js';
import { CliExit, ConfigError } from '../errors.js';
import { EXIT, useSecrets } from './io.js';

let loaded: Config | undefined;

/** The configuration (with `.env`), loaded once, when a command first needs it; a wrong one exits 2. */
export function cliConfig(): Config {
  if (!loaded) {
    try {
      loadDotEnv();
      loaded = loadConfig();
    } catch (error) {
      if (error instanceof ConfigError) throw new CliExit(EXIT.invalid, `invalid configuration: ${error.message}`);
      throw error;
    }
    useSecrets(loaded.secrets);
  }
  return loaded;
}
