import * as z from 'zod';
import type { Config } from '../config.js';
import { normalizeEnvName } from '../config.js';
import { ValidationError } from '../errors.js';

/** Payload fields shared by several operations. */

export const envName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, { message: 'an environment name is letters, digits, _ and -' })
  .transform(normalizeEnvName);

export const parallelJobs = z.number().int().min(1).max(64);

/** The name of the protected environment a job changes, repeated (CLI `--confirm`, JSON field `confirm`). */
export const confirmField = z
  .string()
  .max(200)
  .optional()
  .meta({ description: "the environment's name again: needed to change a protected environment (CLI --confirm)" });

/** A job that changes a protected environment's database or backups must repeat its name. */
export function requireConfirmation(config: Config, env: string, confirm: unknown): void {
  if (!config.protectedEnvs.has(env)) return;
  if (typeof confirm !== 'string' || normalizeEnvName(confirm) !== env) {
    throw new ValidationError(
      `"${env}" is a protected environment: the field "confirm" must repeat its name`,
      [{ path: 'confirm', message: `must equal "${env}"` }],
      `"${env}" is a protected environment: repeat its name with --confirm ${env}`,
    );
  }
}

/** A backup store by its BACKUP_STORES name (`--store`): where a backup is read from. */
export const storeName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, {
    message: 'a store name is lower-case letters, digits, _ and - (see BACKUP_STORES)',
  })
  .optional()
  .meta({
    description: 'the backup store to read from, by its BACKUP_STORES name (default: the first that holds the backup)',
  });
