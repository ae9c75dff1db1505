import { isIP } from 'node:net';
import path from 'node:path';
import { parseEnv } from 'node:util';
import * as z from 'zod';
import { ConfigError } from './errors.js';
import { parseRetention, type RetentionPolicy } from './retention-policy.js';
import { parseKey, scrubSecrets, signingKeyFrom, type SigningKeys } from './secrets.js';
import { readTrustedFile } from './trusted-files.js';
import { AWS_VARIABLES, parseBackupStores, s3SettingsFrom, type S3Settings, type StoreSpec } from './store-specs.js';

/** Environment names: lower case, `_` and `-` alike (DATABASE_URL_STAGING_EU is `staging-eu`). */
export function normalizeEnvName(name: string): string {
  return name.trim().toLowerCase().replace(/_/g, '-');
}

const ENV_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

const postgresUrl = z.string().refine(
  (value) => {
    try {
      const url = new URL(value);
      return url.protocol === 'postgres:' || url.protocol === 'postgresql:';
    } catch {
      return false;
    }
  },
  { message: 'expected a postgres:// or postgresql:// URL' },
);

const booleanString = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((value) => value === 'true' || value === '1' || value === 'yes');

const positiveInt = (min: number, max: number) =>
  z.coerce
    .number()
    .int()
    .min(min, { message: `expected a whole number from ${min} to ${max}` })
    .max(max, { message: `expected a whole number from ${min} to ${max}` });

