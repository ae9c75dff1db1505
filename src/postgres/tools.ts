import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { PermanentError, isTransientToolOutput } from '../errors.js';
import { libpqConnection } from './target.js';

export const PG_TOOLS = ['pg_dump', 'pg_restore', 'psql'] as const;
/** The tools of physical backups and WAL archiving, of the server's own major version (serverBinDir). */
export const PG_SERVER_TOOLS = [
  'pg_receivewal',
  'pg_basebackup',
  'pg_verifybackup',
  'pg_waldump',
  'pg_ctl',
  'postgres',
] as const;
export type PgTool = (typeof PG_TOOLS)[number] | (typeof PG_SERVER_TOOLS)[number];

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

// setpriv --pdeathsig makes the kernel signal the tool's wrapper when the worker dies, even by SIGKILL.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((candidate) => existsSync(candidate));

/*
 * The wrapper: a shell that leads a process group of its own (execa's `detached`), runs the tool in it,
 * and on SIGTERM (from --pdeathsig when the worker dies, or a cancellation) kills the whole group: the
 * tool and the parallel workers that pg_dump and pg_restore fork for --jobs, which --pdeathsig alone
 * would not reach. A signal the tool died of is passed on (a copy reads pg_dump's SIGPIPE).
 */
const GROUP_WRAPPER = [
  'trap "kill -KILL 0" TERM INT HUP',
  'exec 3<&0', // a background command's stdin would be /dev/null: hand it ours through fd 3
  '"$@" <&3 3<&- & tool=$!',
  'exec 3<&-',
  'wait $tool; status=$?',
  'if [ $status -gt 128 ] && [ $status -lt 160 ]; then trap - TERM INT HUP; kill -s $(kill -l $status) $$; fi',
  'exit $status',
].join('\n');

export function toolPath(tool: PgTool, binDir?: string): string {
  return binDir ? path.join(binDir, tool) : tool;
}

/** What a tool inherits: locale, time zone and PATH, nothing else of the worker's (no other database's URL, no token, no key). */
const INHERITED = /^(PATH|LANG|LANGUAGE|TZ|LC_[A-Z_]+)$/;

function toolEnvironment(connectionEnv: Record<string, string> | undefined, tool: PgTool): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env))
    if (value !== undefined && INHERITED.test(name)) env[name] = value;
  return { ...env, ...connectionEnv, PGCONNECT_TIMEOUT: '15', PGAPPNAME: `dbops-${tool}` };
}

