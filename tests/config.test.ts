import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { isRetryable, isTransientToolOutput, PermanentError } from '../src/errors.js';
import { scrubSecrets } from '../src/secrets.js';

describe('configuration', () => {
  it('applies the contract defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      REDIS_URL: 'redis://127.0.0.1:6379',
      QUEUE_PREFIX: 'dbops',
      PORT: 3000,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
    });
    expect([...config.protectedEnvs]).toEqual(['production']);
    expect(config.backupDir).toBe(`${process.cwd()}/backups`);
    expect(config.environments.size).toBe(0);
  });

  it('reads BACKUP_STORES: BACKUP_DIR alone by default; names, kinds, prefixes and options; the AWS variables beside', () => {
    expect(loadConfig({ BACKUP_DIR: '/var/b' }).backupStores).toEqual([{ name: 'file', kind: 'file', dir: '/var/b' }]);
    const config = loadConfig({
      BACKUP_STORES:
        'file:///var/lib/dbops, s3://my-bucket/dbops/prod/?forcePathStyle=true, offsite=s3://other-bucket?region=eu-west-1,s3://third-bucket/p',
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'hunter2hunter2',
      AWS_ENDPOINT_URL: 'http://minio:9000',
    });
    expect(config.backupStores).toEqual([
      { name: 'file', kind: 'file', dir: '/var/lib/dbops' },
      {
        name: 's3',
        kind: 's3',
        bucket: 'my-bucket',
        prefix: 'dbops/prod',
        forcePathStyle: true,
        endpoint: undefined,
        region: undefined,
      },
      {
        name: 'offsite',
        kind: 's3',
        bucket: 'other-bucket',
        prefix: '',
        forcePathStyle: false,
        endpoint: undefined,
        region: 'eu-west-1',
      },
      {
        name: 's3-2',
        kind: 's3',
        bucket: 'third-bucket',
        prefix: 'p',
        forcePathStyle: false,
        endpoint: undefined,
        region: undefined,
      },
    ]);
    expect(config.s3).toEqual({
      credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'hunter2hunter2' },
      region: undefined,
      endpoint: 'http://minio:9000',
    });
    expect(config.secrets).toContain('hunter2hunter2');
  });

  it('names environments in lower case with _ and - alike', () => {
    const config = loadConfig({
      DATABASE_URL_PRODUCTION: 'postgres://u:p@db/prod',
      DATABASE_URL_STAGING_EU: 'postgresql://db/staging',
      PROTECTED_ENVS: 'Production, staging_eu',
    });
    expect([...config.environments.keys()].sort()).toEqual(['production', 'staging-eu']);
    expect([...config.protectedEnvs].sort()).toEqual(['production', 'staging-eu']);
    expect(loadConfig({ PROTECTED_ENVS: 'none' }).protectedEnvs.size).toBe(0);
  });

  it.each([
    [{ PORT: 'abc' }, /^PORT: .*\(got "abc"\)$/],
    [{ PORT: '70000' }, /^PORT: expected a whole number from 0 to 65535/],
    [{ REDIS_URL: 'http://x' }, /^REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL: /],
    [{ QUEUE_PREFIX: 'a:b' }, /^QUEUE_PREFIX: /],
    [
      { DATABASE_URL_PROD: 'mysql://u:hunter22@x/db' },
      /^DATABASE_URL_PROD: expected a postgres:\/\/ or postgresql:\/\/ URL$/,
    ],
    [
      { DATABASE_URL_A_B: 'postgres://x/a', DATABASE_URL_A__B: 'postgres://x/b', 'DATABASE_URL_A-B': 'postgres://x/c' },
      /names the same environment/,
    ],
    [{ DASHBOARD_USER: 'admin' }, /^DASHBOARD_PASSWORD: required when DASHBOARD_USER is set$/],
    [{ API_TOKEN: 'short' }, /^API_TOKEN: expected at least 16 characters$/],
    [
      { WORKER_CONCURRENCY_BACKUP: '0' },
      /^WORKER_CONCURRENCY_BACKUP: expected a whole number from 1 to 64 \(got "0"\)$/,
    ],
    [{ REDIS_SENTINEL_PASSWORD: 'hunter22' }, /^REDIS_SENTINEL_PASSWORD: set REDIS_SENTINELS too, or leave it unset$/],
    [
      { BACKUP_STORES: 'ftp://host/dir' },
      /^BACKUP_STORES: "ftp:\/\/" is no store kind dbops knows \(file:\/\/, s3:\/\/\)$/,
    ],
    [{ BACKUP_STORES: 's3://key:hunter22@bucket/x' }, /^BACKUP_STORES: credentials do not go in the URL/],
    [
      { BACKUP_STORES: 's3://my-bucket/x?pathStyle=1' },
      /^BACKUP_STORES: unknown option "pathStyle" \(known: forcePathStyle, endpoint, region\)$/,
    ],
    [{ BACKUP_STORES: 's3://b/x' }, /^BACKUP_STORES: "b" is no S3 bucket name$/],
    [{ BACKUP_STORES: 'a=s3://my-bucket/x,a=file:///tmp/y' }, /^BACKUP_STORES: two stores are named "a"$/],
    [{ BACKUP_STORES: 's3://my-bucket/x,s3://my-bucket/x' }, /^BACKUP_STORES: s3:\/\/my-bucket\/x is listed twice$/],
    [{ AWS_ACCESS_KEY_ID: 'AKIA' }, /^AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together/],
  ])('refuses %o with one line naming the variable', (env, message) => {
    let error: unknown;
    try {
      loadConfig(env as Record<string, string>);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
    expect((error as Error).message).not.toContain('hunter22');
  });

  it('reads per-type worker concurrency', () => {
    const config = loadConfig({ WORKER_CONCURRENCY: '2', WORKER_CONCURRENCY_MAINTENANCE: '4' });
    expect(config.WORKER_CONCURRENCY).toBe(2);
    expect(config.concurrencyByType.get('maintenance')).toBe(4);
  });

  it('collects passwords to scrub from everything that leaves the process', () => {
    const config = loadConfig({
      DATABASE_URL_PROD: 'postgres://app:p%40ss-word@db/prod',
      REDIS_URL: 'redis://:redispass@r:6379',
      REDIS_SENTINELS: 's1:26379',
      REDIS_SENTINEL_PASSWORD: 'sentinelpass',
    });
    expect(config.secrets).toEqual(expect.arrayContaining(['p@ss-word', 'redispass', 'sentinelpass']));
    const text =
      'failed: postgres://app:p%40ss-word@db/prod and p@ss-word and redis://:redispass@r:6379 and ?password=xyz';
    const scrubbed = scrubSecrets(text, config.secrets);
    expect(scrubbed).not.toMatch(/p@ss-word|p%40ss-word|redispass|xyz/);
    expect(scrubbed).toContain('postgres://app:***@db/prod');
  });
});

