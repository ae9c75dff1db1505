import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { PermanentError, isTransientToolOutput } from '../errors.js';
import { libpqConnection } from './target.js';

export type PgTool = 'pg_dump' | 'pg_restore' | 'psql';

export interface ToolOptions {
  /** Connection URL; the password travels in PGPASSWORD, never in argv. */
  url?: string;
  signal?: AbortSignal;
  /** Called for each line the tool writes on stderr (its --verbose output and errors). */
  onStderrLine?: (line: string) => void;
  /** 'pipe' to read the tool's stdout as a stream; otherwise it is discarded. */
  stdout?: 'pipe' | 'ignore';
  stdin?: 'pipe' | 'ignore';
  binDir?: string;
}

// setpriv --pdeathsig makes the kernel kill the tool when the worker dies, even by SIGKILL, so a dead
// worker never leaves a pg_dump or pg_restore running on its own.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((candidate) => existsSync(candidate));

export function toolPath(tool: PgTool, binDir?: string): string {
  return binDir ? path.join(binDir, tool) : tool;
}

/** Starts a PostgreSQL client tool; the connection goes last, as --dbname. */
export function startTool(tool: PgTool, args: string[], options: ToolOptions = {}): ResultPromise {
  const connection = options.url ? libpqConnection(options.url) : undefined;
  const fullArgs = connection ? [...args, `--dbname=${connection.dbname}`] : args;
  const binary = toolPath(tool, options.binDir);
  const [file, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', binary, ...fullArgs]] : [binary, fullArgs];
  const child = execa(file, argv, {
    env: { ...connection?.env, PGCONNECT_TIMEOUT: '15', PGAPPNAME: `dbops-${tool}` },
    extendEnv: true,
    stdin: options.stdin ?? 'ignore',
    stdout: options.stdout ?? 'ignore',
    stderr: 'pipe',
    buffer: false,
    cancelSignal: options.signal,
    forceKillAfterDelay: 5_000,
  });
  if (options.onStderrLine && child.stderr) {
    const onLine = options.onStderrLine;
    readline.createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => onLine(line));
  } else {
    child.stderr?.resume();
  }
  return child;
}

/** Keeps the last lines a tool printed, for the error message when it fails. */
export class StderrTail {
  private readonly lines: string[] = [];
  constructor(private readonly size = 20) {}
  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.size) this.lines.shift();
  }
  errors(): string[] {
    const errorLines = this.lines.filter((line) => /error|fatal|could not|failed|invalid/i.test(line));
    return errorLines.length > 0 ? errorLines : this.lines.slice(-3);
  }
}

/** Turns a tool's failure into an error: transient ones (connection lost) retry, others fail the job. */
export function toolFailure(tool: PgTool, exitCode: number | undefined, tail: StderrTail): Error {
  const detail = tail.errors().slice(-4).join('; ') || 'no output';
  const message = `${tool} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${detail}`;
  return isTransientToolOutput(detail) ? new Error(message) : new PermanentError(message);
}

/** Awaits a started tool, translating its failure. Cancellation is left to the caller to recognise. */
export async function finishTool(tool: PgTool, child: ResultPromise, tail: StderrTail): Promise<void> {
  try {
    await child;
  } catch (error) {
    const failed = error as { isCanceled?: boolean; exitCode?: number; isTerminated?: boolean };
    if (failed.isCanceled) throw error;
    throw toolFailure(tool, failed.exitCode, tail);
  }
}

const versions = new Map<string, Promise<string>>();

/** `pg_dump (PostgreSQL) 15.20 …`, asked once per binary. */
export function toolVersion(tool: PgTool, binDir?: string): Promise<string> {
  const binary = toolPath(tool, binDir);
  let version = versions.get(binary);
  if (!version) {
    version = execa(binary, ['--version']).then(({ stdout }) => stdout.trim());
    version.catch(() => versions.delete(binary));
    versions.set(binary, version);
  }
  return version;
}