/** Starts a PostgreSQL client tool; the connection goes last, as --dbname. */
export function startTool(tool: PgTool, args: string[], options: ToolOptions = {}): ResultPromise {
  const connection = options.url ? libpqConnection(options.url) : undefined;
  const fullArgs = connection ? [...args, `--dbname=${connection.dbname}`] : args;
  const binary = toolPath(tool, options.binDir);
  const [file, argv] = SETPRIV
    ? [SETPRIV, ['--pdeathsig', 'SIGTERM', '--', '/bin/sh', '-c', GROUP_WRAPPER, 'dbops-tool', binary, ...fullArgs]]
    : [binary, fullArgs];
  const child = execa(file, argv, {
    env: toolEnvironment(connection?.env, tool),
    extendEnv: false,
    detached: SETPRIV !== undefined,
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

/**
 * Keeps what a tool said about its failure, for the error message: its error messages with their
 * continuation lines (DETAIL, "server closed the connection…"), or else its last lines. Its --verbose
 * progress is not an error even when a table's name says "error", and the SQL that pg_restore echoes
 * after "Command was:" is left out: a function's body can run to hundreds of lines and would push out
 * the error itself, and with it what says that a retry could help.
 */
export class StderrTail {
  private readonly errorLines: string[] = [];
  private readonly lastLines: string[] = [];
  private within: 'error' | 'echoed command' | undefined;
  /** The newest line that opened an error (`pg_dump: error: …`): the failure's headline, whatever detail follows. */
  private headline: string | undefined;
  /** Whether any error line said the connection was lost: kept however long the detail after it (a query's text). */
  private sawTransient = false;
  constructor(private readonly size = 20) {}
  push(line: string): void {
    const fromTool = TOOL_PREFIX.test(line);
    if (line.startsWith('Command was:')) this.within = 'echoed command';
    else if (fromTool) this.within = TOOL_ERROR.test(line) ? 'error' : undefined;
    else if (BARE_ERROR.test(line)) this.within = 'error';
    if (this.within === 'echoed command' || /^\s*\^?\s*$/.test(line)) return; // blank, or psql's caret under LINE n
    keepLast(this.lastLines, line, 3);
    if (this.within !== 'error') return;
    keepLast(this.errorLines, line, this.size);
    if (TOOL_HEADLINE.test(line) || BARE_ERROR.test(line)) this.headline = line;
    if (isTransientToolOutput(line)) this.sawTransient = true;
  }
  errors(): string[] {
    return this.errorLines.length > 0 ? [...this.errorLines] : [...this.lastLines];
  }
  /** The last lines worth showing, led by the error's headline when the detail pushed it out. */
  summary(): string[] {
    const last = this.errors().slice(-4);
    return this.headline && !last.includes(this.headline) ? [this.headline, ...last.slice(-3)] : last;
  }
  transient(): boolean {
    return this.sawTransient || this.errors().some(isTransientToolOutput);
  }
}

/**
 * A tool's --verbose chatter ("reading schemas", "creating INDEX …", "launching item …") is left out of
 * a job's log: it keeps each table whose data was dumped or loaded, and everything that is not chatter
 * (errors, warnings, their details and the TOC entry they concern).
 */
const TOOL_CHATTER =
  /^(pg_dump|pg_restore): (?!(error|warning|fatal|detail|hint):|dumping contents of table|processing data for table|while PROCESSING TOC|from TOC entry)/i;

export function isNoteworthyLine(line: string): boolean {
  return line.trim() !== '' && !TOOL_CHATTER.test(line);
}

/** Every tool dbops runs prefixes its messages with its name: `pg_basebackup: error: …`. */
const TOOL_NAMES = [...PG_TOOLS, ...PG_SERVER_TOOLS].join('|');
const TOOL_PREFIX = new RegExp(`^(${TOOL_NAMES}):`);
/** `pg_restore: error: …`, `pg_dump: detail: …`, `psql: error: …`, `psql:file.sql:3: ERROR:  …`. */
const TOOL_ERROR = new RegExp(
  `^(${TOOL_NAMES}): (error|fatal|detail|hint):|^psql:.*?: (ERROR|FATAL|PANIC|DETAIL|HINT):`,
  'i',
);
const BARE_ERROR = /^(ERROR|FATAL|PANIC):/;
const TOOL_HEADLINE = new RegExp(`^(${TOOL_NAMES}): (error|fatal):|^psql:.*?: (ERROR|FATAL|PANIC):`, 'i');

function keepLast(lines: string[], line: string, size: number): void {
  lines.push(line);
  if (lines.length > size) lines.shift();
}

/** Turns a tool's failure into an error: transient ones (connection lost) retry, others fail the job. */
export function toolFailure(tool: PgTool, exitCode: number | undefined, tail: StderrTail): Error {
  const detail = tail.summary().join('; ') || 'no output';
  const message = `${tool} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${detail}`;
  // A lost connection is often followed by errors that only follow from it: any sign of one retries.
  return tail.transient() ? new Error(message) : new PermanentError(message);
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

/**
 * startTool with its stderr kept (and still handed to `onStderrLine`): the child, and `finished`, which
 * settles as finishTool does. A caller that may await it late attaches its own handler at once.
 */
export function startTrackedTool(
  tool: PgTool,
  args: string[],
  options: ToolOptions,
): { child: ResultPromise; tail: StderrTail; finished: Promise<void> } {
  const tail = new StderrTail();
  const child = startTool(tool, args, {
    ...options,
    onStderrLine: (line) => {
      tail.push(line);
      options.onStderrLine?.(line);
    },
  });
  return { child, tail, finished: finishTool(tool, child, tail) };
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
