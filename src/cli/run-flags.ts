import type { OperationType } from '../operations/index.js';

/** How an operation command runs and tells its outcome. */
export interface RunFlags {
  wait?: boolean;
  json?: boolean;
  local?: boolean;
  /** Ctrl-C while following a job cancels it (by default the job goes on). */
  cancelOnInterrupt?: boolean;
  /** Print nothing (a prerequisite run by --local). */
  quiet?: boolean;
}

/** What an operation command does with the payload it built: run it, or (schedule add) keep it. */
export type RunOperation = (type: OperationType, input: Record<string, unknown>, flags: RunFlags) => Promise<void>;
