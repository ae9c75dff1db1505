import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import * as z from 'zod';
import { PermanentError } from '../errors.js';
import { connect } from '../postgres/client.js';
import { digestTables, differences, type TableDigest } from '../postgres/compare.js';
import { StepTimer } from '../postgres/replace.js';
import { resolveTarget } from '../postgres/target.js';
import { currentLsn } from '../postgres/wal.js';
import { recoverInstances, startRecovery } from '../pitr/recovery-instance.js';
import { archiveOfEnv } from '../pitr/servers.js';
import { PitrArchive } from '../pitr/wal-archive.js';
import { parseLsn } from '../pitr/wal-names.js';
import { planRecovery, recoveryWindow } from '../pitr/window.js';
import { envName, stepTimings, storeName } from './fields.js';
import { defineOperation } from './operation.js';

const schema = z.strictObject({
  env: envName,
  store: storeName,
  /** How long to wait for the archive to hold the drill's point. */
  waitSeconds: z.number().int().min(1).max(3_600).default(120),
});

const result = z.object({
  env: z.string(),
  database: z.string(),
  server: z.string(),
  baseBackup: z.string(),
  lsn: z
    .string()
    .meta({ description: 'the point the drill recovered to: where the source stood between its two readings' }),
  recoveredTo: z.string().optional(),
  compared: z
    .array(z.string())
    .meta({ description: 'tables whose recovered contents equal what the source held then' }),
  changedDuringDrill: z.array(z.string()).meta({
    description: 'tables written while the drill read the source: their state at the point is not known, not compared',
  }),
  walSegments: z.number(),
  durationMs: z.number(),
  steps: stepTimings,
});
export type PitrDrillResult = z.infer<typeof result>;

/** Every table's digest in one snapshot of the source. */
async function snapshotDigests(client: pg.Client): Promise<TableDigest[]> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    return await digestTables(client);
  } finally {
    await client.query('COMMIT');
  }
}

/**
 * A recovery drill: the source's tables are read twice, with the position of its WAL taken between;
 * that position is recovered from the archive in a private temporary instance, and every table the
 * source held unchanged across both readings must come back with the same contents. Nothing of any
 * environment is changed.
 */
export const pitrdrill = defineOperation({
  type: 'pitrdrill',
  queue: 'restore',
  summary:
    'a point-in-time recovery drill: recover a point just taken from the archive into a private temporary instance and compare it with what the source held',
  schema,
  result,
  precheck(payload, config) {
    resolveTarget(config, payload.env);
  },
  answers: () => true,
  examples: [{ payload: { env: 'production' } }],
  async process(context): Promise<PitrDrillResult> {
    const { payload, config, job, signal } = context;
    const startedAt = Date.now();
    const timer = new StepTimer();
    const source = resolveTarget(config, payload.env);
    const archive = await PitrArchive.of(config);
    const client = await connect(source.url, `dbops:pitrdrill:${context.jobId}`, source.env);
    let before: TableDigest[];
    let after: TableDigest[];
    let lsn: string;
    try {
      context.progress(2, 'reading the source');
      before = await snapshotDigests(client);
      lsn = await currentLsn(client);
      after = await snapshotDigests(client);
    } finally {
      await client.end().catch(() => undefined);
    }
    const steady = new Map(after.map((digest) => [digest.table, digest]));
    const unchanged = before.filter((digest) => {
      const twin = steady.get(digest.table);
      return twin !== undefined && twin.hash === digest.hash && twin.rows === digest.rows;
    });
    const changed = before.filter((digest) => !unchanged.includes(digest)).map((digest) => digest.table);
    context.log(
      `drill point ${lsn}: ${unchanged.length} table(s) held still, ${changed.length} were written meanwhile`,
    );
    timer.mark('read the source');
    // The archiver needs a moment to hold the point.
    let found = await archiveOfEnv(archive, source.env, payload.store);
    const deadline = Date.now() + payload.waitSeconds * 1000;
    for (;;) {
      const window = recoveryWindow(found.server, found.bases, found.entries, found.status);
      if (window.toLsn && parseLsn(window.toLsn) >= parseLsn(lsn)) break;
      if (Date.now() > deadline)
        throw new PermanentError(
          `the archive did not reach the drill's point ${lsn} within ${payload.waitSeconds} s (it holds up to ${window.toLsn ?? 'nothing'}): is the WAL archiver running?`,
        );
      context.progress(5, 'waiting for the archiver');
      await sleep(1_000, undefined, { signal });
      found = await archiveOfEnv(archive, source.env, payload.store);
    }
    timer.mark('wait for the archive');
    const plan = planRecovery(found.server, found.bases, found.entries, found.status, { lsn });
    const user = decodeURIComponent(new URL(source.url).username) || 'postgres';
    const instance = await startRecovery({
      config,
      archive,
      store: found.store,
      plan,
      target: { lsn },
      job,
      user,
      signal,
      progress: context.progress,
      log: context.log,
    });
    try {
      timer.mark('recover');
      context.progress(70, 'comparing');
      const recovered = await connect(instance.url(found.database), `dbops:pitrdrill:${context.jobId}`);
      let digests: TableDigest[];
      try {
        digests = await digestTables(recovered);
      } finally {
        await recovered.end().catch(() => undefined);
      }
      const names = new Set(unchanged.map((digest) => digest.table));
      const found2 = differences(
        unchanged,
        digests.filter((digest) => names.has(digest.table) || !before.some((one) => one.table === digest.table)),
      );
      timer.mark('compare');
      if (found2.length > 0)
        throw new PermanentError(
          `the recovered database differs from the source at ${lsn}: ${found2.slice(0, 10).join('; ')}`,
        );
      return {
        env: source.env,
        database: found.database,
        server: found.server,
        baseBackup: plan.base.id,
        lsn,
        ...(instance.stoppedAt ? { recoveredTo: instance.stoppedAt } : {}),
        compared: unchanged.map((digest) => digest.table),
        changedDuringDrill: changed,
        walSegments: plan.wal.length,
        durationMs: Date.now() - startedAt,
        steps: timer.steps,
      };
    } finally {
      await instance.stop();
    }
  },
  async recover(context) {
    await recoverInstances(context);
  },
  describe: (result) =>
    `drill passed: ${result.env} recovered to ${result.lsn} from base backup ${result.baseBackup} + ${result.walSegments} WAL segments; ${result.compared.length} table(s) equal` +
    (result.changedDuringDrill.length
      ? `, ${result.changedDuringDrill.length} written during the drill (not compared)`
      : ''),
});