const baseSchema = z.object({
  REDIS_URL: z
    .string()
    .default('redis://127.0.0.1:6379')
    .refine((value) => /^rediss?:\/\//.test(value), { message: 'expected a redis:// or rediss:// URL' }),
  QUEUE_PREFIX: z
    .string()
    .default('dbops')
    .refine((value) => /^[A-Za-z0-9_.{}-]{1,64}$/.test(value), {
      message: 'expected 1-64 characters of letters, digits, _ . - { }',
    }),
  /** REDIS_URL is one node of a Redis Cluster (the other nodes are discovered). */
  REDIS_CLUSTER: booleanString.default(false),
  /** Redis Sentinel: `host:port,host:port` of the sentinels, and the name of the monitored master. */
  REDIS_SENTINELS: z
    .string()
    .regex(/^[^,:\s]+:\d+(,[^,:\s]+:\d+)*$/, { message: 'expected host:port[,host:port…]' })
    .optional(),
  REDIS_SENTINEL_NAME: z.string().min(1).default('mymaster'),
  /** The sentinels' own password (`requirepass` in sentinel.conf); the master's comes from REDIS_URL. */
  REDIS_SENTINEL_PASSWORD: z.string().min(1).optional(),
  PROTECTED_ENVS: z.string().optional(),
  BACKUP_DIR: z.string().min(1).default('./backups'),
  /** Where backups are kept: `[name=]file:///dir` and `[name=]s3://bucket/prefix[?forcePathStyle=true]`, comma-separated. */
  BACKUP_STORES: z.string().optional(),
  /** The only directory tree a migrate job's `dir` may name (resolved, symlinks followed). */
  MIGRATIONS_ROOT: z.string().min(1).default('./migrations'),
  PORT: positiveInt(0, 65535).default(3000), // 0: any free port
  HOST: z.string().min(1).default('127.0.0.1'),
  /** Host names the server answers to beside HOST and the loopback names (e.g. behind a reverse proxy). */
  ALLOWED_HOSTS: z
    .string()
    .regex(/^[A-Za-z0-9.:[\]-]+(,[A-Za-z0-9.:[\]-]+)*$/, { message: 'expected host names, comma-separated' })
    .optional(),
  DASHBOARD_USER: z.string().min(1).optional(),
  DASHBOARD_PASSWORD: z.string().min(1).optional(),
  API_TOKEN: z.string().min(16, { message: 'expected at least 16 characters' }).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** `auto`: one readable line per event on a terminal, JSON otherwise (to a file, a pipe, a log collector). */
  LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),
  // Beyond the contract: tuning knobs with safe defaults.
  JOB_ATTEMPTS: positiveInt(1, 100).default(3),
  JOB_BACKOFF_MS: positiveInt(0, 86_400_000).default(10_000),
  /** Finished jobs kept in Redis (for jobs show and the dashboard), by count; older ones are removed. */
  JOB_KEEP_COMPLETED: positiveInt(0, 1_000_000).default(1_000),
  JOB_KEEP_FAILED: positiveInt(0, 1_000_000).default(5_000),
  /** Length each queue's event stream is trimmed to (BullMQ's default); events carry job results. */
  JOB_EVENTS_MAX: positiveInt(10, 1_000_000).default(10_000),
  /** The job history (audit trail): kept this many days, and at most this many entries. */
  HISTORY_RETENTION_DAYS: positiveInt(1, 36_500).default(400),
  HISTORY_MAX_ENTRIES: positiveInt(1_000, 100_000_000).default(250_000),
  /** The name the history gives the holder of API_TOKEN (who asked, for jobs enqueued through the API). */
  API_TOKEN_NAME: z
    .string()
    .regex(/^[A-Za-z0-9._@-]{1,64}$/, { message: 'expected up to 64 letters, digits, ".", "_", "@" or "-"' })
    .default('api'),
  WORKER_CONCURRENCY: positiveInt(1, 64).default(1),
  WORKER_LOCK_MS: positiveInt(1_000, 3_600_000).default(30_000),
  WORKER_STALLED_INTERVAL_MS: positiveInt(500, 3_600_000).optional(),
  PG_BIN_DIR: z.string().min(1).optional(),
  /** The Python the migrate worker runs Alembic and Flask-Migrate with (a virtual environment's python works). */
  MIGRATE_PYTHON: z.string().min(1).default('python3'),
  /** On the migrate worker: the Flask app Flask-Migrate folders run in (as `flask db` takes it). */
  FLASK_APP: z.string().min(1).optional(),
  /** lock_timeout and statement_timeout of a migrate job's sessions, in ms (0: PostgreSQL's own, none). */
  MIGRATE_LOCK_TIMEOUT_MS: positiveInt(0, 86_400_000).default(0),
  MIGRATE_STATEMENT_TIMEOUT_MS: positiveInt(0, 86_400_000).default(0),
  /** Variables of the worker's environment the team's Python code also needs (comma-separated names). */
  MIGRATE_PASS_ENV: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*$/, {
      message: 'expected variable names, comma-separated',
    })
    .optional(),
  /** copy --jobs: a table at least this big (bytes on disk) gets a COPY stream of its own. */
  COPY_OWN_STREAM_BYTES: positiveInt(0, 2 ** 50).default(8 * 2 ** 20),
  PG_MAINTENANCE_DB: z.string().min(1).default('postgres'),
  RESTORE_KEEP_PREVIOUS: booleanString.default(true),
  DASHBOARD_READONLY: booleanString.default(false),
  /** 32 bytes (64 hex digits or base64): archives are encrypted with AES-256-GCM as they are written. */
  BACKUP_ENCRYPTION_KEY: z
    .string()
    .refine((value) => parseKey(value) !== undefined, {
      message: 'expected 32 bytes as 64 hex digits or base64 (e.g. openssl rand -hex 32)',
    })
    .optional(),
  /** 32 bytes that sign every manifest (default: derived from BACKUP_ENCRYPTION_KEY, else a key file in BACKUP_DIR). */
  BACKUP_SIGNING_KEY: z
    .string()
    .refine((value) => parseKey(value) !== undefined, {
      message: 'expected 32 bytes as 64 hex digits or base64 (e.g. openssl rand -hex 32)',
    })
    .optional(),
  /** Earlier keys, comma-separated, kept to decrypt the backups made with them (after a key rotation). */
  BACKUP_DECRYPTION_KEYS: z
    .string()
    .refine((value) => value.split(',').every((key) => key.trim() === '' || parseKey(key) !== undefined), {
      message: 'expected keys of 32 bytes (64 hex digits or base64), comma-separated',
    })
    .optional(),
  /** Retention for every environment (BACKUP_RETENTION_<ENV> for one): last=N,daily=N,weekly=N,monthly=N. */
  BACKUP_RETENTION: z.string().optional(),
  /** Webhook for notifications (JSON; Slack-compatible `text`): jobs failed for good, missed schedules. */
  NOTIFY_WEBHOOK_URL: z
    .string()
    .refine((value) => /^https?:\/\/[^\s]+$/.test(value) && URL.canParse(value), {
      message: 'expected an http:// or https:// URL',
    })
    .optional(),
  NOTIFY_ON_SUCCESS: booleanString.default(false),
  /** Environments whose servers' WAL is archived continuously (point-in-time recovery). */
  PITR_ENVS: z.string().optional(),
  /** WAL (MiB) the archiver's slot may keep on a server before the archiver warns (default: 80 % of max_slot_wal_keep_size, else 8192). */
  PITR_SLOT_WARN_MB: positiveInt(1, 100_000_000).optional(),
  /** The unprivileged OS user a root worker runs its temporary recovery instances as. */
  PITR_OS_USER: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, { message: 'expected a user name' })
    .optional(),
  /** JSON or YAML file of schedules, applied when workers and the server start. */
  SCHEDULES_FILE: z.string().min(1).optional(),
  /** The shortest time between two runs of a schedule (1 minute; lower it only for tests and demos). */
  SCHEDULE_MIN_INTERVAL_SECONDS: positiveInt(1, 86_400).default(60),
  /** How often each worker process looks for schedules that missed a run. */
  SCHEDULE_CHECK_INTERVAL_MS: positiveInt(200, 86_400_000).default(30_000),
  /** Largest JSON body the HTTP API accepts. */
  API_BODY_LIMIT: z
    .string()
    .regex(/^\d+(b|kb|mb)$/i, { message: 'expected a size such as 64kb' })
    .default('64kb'),
});

