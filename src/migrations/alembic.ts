import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { PermanentError, ValidationError } from '../errors.js';
import { untrustedProgramPath } from '../trusted-files.js';

/*
 * Migrations written for Alembic, or for Flask-Migrate (Alembic run inside a Flask app), run in the
 * team's own Python (MIGRATE_PYTHON) by alembic_runner.py beside this module: never through a shell,
 * the request in an environment variable, the database's URL in DATABASE_URL and
 * SQLALCHEMY_DATABASE_URI as Flask apps read it, never on a command line.
 */

export type MigrationKind = 'sql' | 'alembic' | 'flask';

/**
 * What kind of migrations a folder holds: a Flask-Migrate folder (env.py that uses Flask's
 * current_app), an Alembic project (alembic.ini), or node-pg-migrate's `<number>_<name>.sql` files.
 * Nothing of a known kind: one line that says what was looked for.
 */
export async function detectKind(dir: string): Promise<MigrationKind> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.includes('env.py')) {
    const env = await readFile(path.join(dir, 'env.py'), 'utf8').catch(() => '');
    if (/\bcurrent_app\b|\bflask\b/.test(env)) return 'flask';
  }
  if (names.includes('alembic.ini')) return 'alembic';
  if (names.some((name) => /^\d+_.+\.sql$/.test(name))) return 'sql';
  throw new ValidationError(
    `no migrations of a known kind in ${path.basename(dir)}: looked for alembic.ini (Alembic), env.py with Flask's current_app (Flask-Migrate) and <number>_<name>.sql files (node-pg-migrate)`,
    [{ path: 'dir', message: 'no migrations of a known kind' }],
  );
}

export interface AlembicRequest {
  kind: 'alembic' | 'flask';
  dir: string;
  action: 'status' | 'up' | 'down';
  target?: string;
  count?: number;
  dryRun?: boolean;
}

export interface AlembicStep {
  revision: string;
  ms: number;
}

export interface AlembicOutcome {
  /** status: current revisions, heads, pending in order; up/down: the revisions chosen; dry runs: their SQL. */
  result: { current?: string[]; heads?: string[]; pending?: string[]; revisions?: string[]; sql?: string };
  steps: AlembicStep[];
}

/** A revision that failed: rolled back (Alembic's transaction), nothing after it ran; what ran before it stays. */
export class RevisionFailed extends PermanentError {
  override name = 'RevisionFailed';
  constructor(
    readonly revision: string,
    readonly error: string,
    readonly steps: AlembicStep[],
  ) {
    super(`revision ${revision} failed: ${error}`);
  }
}

export interface AlembicOptions {
  /** MIGRATE_PYTHON: a program name found on PATH, or a path (a virtual environment's python). */
  python: string;
  /** The environment's URL: handed over in the environment only. */
  url: string;
  /** FLASK_APP of the migrate worker (Flask-Migrate folders). */
  flaskApp?: string;
  /** lock_timeout and statement_timeout for the migration's sessions (ms; 0 or unset: PostgreSQL's own). */
  lockTimeoutMs?: number;
  statementTimeoutMs?: number;
  /** Variables of the worker's environment the team's code also needs (MIGRATE_PASS_ENV). */
  passEnv?: string[];
  signal?: AbortSignal;
  onLog?: (line: string) => void;
}

/** Beside the compiled module (and beside the CLI's bundle): the build copies it there. */
const RUNNER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'alembic_runner.py');

