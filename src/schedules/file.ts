import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import type { Config } from '../config.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Schedules } from './schedules.js';

/** Reads SCHEDULES_FILE: a list of schedules, or `{ schedules: [...] }`, in YAML or JSON. */
export async function readSchedulesFile(file: string): Promise<unknown[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `SCHEDULES_FILE: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  let document: unknown;
  try {
    document = parse(text); // YAML 1.2 reads JSON as it is
  } catch (error) {
    throw new ConfigError(
      `SCHEDULES_FILE: ${file} is not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`,
    );
  }
  const list = Array.isArray(document) ? document : (document as { schedules?: unknown } | null)?.schedules;
  if (!Array.isArray(list))
    throw new ConfigError(`SCHEDULES_FILE: ${file} must hold a list of schedules, or "schedules:" with one`);
  return list;
}

/** Applies SCHEDULES_FILE when it is set; an invalid file stops the process with one line. */
export async function applySchedulesFile(config: Config, schedules: Schedules, logger: Logger): Promise<void> {
  if (!config.SCHEDULES_FILE) return;
  const definitions = await readSchedulesFile(config.SCHEDULES_FILE);
  try {
    const { applied, removed } = await schedules.applyFile(definitions);
    logger.info({ file: config.SCHEDULES_FILE, applied, removed }, 'schedules file applied');
  } catch (error) {
    throw new ConfigError(`SCHEDULES_FILE: ${(error as Error).message}`);
  }
}