/** Every fixed variable the configuration reads (besides DATABASE_URL_<ENV> and WORKER_CONCURRENCY_<TYPE>). */
export const configVariables = [...Object.keys(baseSchema.shape), ...AWS_VARIABLES, 'DBOPS_ENV_FILE'];

export interface Environment {
  /** Canonical name, as jobs and the CLI use it. */
  name: string;
  /** Full connection URL, password included: stays in process memory, never leaves it. */
  url: string;
  /** Name of the environment variable it came from. */
  variable: string;
}

export type Config = Omit<
  z.infer<typeof baseSchema>,
  | 'PROTECTED_ENVS'
  | 'BACKUP_DIR'
  | 'BACKUP_STORES'
  | 'MIGRATIONS_ROOT'
  | 'ALLOWED_HOSTS'
  | 'BACKUP_ENCRYPTION_KEY'
  | 'BACKUP_SIGNING_KEY'
  | 'BACKUP_DECRYPTION_KEYS'
  | 'BACKUP_RETENTION'
  | 'PITR_ENVS'
> & {
  /** PITR_ENVS: environments whose servers' WAL is archived (checked against the environments). */
  pitrEnvs: string[];
  /** The worker's own work area (jobs' partial files), and the default file store. */
  backupDir: string;
  /** BACKUP_STORES, in order: a backup goes to all of them; a read takes the first that holds it. */
  backupStores: StoreSpec[];
  /** The AWS SDK's variables, for s3:// stores. */
  s3: S3Settings;
  migrationsRoot: string;
  /** Lower-case host names (no port) the server answers to beside HOST and loopback (ALLOWED_HOSTS). */
  allowedHosts: string[];
  encryptionKey?: Buffer;
  /** What signs and checks manifests and markers (BACKUP_SIGNING_KEY, or derived from the encryption key); else the key file in BACKUP_DIR. */
  signingKey?: SigningKeys;
  /** Every key that may decrypt a backup: the current one first, then BACKUP_DECRYPTION_KEYS. */
  decryptionKeys: Buffer[];
  /** Retention per environment (BACKUP_RETENTION_<ENV>, else BACKUP_RETENTION); none: keep everything. */
  retentionFor(env: string): RetentionPolicy | undefined;
  /** WORKER_CONCURRENCY_<TYPE>: jobs one worker process of that type runs at once. */
  concurrencyByType: Map<string, number>;
  /** PROTECTED_ENVS, and every environment whose URL names the same database as one of them. */
  protectedEnvs: Set<string>;
  environments: Map<string, Environment>;
  /** Every password found in a configured URL, for scrubbing text that leaves the process. */
  secrets: string[];
};

function describeIssue(issue: z.core.$ZodIssue, source: Record<string, string | undefined>): string {
  const variable = String(issue.path[0] ?? '');
  const raw = source[variable];
  // Credentials in any URL (REDIS_URL's password…) are scrubbed, even in a malformed one: whatever
  // stands before an `@` may be a password. An error message lands in logs.
  const scrubbed = raw === undefined ? '' : scrubSecrets(raw, []).replace(/^.*@/, '***@');
  const shown =
    raw === undefined || /PASSWORD|TOKEN|DATABASE_URL|KEY|WEBHOOK/.test(variable) ? '' : ` (got "${scrubbed}")`;
  return `${variable}: ${issue.message}${shown}`;
}