/** SQLAlchemy refuses `postgres://`, the scheme many platforms give: it gets `postgresql://`. */
export function sqlalchemyUrl(url: string): string {
  return url.replace(/^postgres:\/\//, 'postgresql://');
}

/** What the team's Python inherits: PATH, locale, time zone, its virtual environment, and what MIGRATE_PASS_ENV names; no other database's URL, no key. */
const INHERITED = /^(PATH|HOME|LANG|LANGUAGE|TZ|LC_[A-Z_]+|VIRTUAL_ENV|PYTHONPATH)$/;

export async function runAlembic(request: AlembicRequest, options: AlembicOptions): Promise<AlembicOutcome> {
  if (options.python.includes('/')) {
    const refused = untrustedProgramPath(options.python);
    if (refused) throw new PermanentError(`MIGRATE_PYTHON is not trusted: ${refused}`);
  }
  if (request.kind === 'flask' && !options.flaskApp) {
    throw new PermanentError(
      'a Flask-Migrate folder runs inside the Flask app: set FLASK_APP on the migrate worker (e.g. app:create_app)',
    );
  }
  const url = sqlalchemyUrl(options.url);
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && (INHERITED.test(name) || options.passEnv?.includes(name))) env[name] = value;
  }
  const pgOptions = [
    ...(options.lockTimeoutMs ? [`-c lock_timeout=${options.lockTimeoutMs}`] : []),
    ...(options.statementTimeoutMs ? [`-c statement_timeout=${options.statementTimeoutMs}`] : []),
  ];
  Object.assign(env, {
    DATABASE_URL: url,
    SQLALCHEMY_DATABASE_URI: url,
    DBOPS_MIGRATE_REQUEST: JSON.stringify(request),
    PYTHONUNBUFFERED: '1',
    ...(options.flaskApp ? { FLASK_APP: options.flaskApp } : {}),
    ...(pgOptions.length ? { PGOPTIONS: pgOptions.join(' ') } : {}),
  });
  // Flask-Migrate folders run from the app's directory (the folder's parent), as `flask db` is run.
  const cwd = request.kind === 'flask' ? path.dirname(request.dir) : request.dir;
  await stat(RUNNER).catch(() => {
    throw new PermanentError(`dbops is incomplete: ${RUNNER} is missing`);
  });
  const child = execa(options.python, [RUNNER], {
    env,
    extendEnv: false,
    cwd,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    reject: false,
    cancelSignal: options.signal,
    forceKillAfterDelay: 5_000,
  });
  const steps: AlembicStep[] = [];
  let result: AlembicOutcome['result'] | undefined;
  let failed: { revision: string; error: string } | undefined;
  const said: string[] = [];
  const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void) =>
    new Promise<void>((resolve) =>
      readline.createInterface({ input: stream, crlfDelay: Infinity }).on('line', onLine).on('close', resolve),
    );
  const read = Promise.all([
    lines(child.stdout!, (line) => {
      const message = /^DBOPS-(STEP|RESULT|FAILED) (.*)$/.exec(line);
      if (!message) {
        said.push(line);
        options.onLog?.(line);
      } else if (message[1] === 'STEP') {
        const step = JSON.parse(message[2]!) as AlembicStep;
        steps.push(step);
        options.onLog?.(
          `${request.action === 'down' ? 'reverted' : 'applied'} revision ${step.revision} (${step.ms} ms)`,
        );
      } else if (message[1] === 'RESULT') result = JSON.parse(message[2]!) as AlembicOutcome['result'];
      else failed = JSON.parse(message[2]!) as { revision: string; error: string };
    }),
    lines(child.stderr!, (line) => {
      said.push(line);
      options.onLog?.(line);
    }),
  ]);
  const [ended] = await Promise.all([child, read]);
  if (failed) throw new RevisionFailed(failed.revision, failed.error, steps);
  if (ended.isCanceled || options.signal?.aborted)
    throw options.signal?.reason instanceof Error ? options.signal.reason : new Error('cancelled');
  if (ended.failed || !result) {
    if ((ended as { code?: string }).code === 'ENOENT') {
      throw new PermanentError(
        `MIGRATE_PYTHON "${options.python}" was not found: install Python with Alembic, or point MIGRATE_PYTHON at the app's virtual environment`,
      );
    }
    const last = said.filter((line) => line.trim()).at(-1) ?? `exit ${ended.exitCode ?? ended.signal}`;
    throw new PermanentError(`Alembic (${options.python}) failed: ${last}`);
  }
  return { result, steps };
}
