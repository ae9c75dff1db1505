import path from 'node:path';
import { execa } from 'execa';
import type { BenchRow } from './s3.js';
import { admin, checkpoint, forkWorker, median, stopWorkers, timed } from './lib.js';

/*
 * Issue 28's two measures, as a user meets them (`manage-db … --wait`, the CLI's wall time):
 *   restore --table --suffix from a backup of the bench database, against what a person does by hand:
 *     createdb scratch; pg_restore -t TABLE -d scratch; pg_dump -t TABLE scratch | psql target (renamed)
 *   copy --subset (one row in ten of the big table; the newest 5, 10, 20, 40 %) against the full copy,
 *   as the CLI's wall time and inside the job.
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
      const inJob: number[] = [];
      const theirs: number[] = [];
      for (let round = 0; round < rounds; round += 1) {
        await checkpoint();
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
            inJob.push(result.durationMs / 1000);
            process.stderr.write(
              `${table} restore: ${result.durationMs} ms in the job: ${result.steps.map((one) => `${one.step} ${one.ms} ms`).join(', ')}\n`,
            );
          }),
        );
        await admin(source, `DROP TABLE ${table}_back`);
        await checkpoint();
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
      rows.push([
        `restore --table public.${table} --suffix (in the job)`,
        `${median(inJob).toFixed(2)} s`,
        `${b.toFixed(2)} s (the same, by hand)`,
        (median(inJob) / b).toFixed(3),
        '',
      ]);
    }
    // Each copy timed as the CLI's wall and inside the job (its data step: `subset`, or `pg_dump |
    // pg_restore`), after a checkpoint, with the database it replaced dropped untimed afterwards.
    type Timing = { wall: number[]; job: number[] };
    const copy = async (times: Timing, ...subsetRule: string[]) => {
      await checkpoint();
      let result: { previousDatabase?: string; steps: { step: string; ms: number }[] } | undefined;
      times.wall.push(
        await timed(async () => {
          const run = await cli([
            'copy',
            '--from',
            'bench',
            '--to',
            'benchcopy',
            ...subsetRule.flatMap((rule) => ['--subset', rule]),
          ]);
          result = JSON.parse(run.stdout) as typeof result;
        }),
      );
      const data = result!.steps.find((one) => one.step === 'subset' || one.step === 'pg_dump | pg_restore');
      times.job.push(data!.ms / 1000);
      if (result!.previousDatabase)
        await admin('postgres', `DROP DATABASE IF EXISTS "${result!.previousDatabase}" WITH (FORCE)`);
    };
    const timing = (): Timing => ({ wall: [], job: [] });
    const [full, sample, none] = [timing(), timing(), timing()];
    // The newest 5, 10, 20 and 40 %: whether the time beyond the fixed costs grows with the rows moved.
    const shares = [5, 10, 20, 40];
    const newest = new Map<number, Timing>(shares.map((share) => [share, timing()]));
    for (let round = 0; round < rounds; round += 1) {
      await copy(full);
      await copy(sample, 'public.events:id % 10 = 0');
      await copy(none, 'public.events:false');
      for (const share of shares) await copy(newest.get(share)!, `public.events:${share}% order by id desc`);
    }
    for (const where of ['wall', 'job'] as const) {
      const label = where === 'wall' ? 'CLI wall' : 'in the job: its data step';
      const [s, f, z] = [median(sample[where]), median(full[where]), median(none[where])];
      const n = median(newest.get(10)![where]);
      rows.push([
        `copy --subset 'public.events:id % 10 = 0' (${label})`,
        `${s.toFixed(2)} s`,
        `${f.toFixed(2)} s (the full copy)`,
        `${(s / f).toFixed(3)}; ${((s - z) / (f - z)).toFixed(3)} of the time beyond the fixed costs`,
        '≈ 0.10 + a scan of the table (rows moved)',
      ]);
      rows.push([
        `copy --subset 'public.events:false' (the fixed costs, ${label})`,
        `${z.toFixed(2)} s`,
        `${f.toFixed(2)} s (the full copy)`,
        (z / f).toFixed(3),
        '',
      ]);
      rows.push([
        `copy --subset 'public.events:10% order by id desc' (the newest tenth, ${label})`,
        `${n.toFixed(2)} s`,
        `${f.toFixed(2)} s (the full copy)`,
        `${(n / f).toFixed(3)}; ${((n - z) / (f - z)).toFixed(3)} of the time beyond the fixed costs`,
        '≈ 0.10 (rows moved)',
      ]);
      // Time beyond the fixed costs per share of the events moved: flat if it is in proportion to them.
      const beyond = new Map(shares.map((share) => [share, median(newest.get(share)![where]) - z]));
      rows.push([
        `copy --subset of the newest 5/10/20/40 % of events: time beyond the fixed costs per tenth of them (${label})`,
        shares.map((share) => `${share} %: ${((beyond.get(share)! * 10) / share).toFixed(2)} s`).join(', '),
        `${((f - z) / 10).toFixed(2)} s (a tenth of the full copy's)`,
        `${(beyond.get(40)! / beyond.get(10)!).toFixed(2)} (40 % against 10 %)`,
        '≈ 4 (in proportion)',
      ]);
    }
    return rows;
  } finally {
    await stopWorkers(workers);
    await admin('postgres', `DROP DATABASE IF EXISTS ${copyTarget} WITH (FORCE)`).catch(() => undefined);
    await admin('postgres', 'DROP DATABASE IF EXISTS bench_scratch WITH (FORCE)').catch(() => undefined);
  }
}