const LOOPBACK = 'loopback';

/**
 * Which database a URL names, as far as the URL can tell: host (loopback names and addresses alike),
 * port and database name. Two environments with the same identity are the same database.
 */
export function databaseIdentity(value: string): string {
  const url = new URL(value);
  const host = (url.hostname || url.searchParams.get('host') || 'local socket').toLowerCase();
  const database =
    decodeURIComponent(url.pathname.replace(/^\//, '')) ||
    url.searchParams.get('dbname') ||
    decodeURIComponent(url.username) ||
    'postgres';
  return `${isLoopbackHost(host) ? LOOPBACK : host}:${url.port || url.searchParams.get('port') || '5432'}/${database}`;
}

/** PROTECTED_ENVS checked against the environments, and extended to every alias of a protected database. */
function parseProtected(raw: string | undefined, environments: Map<string, Environment>): Set<string> {
  // Unset (or empty), the default protects production where there is one. Only `none` protects nothing.
  const explicit = raw !== undefined && raw.trim() !== '';
  const given = explicit ? raw.trim().toLowerCase() : 'production';
  const names = given === 'none' ? [] : given.split(',').map(normalizeEnvName).filter(Boolean);
  const unknown = names.filter((name) => !environments.has(name));
  // A name given that matches nothing is a typo that would leave the real environment unprotected.
  if (explicit && unknown.length > 0) {
    const known = [...environments.keys()].join(', ') || 'none configured';
    throw new ConfigError(
      `PROTECTED_ENVS: "${unknown.join('", "')}" is no configured environment (known: ${known}); use none for none`,
    );
  }
  const protectedIds = new Set(
    names.filter((name) => environments.has(name)).map((name) => databaseIdentity(environments.get(name)!.url)),
  );
  const result = new Set(names);
  for (const environment of environments.values()) {
    if (protectedIds.has(databaseIdentity(environment.url))) result.add(environment.name);
  }
  return result;
}

function parseEnvironments(source: Record<string, string | undefined>): Map<string, Environment> {
  const environments = new Map<string, Environment>();
  for (const [variable, value] of Object.entries(source)) {
    if (!variable.startsWith('DATABASE_URL_') || value === undefined || value === '') continue;
    const name = normalizeEnvName(variable.slice('DATABASE_URL_'.length));
    if (!ENV_NAME.test(name)) {
      throw new ConfigError(`${variable}: the environment name must be letters, digits, _ or -`);
    }
    const parsed = postgresUrl.safeParse(value);
    if (!parsed.success) throw new ConfigError(`${variable}: expected a postgres:// or postgresql:// URL`);
    const existing = environments.get(name);
    if (existing) throw new ConfigError(`${variable}: names the same environment as ${existing.variable}`);
    environments.set(name, { name, url: value, variable });
  }
  return environments;
}

function collectSecrets(urls: string[]): string[] {
  const secrets = new Set<string>();
  for (const value of urls) {
    try {
      const url = new URL(value);
      if (url.password) {
        secrets.add(url.password);
        secrets.add(decodeURIComponent(url.password));
      }
      const queryPassword = url.searchParams.get('password');
      if (queryPassword) secrets.add(queryPassword);
    } catch {
      // unparsable URLs are rejected elsewhere
    }
  }
  return [...secrets].filter((secret) => secret.length > 0);
}

function parseRetentions(
  source: Record<string, string | undefined>,
  fallback: string | undefined,
): (env: string) => RetentionPolicy | undefined {
  const parse = (variable: string, value: string) => {
    try {
      return parseRetention(value);
    } catch (error) {
      throw new ConfigError(`${variable}: ${(error as Error).message} (got "${value}")`);
    }
  };
  const byEnv = new Map<string, RetentionPolicy>();
  for (const [variable, value] of Object.entries(source)) {
    if (variable.startsWith('BACKUP_RETENTION_') && value)
      byEnv.set(normalizeEnvName(variable.slice('BACKUP_RETENTION_'.length)), parse(variable, value));
  }
  const all = fallback ? parse('BACKUP_RETENTION', fallback) : undefined;
  return (env) => byEnv.get(env) ?? all;
}

function parseConcurrency(source: Record<string, string | undefined>): Map<string, number> {
  const byType = new Map<string, number>();
  for (const [variable, value] of Object.entries(source)) {
    if (!variable.startsWith('WORKER_CONCURRENCY_') || value === undefined) continue;
    const parsed = positiveInt(1, 64).safeParse(value);
    if (!parsed.success) throw new ConfigError(`${variable}: expected a whole number from 1 to 64 (got "${value}")`);
    byType.set(variable.slice('WORKER_CONCURRENCY_'.length).toLowerCase(), parsed.data);
  }
  return byType;
}

/** Settings only the dashboard/API server reads: a wrong one stops the server, never the CLI or a worker's job. */
export const SERVER_ONLY_VARIABLES = [
  'PORT',
  'HOST',
  'ALLOWED_HOSTS',
  'DASHBOARD_USER',
  'DASHBOARD_PASSWORD',
  'DASHBOARD_READONLY',
  'API_TOKEN',
  'API_BODY_LIMIT',
] as const;

/** The environment without the server's own settings (see SERVER_ONLY_VARIABLES). */
export function withoutServerSettings(source: Record<string, string | undefined>): Record<string, string | undefined> {
  const rest = { ...source };
  for (const variable of SERVER_ONLY_VARIABLES) delete rest[variable];
  return rest;
}

export interface LoadOptions {
  /** false for a process that never reads or writes an archive (the server): the backup keys stay unloaded. */
  backupKeys?: boolean;
}

/** Parses and validates the process environment; throws ConfigError with one line naming the variable. */
export function loadConfig(
  source: Record<string, string | undefined> = process.env,
  options: LoadOptions = {},
): Config {
  const parsed = baseSchema.safeParse(source);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new ConfigError(first ? describeIssue(first, source) : 'invalid configuration');
  }
  const base = parsed.data;
  const environments = parseEnvironments(source);

  const protectedEnvs = parseProtected(base.PROTECTED_ENVS, environments);

  if (base.DASHBOARD_USER && !base.DASHBOARD_PASSWORD) {
    throw new ConfigError('DASHBOARD_PASSWORD: required when DASHBOARD_USER is set');
  }

  if (base.REDIS_CLUSTER && base.REDIS_SENTINELS) {
    throw new ConfigError('REDIS_SENTINELS: a Redis Cluster (REDIS_CLUSTER=true) does not use sentinels');
  }
  if (base.REDIS_SENTINEL_PASSWORD && !base.REDIS_SENTINELS) {
    throw new ConfigError('REDIS_SENTINEL_PASSWORD: set REDIS_SENTINELS too, or leave it unset');
  }
  // In a Redis Cluster every key of a queue must hash to one slot: BullMQ's keys start with the prefix,
  // so a prefix that is a hash tag ({dbops}) keeps them together.
  if (base.REDIS_CLUSTER && !/\{[^}]+\}/.test(base.QUEUE_PREFIX)) base.QUEUE_PREFIX = `{${base.QUEUE_PREFIX}}`;

  const {
    PROTECTED_ENVS: _p,
    BACKUP_DIR,
    BACKUP_STORES,
    MIGRATIONS_ROOT,
    ALLOWED_HOSTS,
    BACKUP_ENCRYPTION_KEY,
    BACKUP_SIGNING_KEY,
    BACKUP_DECRYPTION_KEYS,
    BACKUP_RETENTION,
    PITR_ENVS,
    ...rest
  } = base;
  const pitrEnvs = (PITR_ENVS ?? '').split(',').map(normalizeEnvName).filter(Boolean);
  const unknownPitr = pitrEnvs.filter((name) => !environments.has(name));
  if (unknownPitr.length > 0)
    throw new ConfigError(
      `PITR_ENVS: "${unknownPitr.join('", "')}" is no configured environment (known: ${[...environments.keys()].join(', ') || 'none configured'})`,
    );
  const withKeys = options.backupKeys !== false;
  const encryptionKey = withKeys && BACKUP_ENCRYPTION_KEY ? parseKey(BACKUP_ENCRYPTION_KEY) : undefined;
  const olderKeys = withKeys
    ? (BACKUP_DECRYPTION_KEYS ?? '')
        .split(',')
        .map((key) => key.trim())
        .filter(Boolean)
    : [];
  const secrets = collectSecrets([...[...environments.values()].map((env) => env.url), base.REDIS_URL]);
  // The AWS SDK reads its credentials itself; they are scrubbed from whatever leaves the process all the same.
  const awsSecrets = [source.AWS_SECRET_ACCESS_KEY, source.AWS_SESSION_TOKEN];
  for (const secret of [
    base.DASHBOARD_PASSWORD,
    base.API_TOKEN,
    base.REDIS_SENTINEL_PASSWORD,
    BACKUP_ENCRYPTION_KEY,
    BACKUP_SIGNING_KEY,
    ...olderKeys,
    base.NOTIFY_WEBHOOK_URL,
    ...awsSecrets,
  ])
    if (secret) secrets.push(secret);
  return {
    ...rest,
    backupDir: path.resolve(BACKUP_DIR),
    backupStores: parseBackupStores(BACKUP_STORES, path.resolve(BACKUP_DIR)),
    s3: s3SettingsFrom(source),
    migrationsRoot: path.resolve(MIGRATIONS_ROOT),
    allowedHosts: (ALLOWED_HOSTS ?? '')
      .split(',')
      .map((host) => host.trim().toLowerCase())
      .filter(Boolean),
    encryptionKey,
    // Every process that lists backups checks their signatures, the server too (it never holds the encryption key itself).
    signingKey: signingKeyFrom(
      BACKUP_SIGNING_KEY,
      BACKUP_ENCRYPTION_KEY,
      (BACKUP_DECRYPTION_KEYS ?? '')
        .split(',')
        .map((key) => key.trim())
        .filter(Boolean),
    ),
    decryptionKeys: [...(encryptionKey ? [encryptionKey] : []), ...olderKeys.map((key) => parseKey(key)!)],
    retentionFor: parseRetentions(source, BACKUP_RETENTION),
    concurrencyByType: parseConcurrency(source),
    protectedEnvs,
    pitrEnvs,
    environments,
    secrets,
  };
}

