import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, loadPagila } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { REDIS_URL } from './helpers/services.js';

const PASSWORD = 'S3cr3t-Pa55-xyzzy';

/** Everything stored under the rig's prefix, whatever the key type, as text. */
async function redisContents(rig: Rig): Promise<string> {
  const redis = new Redis(REDIS_URL);
  const parts: string[] = [];
  try {
    for (const key of await rig.redisKeys()) {
      const type = await redis.type(key);
      if (type === 'string') parts.push(String(await redis.get(key)));
      else if (type === 'hash') parts.push(JSON.stringify(await redis.hgetall(key)));
      else if (type === 'list') parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
      else if (type === 'set') parts.push(JSON.stringify(await redis.smembers(key)));
      else if (type === 'zset') parts.push(JSON.stringify(await redis.zrange(key, 0, -1)));
      else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')));
      parts.push(key);
    }
  } finally {
    redis.disconnect();
  }
  return parts.join('\n');
}

describe('no database password leaves the process', () => {
  let rig: Rig;
  const outputs: string[] = [];

  beforeAll(async () => {
    rig = await Rig.create({ LOG_LEVEL: 'debug' });
    await loadPagila(rig.db('source'));
    // Trust authentication ignores the password, so the URLs work while still carrying one.
    rig.setEnv('source', rig.db('source'), PASSWORD);
    rig.setEnv('target', rig.db('target'), PASSWORD);
    rig.setEnv('broken', rig.db('missing'), PASSWORD);
  });
  afterAll(async () => rig?.cleanup());

  it('is not in Redis, worker logs, CLI output, job logs or manifests, even when jobs fail', async () => {
    const workers = [await rig.startWorker('backup'), await rig.startWorker('restore')];
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode).toBe(0);
    const { backupId } = JSON.parse(backup.stdout);
    const restore = await rig.cli(['restore', '--env', 'target', '--backup', backupId, '--wait', '--json']);
    expect(restore.exitCode).toBe(0);
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    const failing = await rig.cli(['backup', '--env', 'broken', '--wait']);
    expect(failing.exitCode).toBe(1);
    expect(failing.stderr).toContain(`database "${rig.db('missing')}" does not exist`);
    outputs.push(backup.stdout, backup.stderr, restore.stdout, restore.stderr, failing.stdout, failing.stderr);
    for (const args of [
      ['jobs', 'list', '--json'],
      ['backups', 'list', '--json'],
      ['jobs', 'show', backupId],
    ]) {
      const run = await rig.cli(args);
      outputs.push(run.stdout, run.stderr);
    }
    const jobs = JSON.parse((await rig.cli(['jobs', 'list', '--json'])).stdout) as { id: string }[];
    for (const job of jobs) {
      const run = await rig.cli(['jobs', 'show', job.id, '--json']);
      outputs.push(run.stdout);
    }
    for (const worker of workers) outputs.push(worker.output());

    const files = readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'));
    expect(files.length).toBeGreaterThan(0);
    const manifests = files.map((name) => readFileSync(path.join(rig.backupDir, name), 'utf8')).join('\n');
    const redis = await redisContents(rig);

    expect(redis).toContain('dumping contents of table'); // the job logs are in there…
    expect(outputs.join('\n')).toContain('"msg":"job started"'); // …and the worker logs in here
    for (const [where, text] of Object.entries({ redis, manifests, outputs: outputs.join('\n') })) {
      expect(text.includes(PASSWORD), `password found in ${where}`).toBe(false);
      expect(text.includes(`postgres:${PASSWORD}`), `credentials found in ${where}`).toBe(false);
    }
  });
});
