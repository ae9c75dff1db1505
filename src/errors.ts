/*
 * Every error dbops tells apart, in one place, recognised by type (or, for a job BullMQ has already
 * failed, by the one reason text kept here).
 */

/**
 * Errors that a retry cannot fix (bad input, unknown environment, damaged archive): the job fails at
 * once. Every other error is taken as transient and retried with backoff, up to the job's attempts.
 */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** Invalid input from a user: the CLI exits 2, the API answers 400, nothing is enqueued. */
export class ValidationError extends PermanentError {
  override name = 'ValidationError';
  constructor(
    /** Says what is wrong in the payload's terms (its JSON fields): for the HTTP API and failure reasons. */
    message: string,
    readonly issues: { path: string; message: string }[] = [],
    /** The same in the CLI's terms (its flags), where they differ. */
    readonly forCli?: string,
  ) {
    super(message);
  }
}

/** A configuration variable is missing or wrong: the process stops with one line naming it (exit 2). */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The archive itself is at fault (damaged, does not decrypt, pg_restore refuses it): not worth a retry. */
export class ArchiveProblem extends PermanentError {
  override name = 'ArchiveProblem';
}

/** One migration failed; the timings of those that ran in this attempt, the failed one last. */
export class MigrationFailed extends Error {
  override name = 'MigrationFailed';
  constructor(
    message: string,
    readonly timings: { name: string; ms: number; ok: boolean; error?: string }[],
    /** A lost connection, say: the attempt may be retried. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** The CLI stops with this exit code (and message, if any). */
export class CliExit extends Error {
  override name = 'CliExit';
  constructor(
    readonly code: number,
    message = '',
  ) {
    super(message);
  }
}

/**
 * The failure reason of a job stopped by `jobs cancel`. BullMQ keeps a failed job's reason as text
 * only, so this text is how a failed job is known to have been cancelled.
 */
export const CANCELLED_REASON = 'cancelled by user';

export function wasCancelled(failedReason: string | null | undefined): boolean {
  return failedReason === CANCELLED_REASON;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const TRANSIENT_NODE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/** SQLSTATEs worth a retry: connection failures, shutdowns and restarts, lock timeouts, deadlocks. */
function isTransientSqlState(code: string): boolean {
  return (
    code.startsWith('08') || ['57P01', '57P02', '57P03', '53300', '40001', '40P01', '55P03', '57014'].includes(code)
  );
}

// "invalid snapshot identifier": the session that exported a copy's snapshot went away (terminated,
// its connection lost) before a tool imported it; the next attempt exports a new one.
const TRANSIENT_TOOL_OUTPUT =
  /could not connect|connection refused|server closed the connection unexpectedly|the database system is (starting up|shutting down|in recovery mode|not yet accepting)|terminating connection due to administrator command|connection to server .* failed|timeout expired|connection reset|could not obtain lock|deadlock detected|too many connections|no connection to the server|could not (send|receive) data (to|from) server|lost synchronization with server|SSL SYSCALL error|SSL connection has been closed unexpectedly|invalid snapshot identifier/i;

export function isTransientToolOutput(text: string): boolean {
  return TRANSIENT_TOOL_OUTPUT.test(text);
}

/** Whether a retry could help. Our own PermanentErrors never; PostgreSQL errors by SQLSTATE. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof PermanentError) return false;
  if (error instanceof MigrationFailed) return error.retryable;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (TRANSIENT_NODE_CODES.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return isTransientSqlState(code);
  }
  return true;
}
