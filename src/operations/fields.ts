import { z } from 'zod';
import type { Config } from '../config.js';
import { normalizeEnvName } from '../config.js';
import { ValidationError } from '../errors.js';

/** Payload fields shared by several operations. */

export const envName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, { message: 'an environment name is letters, digits, _ and -' })
  .transform(normalizeEnvName);

export const parallelJobs = z.number().int().min(1).max(64);

/** Destructive jobs into a protected environment must repeat its name. */
export function requireConfirmation(config: Config, env: string, confirm: string | undefined): void {
  if (!config.protectedEnvs.has(env)) return;
  if (confirm === undefined || normalizeEnvName(confirm) !== env) {
    throw new ValidationError(`"${env}" is a protected environment: repeat its name with --confirm ${env}`, [
      { path: 'confirm', message: `must equal "${env}"` },
    ]);
  }
}
