import * as z from 'zod';
import type { Config } from '../config.js';
import { normalizeEnvName } from '../config.js';
import { ValidationError } from '../errors.js';

/** Payload fields shared by several operations. */

export const envName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, { message: 'an environment name is letters, digits, _ and -' })
  .transform(normalizeEnvName)
  .meta({ description: 'the environment (its database is DATABASE_URL_<ENV>)' });

export const parallelJobs = z.number().int().min(1).max(64);

/** The name of the protected environment a job changes, repeated (CLI `--confirm`, JSON field `confirm`). */
export const confirmField = z
  .string()
  .max(200)
  .optional()
  .meta({ description: "the environment's name again: required to change a protected environment" });

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

type JsonSchema = Record<string, unknown>;

/**
 * A rule between payload fields, said twice side by side: as the check the worker runs (`broken`), and
 * as JSON Schema for the served contract, so that another producer's validator refuses what the worker
 * would. tests/job-contract.test.ts feeds both every example of docs/jobs.md.
 */
export interface PayloadRule<Payload> {
  path: string;
  message: string;
  broken(payload: Payload): boolean;
  schema: JsonSchema;
}

/** Fields' rules on an object schema: issues naming the field for the worker, `allOf` in its JSON Schema. */
export function withRules<Shape extends z.ZodObject>(schema: Shape, rules: PayloadRule<z.output<Shape>>[]): Shape {
  return schema
    .superRefine((payload, issues) => {
      for (const rule of rules)
        if (rule.broken(payload)) issues.addIssue({ code: 'custom', path: [rule.path], message: rule.message });
    })
    .meta({ allOf: rules.map((rule) => ({ description: `${rule.path}: ${rule.message}`, ...rule.schema })) });
}

/** JSON Schema: the field is present with this value. */
export const fieldIs = (field: string, value: unknown): JsonSchema => ({
  properties: { [field]: { const: value } },
  required: [field],
});
/** JSON Schema: the field is present. */
export const fieldGiven = (field: string): JsonSchema => ({ required: [field] });
/** JSON Schema: when `condition` holds, so must `then`. */
export const implies = (condition: JsonSchema, then: JsonSchema): JsonSchema => ({ if: condition, then });
/** JSON Schema: the field is absent or has this value (its default). */
export const fieldAbsentOr = (field: string, value: unknown): JsonSchema => ({
  properties: { [field]: { const: value } },
});

/** A job's steps in order with how long each took (ms): where a restore's or a copy's seconds go. */
export const stepTimings = z.array(z.object({ step: z.string(), ms: z.number() })).meta({
  description: 'each step in order with how long it took (ms): lock, checks, create shadow, fill, swap…',
});
