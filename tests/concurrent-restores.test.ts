import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreResult } from '../src/operations/restore.js';
import { databasesLike, fingerprint, loadPagila, shadowDatabasesFor } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

describe('one destructive job per database at a time', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    rig.setEnv('target', rig.db('target'));
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    await rig.startWorker('restore');
  });
  afterAll(async () => rig?.cleanup());

  it('two restores into one database, enqueued at once on two workers, both succeed one after the other', async () => {
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode).toBe(0);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };

    const producer = rig.producer();
    const jobs = await Promise.all([
      producer.enqueue('restore', { env: 'target', backup: backupId }),
      producer.enqueue('restore', { env: 'target', backup: backupId }),
    ]);
    const outcomes = await Promise.all(jobs.map((job) => producer.wait<'restore'>(job.id)));
    expect(outcomes.map((outcome) => outcome.state)).toEqual(['completed', 'completed']);

    // Both workers took a job (two processes, concurrency 1 each), yet the locked sections never overlap.
    const results = outcomes.map((outcome) => (outcome as { result: RestoreResult }).result);
    const [first, second] = [...results].sort((a, b) => a.lockAcquiredAt.localeCompare(b.lockAcquiredAt));
    expect(Date.parse(second!.lockAcquiredAt)).toBeGreaterThanOrEqual(Date.parse(first!.lockReleasedAt));
    expect(second!.lockWaitMs).toBeGreaterThan(0);
    // Where each job's seconds went, step by step: the waiting one's wait is its lock step.
    for (const result of results) {
      expect(result.steps.map((item) => item.step)).toEqual([
        'choose the backup',
        'open the archive',
        "the target server's version and schema",
        'lock',
        'checks',
        'create shadow',
        "read the archive's table of contents",
        'pg_restore',
        'sha256 of the archive (what pg_restore did not overlap)',
        'identity',
        'swap',
      ]);
      const total = result.steps.reduce((sum, item) => sum + item.ms, 0);
      expect(total).toBeLessThanOrEqual(result.durationMs);
      expect(result.steps.find((item) => item.step === 'lock')!.ms).toBeGreaterThanOrEqual(result.lockWaitMs);
    }
    const started = await Promise.all(jobs.map(async (job) => (await producer.getJob(job.id))!.processedOn!));
    const finished = await Promise.all(jobs.map(async (job) => (await producer.getJob(job.id))!.finishedOn!));
    expect(Math.max(...started)).toBeLessThan(Math.min(...finished)); // they really ran at the same time

    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await databasesLike(`${rig.db('target')}_prev_%`)).toHaveLength(1); // the first created it, the second replaced it
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
  });
});
