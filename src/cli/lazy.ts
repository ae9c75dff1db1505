import type { RunOperation } from './run-flags.js';

/** runOperation, loaded when an operation command runs: the catalogue, BullMQ and pg are not needed before. */
export const runOperation: RunOperation = async (type, input, flags) =>
  (await import('./run-operation.js')).runOperation(type, input, flags);
