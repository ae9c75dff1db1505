import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolProcesses } from './helpers/blocker.js';
import { fingerprint, loadPagila, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** A restore worker killed half-way: the target is untouched, and the next worker cleans up and finishes. */
describe('a restore whose worker dies', () => {
  let rig: Rig;
  let target: Fingerprint;
  let backupId: string;

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('source'));
    rig.setEnv('source', rig.db('source'));
    await sql('postgres', `CREATE DATABASE "${rig.db('target')}"`);
    await sql(rig.db('target'), "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('before')");
    rig.setEnv('target', rig.db('target'));
    target = await fingerprint(rig.db('target'));
    await rig.startWorker('backup');
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode).toBe(0);
    backupId = JSON.parse(backup.stdout).backupId;
  });
  afterAll(async () => rig?.cleanup());

  it('SIGKILL while pg_restore fills the shadow: target untouched, shadow dropped by the next worker, job completed', async () => {
    const first = await rig.startWorker('restore');
    const producer = rig.producer();
    const job = await producer.enqueue('restore', { env: 'target', backup: backupId, jobs: 1 });
    const outcome = producer.wait<'restore'>(job.id);
    const shadow = await waitFor(
      'pg_restore to be filling the shadow database',
      async () => {
        const [name] = await shadowDatabasesFor(rig.db('target'));
        return name && (await toolProcesses('pg_restore', name)).length > 0 ? name : undefined;
      },
      30_000,
    );
    first.process.kill('SIGKILL');
    await first.exited;
    await waitFor('the orphaned pg_restore to end', async () => (await toolProcesses('pg_restore', shadow)).length === 0);
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([shadow]); // left behind by the dead worker
    expect(await fingerprint(rig.db('target'))).toEqual(target);

    const second = await rig.startWorker('restore');
    expect(second.output()).toContain('dropped the shadow database of a dead worker');
    const finished = await outcome;
    expect(finished.state).toBe('completed');
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
  });
});