/**
 * `.env`: the file DBOPS_ENV_FILE names, else `.env` in the working directory, when there is one (as
 * .env.example invites). Its variables join the process environment; those the real environment already
 * has win. Only a trusted file is read (trusted-files.ts): one of another user, or one others can write,
 * is ignored with a one-line warning on stderr, so that root running `manage-db` in someone else's
 * directory does not take that person's PG_BIN_DIR or database URLs.
 */
export function loadDotEnv(
  file = process.env.DBOPS_ENV_FILE || '.env',
  warn: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): void {
  let read: ReturnType<typeof readTrustedFile>;
  try {
    read = readTrustedFile(file);
  } catch (error) {
    throw new ConfigError(`${file}: ${(error as Error).message}`);
  }
  if (read === undefined) {
    if (process.env.DBOPS_ENV_FILE) throw new ConfigError(`DBOPS_ENV_FILE: ${file} does not exist`);
    return;
  }
  if ('refused' in read) {
    warn(`dbops: ignoring ${file}: ${read.refused}`);
    return;
  }
  let variables: Record<string, string>;
  try {
    variables = parseEnv(read.text) as Record<string, string>;
  } catch (error) {
    throw new ConfigError(`${file}: ${(error as Error).message}`);
  }
  for (const [name, value] of Object.entries(variables)) process.env[name] ??= value;
}