describe('error classification', () => {
  it('retries connection failures and restarts, not bad input or missing objects', () => {
    expect(isRetryable(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('shutdown'), { code: '57P01' }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('conn'), { code: '08006' }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('no db'), { code: '3D000' }))).toBe(false);
    expect(isRetryable(Object.assign(new Error('denied'), { code: '42501' }))).toBe(false);
    expect(isRetryable(new PermanentError('bad archive'))).toBe(false);
  });

  it("takes a tool's lost connection as transient, its refusal of the archive as not", () => {
    for (const line of [
      'pg_restore: error: could not execute query: FATAL:  terminating connection due to administrator command',
      'pg_restore: error: error returned by PQputCopyData: could not send data to server: Broken pipe',
      'pg_dump: error: Dumping the contents of table "rental" failed: PQgetResult() failed. Error message: server closed the connection unexpectedly',
      'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused',
      'pg_restore: error: could not receive data from server: Connection reset by peer',
      // Seen in the chaos soak: the copy's snapshot-exporting session was terminated first.
      `pg_dump: error: query failed: ERROR:  invalid snapshot identifier: "00000002-0001AA7C-1"`,
    ])
      expect(isTransientToolOutput(line), line).toBe(true);
    for (const line of [
      'pg_restore: error: input file does not appear to be a valid archive',
      'pg_restore: error: could not execute query: ERROR:  relation "x" already exists',
    ]) {
      expect(isTransientToolOutput(line), line).toBe(false);
    }
  });
});
