import { CliExit } from '../errors.js';
import { getOperation, type OperationType } from '../operations/index.js';
import type { JobOutcome } from '../queue/producer.js';
import { EXIT, out, printJson } from './io.js';
import type { RunFlags } from './run-flags.js';

function describe(type: OperationType, result: unknown): string {
  const operation = getOperation(type);
  return operation.describe ? operation.describe(result) : JSON.stringify(result);
}

/** How an operation's outcome is told: its result in words (or as JSON), or an exit with why it failed. */
export function report(type: OperationType, outcome: JobOutcome<OperationType>, flags: RunFlags): void {
  if (outcome.state === 'completed') {
    if (flags.json) printJson(outcome.result);
    else out(describe(type, outcome.result));
    return;
  }
  throw new CliExit(EXIT.failed, `job ${outcome.id} ${outcome.state}: ${outcome.failedReason}`);
}
