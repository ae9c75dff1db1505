import path from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config.js';
import type { HistoryDraft } from '../src/queue/history-entry.js';
import { History } from '../src/queue/history.js';
import type { BenchRow } from './s3.js';
import { median, redisUrl } from './lib.js';

/*
 * The job history's search on 100,000 entries (goal: a filtered page in ≤ 100 ms): filters that match
 * many entries (a page fills at once) and few or none (the whole history is read), in-process and as
 * the CLI's wall time (its start included); the chain check over all of it.
 */

const ENTRIES = Number(process.env.BENCH_HISTORY_ENTRIES ?? 100_000);
const ROUNDS = 11;
const ENVS = ['production', 'staging', 'dev', 'qa'];
const TYPES = ['backup', 'restore', 'copy', 'migrate', 'maintenance', 'triggers'];
const ROOT = path.resolve(import.meta.dirname, '../..');

export function benchDraft(i: number, at: number): HistoryDraft {
  const env = ENVS[i % ENVS.length]!;
  const type = TYPES[i % TYPES.length]!;
  const state = i % 97 === 0 ? 'failed' : i % 101 === 0 ? 'cancelled' : 'completed';
  const id = `${type}-20261201t000000z-${i.toString(16).padStart(12, '0')}`;
  return {
    at: new Date(at).toISOString(),
    id,
    reference: `${type}/${id}`,
    type,
    env,
    envs: [env],
    state,
    requestedBy: `user${i % 40}@host${i % 3} (CLI)`,
    requester: { via: 'cli', name: `user${i % 40}@host${i % 3}` },
    requestedAt: new Date(at - 2_000).toISOString(),
    startedAt: new Date(at - 1_500).toISOString(),
    durationMs: 1_500,
    attempts: 1,
    payload: { env, ...(type === 'restore' ? { latest: env } : {}) },
    outcome:
      state === 'failed' ? `could not connect to ${env}` : `${type} of ${env} done (${(i * 7919) % 100_000} bytes)`,
    facts: type === 'backup' ? { backupId: `${env}-${i}`, sizeBytes: (i * 7919) % 100_000 } : {},
  };
}

export async function benchHistory(): Promise<BenchRow[]> {
  const prefix = `bench-history-${process.pid}`;
  const env = { REDIS_URL: redisUrl, QUEUE_PREFIX: prefix, LOG_LEVEL: 'warn' };
  const connection = new Redis(redisUrl);
  const history = new History(connection, loadConfig(env));
  try {
    const start = Date.now() - ENTRIES * 60_000;
    const filling = performance.now();
    for (let i = 1; i <= ENTRIES; i += 1) await history.append(benchDraft(i, start + i * 60_000));
    const appendMs = (performance.now() - filling) / ENTRIES;
    const rows: BenchRow[] = [
      [`history: append one entry (${ENTRIES.toLocaleString('en')} filled)`, `${appendMs.toFixed(2)} ms`, '', '', ''],
    ];
    const since = new Date(start + (ENTRIES - 1_440) * 60_000).toISOString(); // the last day
    const middle = new Date(start + (ENTRIES / 2) * 60_000).toISOString();
    const cases: [string, Record<string, string>][] = [
      ['newest page, no filter', {}],
      ['--env production (1 in 4)', { env: 'production' }],
      ['--type restore --env staging --state failed (few)', { type: 'restore', env: 'staging', state: 'failed' }],
      ['--search user7@host1 (1 in 120)', { search: 'user7@host1' }],
      ['--search matching nothing (reads all)', { search: 'no such text anywhere' }],
      ['--env nowhere (reads all facets)', { env: 'nowhere' }],
      ['--since 1 day', { since }],
      ['--until the middle', { until: middle }],
    ];
    const { parseJobFilter } = await import('../src/queue/job-filter.js');
    const { historyFilterOf } = await import('../src/queue/history-entry.js');
    for (const [name, words] of cases) {
      const filter = historyFilterOf(parseJobFilter(words));
      const times: number[] = [];
      let found = 0;
      for (let round = 0; round < ROUNDS; round += 1) {
        const t0 = performance.now();
        found = (await history.search(filter)).length;
        times.push(performance.now() - t0);
      }
      rows.push([`history search: ${name} → ${found}`, `${median(times).toFixed(1)} ms`, '', '', '≤ 100 ms']);
    }
    const cliTimes: number[] = [];
    for (let round = 0; round < 5; round += 1) {
      const t0 = performance.now();
      await execa('node', [path.join(ROOT, 'bin/manage-db.cjs'), 'history', '--search', 'no such text anywhere'], {
        env: { ...process.env, ...env },
      });
      cliTimes.push(performance.now() - t0);
    }
    rows.push(['manage-db history --search (reads all), wall', `${median(cliTimes).toFixed(0)} ms`, '', '', '']);
    const t0 = performance.now();
    const report = await history.verify();
    rows.push([
      `history verify (${report.entries.toLocaleString('en')} entries, ${report.ok ? 'holds' : 'BROKEN'})`,
      `${(performance.now() - t0).toFixed(0)} ms`,
      '',
      '',
      '',
    ]);
    let bytes = 0;
    let cursor = '0';
    do {
      const [next, keys] = await connection.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
      cursor = next;
      for (const key of keys) bytes += Number(await connection.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
    } while (cursor !== '0');
    rows.push(['Redis memory of the history', `${(bytes / 2 ** 20).toFixed(0)} MiB`, '', '', '']);
    return rows;
  } finally {
    let cursor = '0';
    do {
      const [next, keys] = await connection.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
      cursor = next;
      if (keys.length) await connection.del(...keys);
    } while (cursor !== '0');
    connection.disconnect();
  }
}
