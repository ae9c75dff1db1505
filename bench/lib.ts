import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import pg from 'pg';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const adminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export function urlFor(database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

export async function admin<T extends pg.QueryResultRow>(database: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: urlFor(database) });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/**
 * Before every timed step: PostgreSQL's dirty buffers flushed (CHECKPOINT), and the kernel's too
 * (sync), so that no step pays for the write-back of the files an earlier step wrote.
 */
export async function checkpoint(): Promise<void> {
  await admin('postgres', 'CHECKPOINT');
  await execa('sync');
}

export const median = (values: number[]) => percentile(values, 50);

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** A worker process of one type, like `npm run worker -- <type>`. */
export function forkWorker(type: string, env: NodeJS.ProcessEnv): ChildProcess {
  return fork(path.join(here, '..', 'workers', 'worker.js'), [type], {
    env,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
}

/** Stops worker processes and waits for them to exit (before their queues are obliterated, which a live worker would partly recreate). */
export async function stopWorkers(workers: ChildProcess[]): Promise<void> {
  await Promise.all(
    workers.map((worker) => {
      if (worker.exitCode !== null || worker.signalCode !== null) return Promise.resolve();
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.kill('SIGTERM');
      return exited;
    }),
  );
}

/** Peak resident memory of a process so far (VmHWM), in bytes. */
export function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/** Current resident memory of a process (VmRSS), in bytes. */
export function currentRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

export interface Row {
  measure: string;
  value: string;
  baseline: string;
  ratio: string;
  target: string;
}