/** Set by `npm start`'s supervisor for the processes it starts, once it has said there is no environment. */
export const SAID_NO_ENVIRONMENT = 'DBOPS_SUPERVISOR_SAID_NO_ENVIRONMENT';

/**
 * What a process without any environment should say at start: it can run no job. Undefined when there
 * is one, or when `npm start`'s supervisor has said it already for every process it starts.
 */
export function noEnvironmentWarning(
  config: Pick<Config, 'environments'>,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  return config.environments.size === 0 && !env[SAID_NO_ENVIRONMENT]
    ? 'no database environment is configured: set DATABASE_URL_<ENV>, e.g. DATABASE_URL_PRODUCTION=postgres://…'
    : undefined;
}

/** For entry points: the configuration (with `.env`), or one line on stderr and exit code 2. */
export function loadConfigOrExit(options: LoadOptions = {}): Config {
  try {
    loadDotEnv();
    return loadConfig(process.env, options);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`invalid configuration: ${error.message}\n`);
    process.exit(2);
  }
}

/** Loopback by address, not by text: `127.0.0.1`, `::1`, `localhost`; never `127.attacker.example`. */
export function isLoopbackHost(host: string): boolean {
  const bare = host
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1');
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(bare) || /^::ffff:127\./.test(bare);
  return false;
}
