import type * as z from 'zod';
import type { Config } from '../config.js';
import { ValidationError } from '../errors.js';
import { getOperation, type OperationType, type Payload } from './index.js';
import { requireConfirmation } from './fields.js';
import type { Operation } from './operation.js';

/**
 * Validates a payload as producers and workers both must: the schema, the operation's checks against
 * the configuration, then the confirmation a protected environment needs.
 */
export async function checkPayload(operation: Operation, config: Config, payload: unknown): Promise<unknown> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw new ValidationError(`invalid ${operation.type} job: the payload must be a JSON object`, [
      { path: '(payload)', message: 'must be a JSON object' },
    ]);
  }
  const parsed = (operation.schema as z.ZodType).safeParse(payload);
  if (!parsed.success) {
    // An unknown key's issue sits on the object: name the key itself.
    const issues = parsed.error.issues.flatMap((issue) =>
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((key) => ({ path: [...issue.path, key].join('.'), message: 'unknown field' }))
        : [{ path: issue.path.join('.') || '(payload)', message: issue.message }],
    );
    throw new ValidationError(
      `invalid ${operation.type} job: ${issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ')}`,
      issues,
    );
  }
  await operation.precheck?.(parsed.data, config);
  const changed = operation.changes?.(parsed.data);
  if (changed) requireConfirmation(config, changed, (parsed.data as { confirm?: unknown }).confirm);
  return parsed.data;
}

export async function validatePayload<T extends OperationType>(
  config: Config,
  type: T,
  payload: unknown,
): Promise<Payload<T>> {
  return (await checkPayload(getOperation(type), config, payload)) as Payload<T>;
}
