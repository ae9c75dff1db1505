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
    message: string,
    readonly issues: { path: string; message: string }[] = [],
  ) {
    super(message);
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** SQLSTATEs worth a retry: connection failures, shutdowns and restarts, lock timeouts, deadlocks. */
function isTransientSqlState(code: string): boolean {
  return (
    code.startsWith('08') ||
    ['57P01', '57P02', '57P03', '53300', '40001', '40P01', '55P03', '57014'].includes(code)
  );
}

const TRANSIENT_TOOL_OUTPUT =
  /could not connect|connection refused|server closed the connection unexpectedly|the database system is (starting up|shutting down|in recovery mode|not yet accepting)|terminating connection due to administrator command|connection to server .* failed|timeout expired|connection reset|could not obtain lock|deadlock detected|too many connections|no connection to the server|could not (send|receive) data (to|from) server|lost synchronization with server|SSL SYSCALL error|SSL connection has been closed unexpectedly/i;

export function isTransientToolOutput(text: string): boolean {
  return TRANSIENT_TOOL_OUTPUT.test(text);
}

/** Whether a retry could help. Our own PermanentErrors never; PostgreSQL errors by SQLSTATE. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof PermanentError) return false;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (TRANSIENT_NODE_CODES.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code)) return isTransientSqlState(code);
  }
  return true;
}
