import { readdirSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sha256File } from '../src/backups/checksum.js';
import type { BackupResult } from '../src/operations/backup.js';
import { lockTable, toolProcesses, toolSessions } from './helpers/blocker.js';
import { loadPagila } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

describe('workers that die, stop or are told to cancel', () => {
  let rig: Rig;
  let database: string;
  const started: WorkerProcess[] = [];

  beforeAll(async () => {
    rig = await Rig.create();
    database = rig.db('source');
    await loadPagila(database);
    rig.setEnv('source', database);
  });
  afterEach(async () => {
    for (const worker of started.splice(0)) {
      worker.process.kill('SIGKILL');
      await worker.exited;
    }
  });
  afterAll(async () => rig?.cleanup());

  async function worker(): Promise<WorkerProcess> {
    const process = await rig.startWorker('backup');
    started.push(process);
    return process;
  }

  /** Enqueues a backup and waits until its pg_dump is running, held up by a table lock. */
  async function backupInFlight() {
    const blocker = await lockTable(database, 'public.actor');
    const producer = rig.producer();
    const job = await producer.enqueue('backup', { env: 'source' });
    await waitFor('pg_dump to wait on the table lock', async () =>
      (await toolSessions(database)).some((session) => session.waiting),
    );
    return { blocker, producer, job };
  }

  /** The backup jobs with work files on disk (.partial/<prefix>/<queue>/<job id>). */
  function partials(): string[] {
    try {
      return readdirSync(path.join(rig.backupDir, '.partial', rig.prefix, 'backup'));
    } catch {
      return [];
    }
  }

  function manifests(): string[] {
    return readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'));
  }

  it('SIGKILL mid-backup: pg_dump dies with the worker, another worker completes the job with a valid backup', async () => {
    const first = await worker();
    const { blocker, producer, job } = await backupInFlight();
    const outcome = producer.wait<'backup'>(job.id);
    const manifestsBefore = manifests();

    first.process.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    // (its server session lingers until the table lock is granted: a backend waiting on a lock does
    // not notice its client is gone; that is PostgreSQL's business, the process is ours)
    await waitFor('the orphaned pg_dump to end', async () => (await toolProcesses('pg_dump', database)).length === 0);
    expect(partials()).toEqual([job.id]); // what the dead worker left, until the job runs again

    await worker();
    await blocker.release();
    const finished = await outcome;
    expect(finished.state).toBe('completed');
    const result = (finished as { result: BackupResult }).result;
    expect((await sha256File(result.path)).sha256).toBe(result.sha256);
    await execa('pg_restore', ['--list', result.path]);
    expect(partials()).toEqual([]);
    expect(manifests()).toEqual([...manifestsBefore, `${result.backupId}.json`]);
  });

  it('SIGTERM mid-backup: the worker stops pg_dump, puts the job back without using an attempt, and exits', async () => {
    const first = await worker();
    const { blocker, producer, job } = await backupInFlight();

    first.process.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(await toolProcesses('pg_dump', database)).toEqual([]);
    const queued = (await producer.getJob(job.id))!;
    expect(await queued.getState()).toBe('waiting');
    expect(queued.attemptsMade).toBe(0);
    expect(partials()).toEqual([]);

    await worker();
    await blocker.release();
    const finished = await producer.wait<'backup'>(job.id);
    expect(finished.state).toBe('completed');
  });

  it('jobs cancel on a running backup ends pg_dump, leaves nothing on disk, and shows the job as cancelled', async () => {
    await worker();
    const manifestsBefore = manifests();
    const { blocker, producer, job } = await backupInFlight();
    try {
      const cancel = await rig.cli(['jobs', 'cancel', job.id]);
      expect(cancel.exitCode).toBe(0);
      expect(cancel.stdout).toContain('told its worker to stop');
      const outcome = await producer.wait(job.id);
      expect(outcome).toMatchObject({ state: 'cancelled', failedReason: 'cancelled by user' });
      await waitFor('pg_dump to end', async () => (await toolProcesses('pg_dump', database)).length === 0);
      const shown = await rig.cli(['jobs', 'show', job.id, '--json']);
      expect(JSON.parse(shown.stdout)).toMatchObject({ state: 'cancelled', attemptsMade: 1 });
      // What Bull Board shows of it: the reason, no stack trace, no file path.
      expect((await producer.getJob(job.id))!.stacktrace).toEqual(['cancelled by user']);
      expect(partials()).toEqual([]);
      expect(manifests()).toEqual(manifestsBefore);
    } finally {
      await blocker.release();
    }
  });

  it('jobs cancel on a job whose worker died: the next worker refuses it instead of running it again', async () => {
    const first = await worker();
    const manifestsBefore = manifests();
    const { blocker, producer, job } = await backupInFlight();
    try {
      first.process.kill('SIGKILL');
      await first.exited;
      const cancel = await rig.cli(['jobs', 'cancel', job.id]);
      expect(cancel.exitCode).toBe(0);
      await worker();
      const outcome = await producer.wait(job.id);
      expect(outcome).toMatchObject({ state: 'cancelled', failedReason: 'cancelled by user' });
      expect(manifests()).toEqual(manifestsBefore);
      // The dead worker's partial file is removed by the recovery that follows a job's final failure.
      await waitFor('the partial backup of the dead worker to be removed', () => partials().length === 0, 10_000);
    } finally {
      await blocker.release();
    }
    const retry = await rig.cli(['jobs', 'retry', job.id]);
    expect(retry.exitCode).toBe(0);
    expect(retry.stdout).toContain('back in the queue');
    expect(await producer.wait(job.id)).toMatchObject({ state: 'completed' });
    expect(manifests()).toHaveLength(manifestsBefore.length + 1);
    const again = await rig.cli(['jobs', 'retry', job.id]);
    expect(again.exitCode).toBe(1);
    expect(again.stdout).toContain('only a failed or cancelled job can be retried');
  });

  it('a job whose workers die with it three times fails, and the history records it', async () => {
    let current = await worker();
    const { blocker, producer, job } = await backupInFlight();
    try {
      // Each death is found by the next worker's stalled-job check, which runs the job again; the third fails it.
      for (let death = 1; death <= 3; death += 1) {
        const startedBefore = (await producer.getJob(job.id))!.processedOn ?? 0;
        current.process.kill('SIGKILL');
        await current.exited;
        current = await worker();
        if (death < 3)
          await waitFor(
            `the job to run again after death ${death}`,
            async () => ((await producer.getJob(job.id))?.processedOn ?? 0) > startedBefore,
            30_000,
          );
      }
      expect(await producer.wait(job.id)).toMatchObject({
        state: 'failed',
        failedReason: 'job stalled more than allowable limit',
      });
      await waitFor(
        'the history to record the failure',
        async () =>
          JSON.parse((await rig.cli(['history', '--type', 'backup', '--state', 'failed', '--json'])).stdout).length > 0,
        15_000,
      );
      const [entry] = JSON.parse(
        (await rig.cli(['history', '--type', 'backup', '--state', 'failed', '--json'])).stdout,
      ) as {
        id: string;
        state: string;
        outcome: string;
      }[];
      expect(entry).toMatchObject({ id: job.id, state: 'failed' });
      expect(JSON.stringify(entry)).toContain(
        'its worker stopped with it 3 times (job stalled more than allowable limit)',
      );
      // One entry, whichever worker saw it first.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      expect(
        JSON.parse((await rig.cli(['history', '--type', 'backup', '--state', 'failed', '--json'])).stdout),
      ).toHaveLength(1);
      const verified = await rig.cli(['history', 'verify']);
      expect(verified.exitCode, verified.stdout).toBe(0);
    } finally {
      await blocker.release();
    }
  });

  it('jobs cancel on a waiting job removes it before it starts', async () => {
    const producer = rig.producer();
    const job = await producer.enqueue('backup', { env: 'source' }); // no worker is running
    const cancel = await rig.cli(['jobs', 'cancel', job.id]);
    expect(cancel.exitCode).toBe(0);
    expect(cancel.stdout).toContain('removed from the queue');
    expect(await producer.getJob(job.id)).toBeUndefined();
    expect(await producer.wait(job.id)).toMatchObject({ state: 'cancelled' });
  });
});
