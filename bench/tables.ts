import path from 'node:path';
import { execa } from 'execa';
import type { BenchRow } from './s3.js';
import { admin, forkWorker, median, stopWorkers, timed } from './lib.js';

/*
 * Issue 28's two measures, as a user meets them (`manage-db … --wait`, the CLI's wall time):
 *   restore --table --suffix from a backup of the bench database, against what a person does by hand:
 *     createdb scratch; pg_restore -t TABLE -d scratch; pg_dump -t TABLE scratch | psql target (renamed)
 *   copy --subset (one row in ten of the big table) against the full copy.
 */

const CLI = path.resolve(import.meta.dirname, '../../bin/manage-db.cjs');

async function raw(command: string): Promise<void> {
  await execa('bash', ['-o', 'pipefail', '-c', command]);
}

export async function benchTables(
  env: NodeJS.ProcessEnv,
  source: string,
  copyTarget: string,
  rounds: number,
): Promise<BenchRow[]> {
  const workers = ['backup', 'restore', 'copy'].map((type) => forkWorker(type, env));
  const cli = (args: string[]) => execa('node', [CLI, ...args, '--wait', '--json'], { env });
  const rows: BenchRow[] = [];
  try {
    const backup = JSON.parse((await cli(['backup', '--env', 'bench'])).stdout) as { backupId: string; path: string };
    for (const table of ['accounts', 'events']) {
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let round = 0; round < rounds; round += 1) {
        ours.push(
          await timed(async () => {
            const result = JSON.parse(
              (
                await cli([
                  'restore',
                  '--env',
                  'bench',
                  '--backup',
                  backup.backupId,
                  '--table',
                  `public.${table}`,
                  '--suffix',
                  '_back',
                ])
              ).stdout,
            ) as { durationMs: number; steps: { step: string; ms: number }[] };
            process.stderr.write(
              `${table} restore: ${result.durationMs} ms in the job: ${result.steps.map((one) => `${one.step} ${one.ms} ms`).join(', ')}\n`,
            );
          }),
        );
        await admin(source, `DROP TABLE ${table}_back`);
        theirs.push(
          await timed(() =>
            raw(
              `set -e; createdb -h 127.0.0.1 -U postgres bench_scratch
               pg_restore -h 127.0.0.1 -U postgres --no-owner -t ${table} -d bench_scratch '${backup.path}'
               psql -q -h 127.0.0.1 -U postgres -d bench_scratch -c 'ALTER TABLE ${table} RENAME TO ${table}_back'
               pg_dump -h 127.0.0.1 -U postgres -t ${table}_back bench_scratch | psql -q -h 127.0.0.1 -U postgres -d ${source} >/dev/null
               dropdb -h 127.0.0.1 -U postgres bench_scratch`,
            ),
          ),
        );
        await admin(source, `DROP TABLE ${table}_back`);
      }
      const [a, b] = [median(ours), median(theirs)];
      rows.push([
        `restore --table public.${table} --suffix (CLI wall)`,
        `${a.toFixed(2)} s`,
        `${b.toFixed(2)} s (pg_restore -t into scratch, pg_dump | psql back)`,
        (a / b).toFixed(3),
        '≤ 1.10',
      ]);
    }
    const full: number[] = [];
    const subset: number[] = [];
    const none: number[] = [];
    const newest: number[] = [];
    const copy = (...subsetRule: string[]) =>
      timed(() =>
        cli([
          'copy',
          '--from',
          'bench',
          '--to',
          'benchcopy',
          '--drop-previous',
          ...subsetRule.flatMap((rule) => ['--subset', rule]),
        ]),
      );
    // The newest 5, 20 and 40 % too: whether the time beyond the fixed costs grows with the rows moved.
    const shares = [5, 20, 40];
    const series = new Map<number, number[]>(shares.map((share) => [share, []]));
    for (let round = 0; round < rounds; round += 1) {
      full.push(await copy());
      subset.push(await copy('public.events:id % 10 = 0'));
      none.push(await copy('public.events:false'));
      newest.push(await copy('public.events:10% order by id desc'));
      for (const share of shares) series.get(share)!.push(await copy(`public.events:${share}% order by id desc`));
    }
    const [s, f, z, n] = [median(subset), median(full), median(none), median(newest)];
    rows.push([
      "copy --subset 'public.events:id % 10 = 0' (CLI wall)",
      `${s.toFixed(2)} s`,
      `${f.toFixed(2)} s (the full copy)`,
      (s / f).toFixed(3),
      '≈ 0.10 + fixed costs',
    ]);
    // What a subset costs beyond a copy of no events: the share of the full copy's extra time it takes.
    rows.push([
      "copy --subset 'public.events:false' (the fixed costs)",
      `${z.toFixed(2)} s`,
      `${f.toFixed(2)} s (the full copy)`,
      `${((s - z) / (f - z)).toFixed(3)} of the time beyond them`,
      '≈ 0.10 (rows moved)',
    ]);
    rows.push([
      "copy --subset 'public.events:10% order by id desc' (the newest tenth, CLI wall)",
      `${n.toFixed(2)} s`,
      `${f.toFixed(2)} s (the full copy)`,
      `${(n / f).toFixed(3)}; ${((n - z) / (f - z)).toFixed(3)} of the time beyond the fixed costs`,
      '≈ 0.10 (rows moved)',
    ]);
    // Time beyond the fixed costs per share of the events moved: flat if it is in proportion to them.
    const beyond = new Map<number, number>([
      [10, n - z],
      ...shares.map((share): [number, number] => [share, median(series.get(share)!) - z]),
    ]);
    const perTenth = [...beyond]
      .sort((a, b) => a[0] - b[0])
      .map(([share, seconds]) => `${share} %: ${((seconds * 10) / share).toFixed(2)} s`);
    rows.push([
      'copy --subset of the newest 5/10/20/40 % of events: time beyond the fixed costs per tenth of them',
      perTenth.join(', '),
      `${((f - z) / 10).toFixed(2)} s (a tenth of the full copy's)`,
      `${(beyond.get(40)! / beyond.get(10)!).toFixed(2)} (40 % against 10 %)`,
      '≈ 4 (in proportion)',
    ]);
    return rows;
  } finally {
    await stopWorkers(workers);
    await admin('postgres', `DROP DATABASE IF EXISTS ${copyTarget} WITH (FORCE)`).catch(() => undefined);
    await admin('postgres', 'DROP DATABASE IF EXISTS bench_scratch WITH (FORCE)').catch(() => undefined);
  }
}
