import type { z } from 'zod';
import { backup } from './backup.js';
import { copy } from './copy.js';
import { maintenance } from './maintenance.js';
import { migrate } from './migrate.js';
import type { Operation } from './operation.js';
import { restore } from './restore.js';
import { triggers } from './triggers.js';

/** The job catalogue: one entry per operation type, each its own queue and worker type. */
export const operations = {
  backup,
  restore,
  migrate,
  copy,
  triggers,
  maintenance,
} as const;

export type OperationType = keyof typeof operations;
export type PayloadInput<T extends OperationType> = z.input<(typeof operations)[T]['schema']>;
export type Payload<T extends OperationType> = z.output<(typeof operations)[T]['schema']>;
export type ResultOf<T extends OperationType> = Awaited<ReturnType<(typeof operations)[T]['process']>>;

export const operationTypes = Object.keys(operations) as OperationType[];

export function isOperationType(value: string): value is OperationType {
  return Object.hasOwn(operations, value);
}

export function getOperation(type: OperationType): Operation {
  return operations[type] as unknown as Operation;
}
