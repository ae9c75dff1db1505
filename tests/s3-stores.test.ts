import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Seal } from '../src/backups/signing.js';
import { fingerprint, sql, type Fingerprint } from './helpers/pg.js';
import { Rig, sourceAndTarget, type WorkerProcess } from './helpers/rig.js';
import { S3Server } from './helpers/s3.js';
import { startTestServer } from './helpers/server.js';
import { REDIS_URL } from './helpers/services.js';
import { waitFor } from './helpers/wait.js';

const BUCKET = 'dbops-test';
/** s3rver checks the access key id, not the signature: any secret works, and this one must never show. */
const SECRET = 'aws-Secret-Never-Shown-7731';

const SIGNING_KEY = randomBytes(32);

/** A backup store in S3 (s3rver on loopback) beside BACKUP_DIR, and a "second host" that shares only the bucket. */
describe('backup stores in S3-compatible object storage', () => {
  let s3: S3Server;
  let rig: Rig;
  let target: Fingerprint;
  let source: Fingerprint;
  let prefix: string;
  let secondDir: string;
  /** The second host: its own BACKUP_DIR, the bucket its only store. */
  let secondHost: Record<string, string>;
  let backupWorker: WorkerProcess;
  let restoreWorker: WorkerProcess;
  /** Everything the CLI printed. */
  const printed: string[] = [];

  beforeAll(async () => {
    s3 = await S3Server.start([BUCKET, 'other-bucket']);
    rig = await Rig.create();
    prefix = `runs/${rig.id}`;
    Object.assign(rig.env, s3.env(`file://${rig.backupDir},s3://${BUCKET}/${prefix}?forcePathStyle=true`), {
      AWS_SECRET_ACCESS_KEY: SECRET,
      LOG_LEVEL: 'debug',
      // Every host that shares the bucket holds the same key (docs/backups.md), or none takes the others' backups.
      BACKUP_SIGNING_KEY: SIGNING_KEY.toString('hex'),
    });
    target = await sourceAndTarget(rig);
    source = await fingerprint(rig.db('source'));
    rig.setEnv('fresh', rig.db('fresh'));
    secondDir = mkdtempSync(path.join(os.tmpdir(), 'dbops-second-host-'));
    secondHost = { BACKUP_DIR: secondDir, BACKUP_STORES: `s3://${BUCKET}/${prefix}?forcePathStyle=true` };
    backupWorker = await rig.startWorker('backup');
    restoreWorker = await rig.startWorker('restore', secondHost); // restores run on the second host
    const cli = rig.cli.bind(rig);
    rig.cli = async (args, extra) => {
      const result = await cli(args, extra);
      printed.push(result.stdout, result.stderr);
      return result;
    };
  });
  afterAll(async () => {
    await rig?.cleanup();
    await s3?.stop();
    rmSync(secondDir, { recursive: true, force: true });
  });

  const manifestKeys = async () =>
    (await s3.keys(BUCKET, `${prefix}/`)).filter((key) => /^[^/]+\.json$/.test(key.slice(prefix.length + 1)));

  async function backup(...extra: string[]) {
    const run = await rig.cli(['backup', '--env', 'source', '--wait', '--json', ...extra]);
    expect(run.exitCode, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as {
      backupId: string;
      path: string;
      sha256: string;
      sizeBytes: number;
      stores: string[];
    };
  }

  it('streams one dump into the directory and the bucket at once, and publishes it in both', async () => {
    const made = await backup();
    expect(made.stores.sort()).toEqual(['file', 's3']);
    expect(path.dirname(made.path)).toBe(rig.backupDir);
    const object = await s3.get(BUCKET, `${prefix}/${made.backupId}.dump`);
    expect(object.length).toBe(made.sizeBytes);
    expect(createHash('sha256').update(object).digest('hex')).toBe(made.sha256);
    expect(readFileSync(made.path).equals(object)).toBe(true);
    const manifest = JSON.parse((await s3.get(BUCKET, `${prefix}/${made.backupId}.json`)).toString());
    expect(manifest).toMatchObject({ id: made.backupId, sha256: made.sha256 });
    expect(manifest.stores.sort()).toEqual(['file', 's3']);
    // Nothing left of the upload's bookkeeping, no secret in what was stored.
    expect((await s3.keys(BUCKET, `${prefix}/.partial/`)).length).toBe(0);
    expect(JSON.stringify(manifest)).not.toContain('S3RVER');

    const listed = await rig.cli(['backups', 'list']);
    expect(listed.stdout.split('\n').find((line) => line.startsWith(made.backupId))).toMatch(/ file,s3$/);
  });

  it('on a second host with only the bucket: lists every backup and restores one, custom and directory format alike', async () => {
    const custom = await backup();
    const directory = await backup('--format', 'directory', '--jobs', '2');
    const listed = await rig.cli(['backups', 'list', '--json'], secondHost);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const held = JSON.parse(listed.stdout) as { id: string; heldBy: string[] }[];
    expect(held.map((item) => item.id)).toEqual(expect.arrayContaining([custom.backupId, directory.backupId]));
    expect(held.every((item) => item.heldBy.join() === 's3')).toBe(true);

    for (const made of [custom, directory]) {
      const restore = await rig.cli([
        'restore',
        '--env',
        'fresh',
        '--backup',
        made.backupId,
        '--store',
        's3',
        '--drop-previous',
        '--wait',
        '--json',
      ]);
      expect(restore.exitCode, restore.stderr).toBe(0);
      expect(await fingerprint(rig.db('fresh'))).toEqual(source);
    }
    // The second host downloaded the directory archive into its work area, and removed it after.
    expect(readdirSync(secondDir).filter((name) => !name.startsWith('.'))).toEqual([]);
    expect(existsSync(path.join(secondDir, '.partial')) ? readdirSync(path.join(secondDir, '.partial')) : []).toEqual(
      [],
    );
  });

  it('refuses a damaged object in the bucket before the target is touched', async () => {
    const made = await backup();
    const key = `${prefix}/${made.backupId}.dump`;
    const bytes = await s3.get(BUCKET, key);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await s3.put(BUCKET, key, bytes);
    const restore = await rig.cli(['restore', '--env', 'target', '--backup', made.backupId, '--store', 's3', '--wait']);
    expect(restore.exitCode).toBe(1);
    expect(restore.stderr).toMatch(/damaged: sha256 does not match the manifest; target was not touched/);
    expect(await fingerprint(rig.db('target'))).toEqual(target);
    // The directory's copy is whole (checked here, on the first host: the restore worker's host has no directory store).
    const verify = await rig.cli(['backups', 'verify', made.backupId, '--store', 'file', '--local']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    const damaged = await rig.cli(['backups', 'verify', made.backupId, '--store', 's3', '--wait']);
    expect(damaged.exitCode).toBe(1);
    expect(damaged.stderr).toMatch(/is damaged: sha256 does not match the manifest/);
  });

  it('verifies in the bucket, and applies retention to each store on its own', async () => {
    await backup(); // at least one older backup, for retention to prune
    const newest = await backup();
    const verify = await rig.cli(['backups', 'verify', newest.backupId, '--store', 's3', '--full', '--wait', '--json']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ backupId: newest.backupId, level: 'full', ok: true });
    // Recorded in the manifest of every store the verifying host knows: the restore worker's host knows the bucket only.
    expect(
      JSON.parse((await s3.get(BUCKET, `${prefix}/${newest.backupId}.json`)).toString()).verifications.at(-1),
    ).toMatchObject({ level: 'full', ok: true });
    expect(
      JSON.parse(readFileSync(path.join(rig.backupDir, `${newest.backupId}.json`), 'utf8')).verifications.at(-1),
    ).toMatchObject({ level: 'toc' });
    // On the first host, which knows both stores, a check is recorded in both.
    const both = await rig.cli(['backups', 'verify', newest.backupId, '--local']);
    expect(both.exitCode, both.stderr).toBe(0);
    const lastChecks = [
      readFileSync(path.join(rig.backupDir, `${newest.backupId}.json`), 'utf8'),
      (await s3.get(BUCKET, `${prefix}/${newest.backupId}.json`)).toString(),
    ].map((text) =>
      (JSON.parse(text) as { verifications: { level: string; ok: boolean; jobId: string }[] }).verifications.at(-1)!,
    );
    expect(lastChecks[0]).toMatchObject({ level: 'toc', ok: true });
    expect(lastChecks[1]).toEqual(lastChecks[0]); // the same check, recorded in both

    const fileBefore = readdirSync(rig.backupDir).filter((name) => name.endsWith('.json')).length;
    const prune = await rig.cli([
      'backups',
      'prune',
      '--env',
      'source',
      '--store',
      's3',
      '--policy',
      'last=1',
      '--wait',
      '--json',
    ]);
    expect(prune.exitCode, prune.stderr).toBe(0);
    const result = JSON.parse(prune.stdout) as {
      environments: { store: string; kept: { id: string }[]; pruned: { id: string }[] }[];
    };
    expect(result.environments.map((env) => env.store)).toEqual(['s3']);
    expect(result.environments[0]!.kept.map((item) => item.id)).toEqual([newest.backupId]);
    expect(result.environments[0]!.pruned.length).toBeGreaterThan(0);
    expect(await manifestKeys()).toEqual([`${prefix}/${newest.backupId}.json`]);
    // Pruned archives went with their manifests; the file store kept all of its own.
    expect(
      (await s3.keys(BUCKET, `${prefix}/`))
        .filter((key) => !key.includes('/.'))
        .filter((key) => !key.startsWith(`${prefix}/${newest.backupId}`)),
    ).toEqual([]);
    expect(readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'))).toHaveLength(fileBefore);
  });

  it('downloads an archive from the bucket, by the CLI and the HTTP API, with its sha256 checked', async () => {
    const made = await backup();
    const out = path.join(secondDir, 'downloaded.dump');
    const run = await rig.cli(['backups', 'download', made.backupId, '--out', out, '--store', 's3'], secondHost);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(made.sha256);
    const again = await rig.cli(['backups', 'download', made.backupId, '--out', out], secondHost);
    expect(again.exitCode).toBe(2);
    expect(again.stderr.trim()).toBe(`manage-db: ${out} exists already: name a new file`);
    rmSync(out);

    // The HTTP API on the second host serves it from the bucket, with its sha256.
    const token = 'a-token-of-sixteen-or-more';
    const server = await startTestServer(rig, { ...secondHost, API_TOKEN: token });
    try {
      const response = await fetch(`${server.url}/api/v1/backups/${made.backupId}/archive`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('x-checksum-sha256')).toBe(made.sha256);
      expect(response.headers.get('x-backup-store')).toBe('s3');
      expect(
        createHash('sha256')
          .update(Buffer.from(await response.arrayBuffer()))
          .digest('hex'),
      ).toBe(made.sha256);
      const listed = (await (
        await fetch(`${server.url}/api/v1/backups?env=source`, { headers: { authorization: `Bearer ${token}` } })
      ).json()) as {
        id: string;
        heldBy: string[];
      }[];
      expect(listed.find((item) => item.id === made.backupId)?.heldBy).toEqual(['s3']);
    } finally {
      await server.close();
    }
  });

  it('sync copies into a store added later what it lacks, checked on the way', async () => {
    // Made while the directory was the only store.
    const run = await rig.cli(['backup', '--env', 'source', '--local', '--json'], {
      BACKUP_STORES: `file://${rig.backupDir}`,
    });
    expect(run.exitCode, run.stderr).toBe(0);
    const older = JSON.parse(run.stdout) as { backupId: string };
    expect(await manifestKeys()).not.toContain(`${prefix}/${older.backupId}.json`);

    const sync = await rig.cli(['backups', 'sync', '--to', 's3', '--json']);
    expect(sync.exitCode, sync.stderr).toBe(0);
    expect(JSON.parse(sync.stdout)).toContainEqual({ id: older.backupId, from: 'file', to: 's3', ok: true });
    expect(await manifestKeys()).toContain(`${prefix}/${older.backupId}.json`);
    const verify = await rig.cli(['backups', 'verify', older.backupId, '--store', 's3', '--wait']);
    expect(verify.exitCode, verify.stderr).toBe(0);
    const nothing = await rig.cli(['backups', 'sync', '--to', 's3']);
    expect(nothing.stdout.trim()).toBe('every store holds every backup already');
  });

  it('bad credentials or a missing bucket: the backup fails in one clear line and nothing is published anywhere', async () => {
    const before = readdirSync(rig.backupDir)
      .filter((name) => name.endsWith('.json'))
      .sort();
    for (const [extra, reason] of [
      [
        { AWS_ACCESS_KEY_ID: 'NOT-A-KEY', AWS_SECRET_ACCESS_KEY: 'not-the-secret' },
        /s3 store \(s3:\/\/dbops-test\/runs\/\w+\): .*: InvalidAccessKeyId: /,
      ],
      [
        { BACKUP_STORES: `file://${rig.backupDir},s3://no-such-bucket/x?forcePathStyle=true` },
        /s3 store \(s3:\/\/no-such-bucket\/x\): .*: NoSuchBucket: /,
      ],
    ] as const) {
      const run = await rig.cli(['backup', '--env', 'source', '--local', '--json'], extra);
      expect(run.exitCode).toBe(1);
      // One line, after --local's own notice.
      expect(
        run.stderr
          .trim()
          .split('\n')
          .filter((line) => !line.startsWith('running backup locally')),
      ).toHaveLength(1);
      expect(run.stderr).toMatch(reason);
      expect(run.stderr).not.toContain('not-the-secret');
    }
    expect(
      readdirSync(rig.backupDir)
        .filter((name) => name.endsWith('.json'))
        .sort(),
    ).toEqual(before);
    expect(readdirSync(path.join(rig.backupDir, '.partial'))).toEqual([]);
  });

  it('a worker killed mid-upload leaves no backup; the next worker removes the unfinished upload and the retried job completes', async () => {
    // A database big enough for the upload to be caught in flight: 15 MiB of incompressible rows.
    await sql('postgres', `CREATE DATABASE "${rig.db('big')}"`);
    await sql(
      rig.db('big'),
      "CREATE TABLE blob AS SELECT i, decode(md5(i::text) || md5((i * 7)::text), 'hex') || gen_random_uuid()::text::bytea AS b FROM generate_series(1, 300000) i",
    );
    rig.setEnv('big', rig.db('big'));
    const only = { BACKUP_STORES: `s3://${BUCKET}/${prefix}-big?forcePathStyle=true`, BACKUP_DIR: secondDir };
    backupWorker.process.kill('SIGTERM'); // this test's workers alone take its job
    await backupWorker.exited;
    const worker = await rig.startWorker('backup', only);
    const producer = rig.producer(only);
    const job = await producer.enqueue('backup', { env: 'big', compress: 0 });
    await waitFor(
      'the upload to have begun',
      async () => (await s3.keys(BUCKET, `${prefix}-big/.partial/`)).length > 0,
      30_000,
    );
    worker.process.kill('SIGKILL');
    await worker.exited;
    expect(
      (await s3.keys(BUCKET, `${prefix}-big/`)).filter((key) => key.endsWith('.json') && !key.includes('/.')),
    ).toEqual([]);

    const next = await rig.startWorker('backup', only);
    const outcome = await producer.wait(job.id);
    if (outcome.state !== 'completed') throw new Error(`the retried backup did not complete: ${outcome.failedReason}`);
    const result = outcome.result as { backupId: string; stores: string[] };
    expect(result.stores).toEqual(['s3']);
    // One backup, whole; no marker, no archive without its manifest.
    const keys = await s3.keys(BUCKET, `${prefix}-big/`);
    expect(keys).toEqual([`${prefix}-big/${result.backupId}.dump`, `${prefix}-big/${result.backupId}.json`]);
    const verify = await rig.cli(['backups', 'verify', result.backupId, '--local'], only);
    expect(verify.exitCode, verify.stderr).toBe(0);
    // A directory-format backup into the bucket alone: read back on this host, then uploaded file by file.
    const directory = await rig.cli(
      ['backup', '--env', 'big', '--format', 'directory', '--jobs', '2', '--local', '--json'],
      only,
    );
    expect(directory.exitCode, directory.stderr).toBe(0);
    const made = JSON.parse(directory.stdout) as { backupId: string; stores: string[] };
    expect(made.stores).toEqual(['s3']);
    expect((await s3.keys(BUCKET, `${prefix}-big/${made.backupId}.d/`)).length).toBeGreaterThan(1);
    const checked = await rig.cli(['backups', 'verify', made.backupId, '--local'], only);
    expect(checked.exitCode, checked.stderr).toBe(0);
    next.process.kill('SIGTERM');
    await next.exited;
  });

  it("the S3 secret is nowhere: not in logs, CLI output, Redis, manifests, job data or the processes' arguments", async () => {
    const redis = new Redis(REDIS_URL);
    const stored: string[] = [];
    try {
      for (const key of await rig.redisKeys()) {
        const type = await redis.type(key);
        if (type === 'hash') stored.push(JSON.stringify(await redis.hgetall(key)));
        else if (type === 'list') stored.push(JSON.stringify(await redis.lrange(key, 0, -1)));
        else if (type === 'stream') stored.push(JSON.stringify(await redis.xrange(key, '-', '+')));
        else if (type === 'string') stored.push(String(await redis.get(key)));
      }
    } finally {
      redis.disconnect();
    }
    for (const key of await s3.keys(BUCKET))
      if (key.endsWith('.json')) stored.push((await s3.get(BUCKET, key)).toString());
    for (const name of readdirSync(rig.backupDir).filter((entry) => entry.endsWith('.json')))
      stored.push(readFileSync(path.join(rig.backupDir, name), 'utf8'));
    const ps = await execa('ps', ['-eo', 'args']);
    const everything = [...stored, ...printed, backupWorker.output(), restoreWorker.output(), ps.stdout].join('\n');
    expect(stored.length).toBeGreaterThan(10);
    expect(printed.join('').length).toBeGreaterThan(1000);
    expect(everything).not.toContain(SECRET);
  });

  it("recovery removes a dead job's unpublished upload, and leaves another prefix's and a published backup alone", async () => {
    const store = `${prefix}-recovery`;
    const only = { BACKUP_STORES: `s3://${BUCKET}/${store}?forcePathStyle=true`, BACKUP_DIR: secondDir };
    // As dbops' own jobs leave them: signed.
    const marker = (queuePrefix: string, id: string, archive: string) =>
      JSON.stringify(
        new Seal(SIGNING_KEY, 'test').sign('upload-marker', {
          job: { prefix: queuePrefix, queue: 'backup', id },
          archive,
          pid: 1,
          host: 'elsewhere',
          backupId: archive.slice(0, -5),
        }),
      );
    // A job of this prefix that is not active (never was): its archive has no manifest.
    await s3.put(
      BUCKET,
      `${store}/.partial/${rig.prefix}/backup/77.json`,
      marker(rig.prefix, '77', 'source-dead-000000.dump'),
    );
    await s3.put(BUCKET, `${store}/source-dead-000000.dump`, 'half an archive');
    // Another deployment's (another QUEUE_PREFIX) work in progress: not this worker's to judge.
    await s3.put(
      BUCKET,
      `${store}/.partial/someone-else/backup/78.json`,
      marker('someone-else', '78', 'source-theirs-000000.dump'),
    );
    await s3.put(BUCKET, `${store}/source-theirs-000000.dump`, 'their upload');
    const worker = await rig.startWorker('backup', only);
    await waitFor(
      'recovery',
      async () => worker.output().includes('removed the unfinished upload of a dead worker'),
      20_000,
    );
    expect(await s3.keys(BUCKET, `${store}/`)).toEqual([
      `${store}/.partial/someone-else/backup/78.json`,
      `${store}/source-theirs-000000.dump`,
    ]);
    worker.process.kill('SIGTERM');
    await worker.exited;
  });

  it('restore --table brings one table back from a backup that only the bucket holds, on a host that has only the bucket', async () => {
    // Workers of their own: the tests before stop theirs. The restore worker's host has only the bucket.
    const workers = [await rig.startWorker('backup'), await rig.startWorker('restore', secondHost)];
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const run = await rig.cli([
      'restore',
      '--env',
      'source',
      '--backup',
      backupId,
      '--table',
      'public.film',
      '--suffix',
      '_from_s3',
      '--wait',
      '--json',
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ tables: [{ table: 'public.film', rows: 1000 }] });
    expect(await sql(rig.db('source'), 'SELECT count(*)::int AS n FROM film_from_s3')).toEqual([{ n: 1000 }]);
    await sql(rig.db('source'), 'DROP TABLE film_from_s3');
    for (const worker of workers) worker.process.kill('SIGTERM');
    await Promise.all(workers.map((worker) => worker.exited));
  });
});
