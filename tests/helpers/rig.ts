import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config.js';
import { Producer } from '../../src/queue/producer.js';
import {
  databasesLike,
  dropDatabase,
  fingerprint,
  loadPagila,
  shadowDatabasesFor,
  sql,
  type Fingerprint,
} from './pg.js';
import { REDIS_URL, pgUrl } from './services.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

export interface WorkerProcess {
  pid: number;
  process: ResultPromise;
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  exited: Promise<number | string>;
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * One test's private world: its own QUEUE_PREFIX, BACKUP_DIR and databases (all named after its
 * prefix), real worker processes and real CLI runs, and a cleanup that removes all of it.
 */
export class Rig {
  readonly id = randomBytes(4).toString('hex');
  readonly prefix = `test-${this.id}`;
  readonly dbPrefix = `t_${this.id}`;
  backupDir = '';
  readonly env: Record<string, string> = {};
  private readonly workerProcesses: WorkerProcess[] = [];
  private readonly producers: Producer[] = [];

  static async create(extraEnv: Record<string, string> = {}): Promise<Rig> {
    const rig = new Rig();
    rig.backupDir = await mkdtemp(path.join(os.tmpdir(), `dbops-${rig.id}-`));
    Object.assign(rig.env, {
      REDIS_URL,
      QUEUE_PREFIX: rig.prefix,
      BACKUP_DIR: rig.backupDir,
      MIGRATIONS_ROOT: rig.backupDir, // the test's own folder: migrations live beside its backups
      LOG_LEVEL: 'info',
      PROTECTED_ENVS: 'none',
      JOB_BACKOFF_MS: '500',
      WORKER_LOCK_MS: '4000',
      WORKER_STALLED_INTERVAL_MS: '1000',
      ...extraEnv,
    });
    return rig;
  }

  db(name: string): string {
    return `${this.dbPrefix}_${name}`;
  }

  /** Declares environment `name` as database `database` (DATABASE_URL_<NAME>). */
  setEnv(name: string, database: string, password?: string): void {
    this.env[`DATABASE_URL_${name.toUpperCase().replace(/-/g, '_')}`] = pgUrl(database, password);
  }

  private processEnv(extra: Record<string, string> = {}): Record<string, string> {
    const base: Record<string, string> = {};
    for (const key of ['PATH', 'HOME', 'LANG', 'TMPDIR']) if (process.env[key]) base[key] = process.env[key]!;
    return { ...base, ...this.env, ...extra };
  }

  /** A worker process of `type`, once it says it is ready (`readyText`: what its log says then). */
  async startWorker(
    type: string,
    extra: Record<string, string> = {},
    readyText = '"msg":"worker ready"',
  ): Promise<WorkerProcess> {
    const child = execa('node', [path.join(ROOT, 'dist/workers/worker.js'), type], {
      env: this.processEnv(extra),
      extendEnv: false,
      reject: false,
      all: true,
      buffer: false,
    });
    let output = '';
    const ready = new Promise<void>((resolve, reject) => {
      child.all!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes(readyText)) resolve();
      });
      child.once('exit', () => reject(new Error(`worker ${type} exited before it was ready:\n${output}`)));
    });
    const exited = child.then((result) => result.signal ?? result.exitCode ?? -1);
    const worker: WorkerProcess = { pid: child.pid!, process: child, output: () => output, exited };
    this.workerProcesses.push(worker);
    await ready;
    return worker;
  }

  async cli(args: string[], extra: Record<string, string> = {}): Promise<CliResult> {
    const result = await execa('node', [path.join(ROOT, 'bin/manage-db.cjs'), ...args], {
      env: this.processEnv(extra),
      extendEnv: false,
      reject: false,
      timeout: 110_000,
    });
    return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
  }

  /** An in-process producer, configured as the CLI would be. */
  producer(extra: Record<string, string> = {}): Producer {
    const producer = new Producer(loadConfig({ ...this.env, ...extra }));
    this.producers.push(producer);
    return producer;
  }

  /** The test's keys, without the lock BullMQ's stalled-job check sets on its own timer. */
  async queueKeys(): Promise<string[]> {
    return (await this.redisKeys()).filter((key) => !key.endsWith(':stalled-check')).sort();
  }

  async redisKeys(): Promise<string[]> {
    const redis = new Redis(REDIS_URL);
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await redis.scan(cursor, 'MATCH', `${this.prefix}:*`, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      return keys;
    } finally {
      redis.disconnect();
    }
  }

  /** Every worker process this rig started. */
  workers(): WorkerProcess[] {
    return [...this.workerProcesses];
  }

  async stopWorkers(): Promise<void> {
    for (const worker of this.workerProcesses) {
      if (worker.process.exitCode === null && worker.process.signalCode === null) worker.process.kill('SIGKILL');
    }
    await Promise.all(this.workerProcesses.map((worker) => worker.exited));
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.producers.map((producer) => producer.close()));
    await this.stopWorkers();
    for (const name of [...(await databasesLike(`${this.dbPrefix}%`)), ...(await shadowDatabasesFor(this.dbPrefix))]) {
      await dropDatabase(name);
    }
    const keys = await this.redisKeys();
    if (keys.length > 0) {
      const redis = new Redis(REDIS_URL);
      for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
      redis.disconnect();
    }
    await rm(this.backupDir, { recursive: true, force: true });
  }
}

/**
 * The usual stage for destructive operations: Pagila as environment `source`, and environment `target`,
 * an existing database holding one small table that must survive every failure. Returns the
 * target's fingerprint.
 */
export async function sourceAndTarget(rig: Rig): Promise<Fingerprint> {
  await loadPagila(rig.db('source'));
  rig.setEnv('source', rig.db('source'));
  await sql('postgres', `CREATE DATABASE "${rig.db('target')}"`);
  await sql(
    rig.db('target'),
    "CREATE TABLE precious (id int PRIMARY KEY, note text); INSERT INTO precious VALUES (1, 'keep me')",
  );
  rig.setEnv('target', rig.db('target'));
  return fingerprint(rig.db('target'));
}
