import type * as z from 'zod';
import { backup } from './backup.js';
import { copy } from './copy.js';
import { maintenance } from './maintenance.js';
import { maskreport } from './maskreport.js';
import { migrate } from './migrate.js';
import type { Operation } from './operation.js';
import { physicalbackup } from './physicalbackup.js';
import { pitr } from './pitr.js';
import { pitrdrill } from './pitrdrill.js';
import { previous } from './previous.js';
import { prune } from './prune.js';
import { restore } from './restore.js';
import { restoretables } from './restoretables.js';
import { triggers } from './triggers.js';
import { verify } from './verify.js';

/**
 * The job catalogue: one entry per operation type. Each is its own queue and worker type, except
 * companions that name another's queue (Operation.queue).
 */
export const operations = {
  backup,
  restore,
  migrate,
  copy,
  triggers,
  maintenance,
  prune,
  verify,
  previous,
  maskreport,
  restoretables,
  physicalbackup,
  pitr,
  pitrdrill,
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

/** The worker type (queue) that runs an operation. */
export function queueOf(type: OperationType): WorkerType {
  return (getOperation(type).queue ?? type) as WorkerType;
}

/** Worker types: one queue each, one kind of worker process each (`npm run worker -- <type>`). */
export const workerTypes = [...new Set(operationTypes.map(queueOf))];
export type WorkerType = OperationType;

export function isWorkerType(value: string): value is WorkerType {
  return (workerTypes as string[]).includes(value);
}

/** The operations a worker of this type runs: its own and its companions. */
export function operationsOn(workerType: WorkerType): Operation[] {
  return operationTypes.filter((type) => queueOf(type) === workerType).map(getOperation);
}
