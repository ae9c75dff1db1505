import { QueueEvents } from 'bullmq';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BackupCatalogue } from '../backups/catalogue.js';
import type { Manifest } from '../backups/manifest.js';
import type { Config } from '../config.js';
import { isOperationType, workerTypes, type WorkerType } from '../operations/index.js';
import { createRedis } from '../queue/connection.js';
import { queueName, type Queues } from '../queue/queues.js';
import type { ScheduleView, Schedules } from '../schedules/schedules.js';
import type { ArchiverReport } from '../pitr/archiver.js';
import { archiverReports } from '../queue/wal-archivers.js';

const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;

export interface Metrics {
  registry: Registry;
  close(): Promise<void>;
  /** Drops its Redis connections at once (a close that Redis, being away, would keep waiting). */
  disconnect(): void;
}

/**
 * Prometheus metrics. Queue sizes and the last backup per environment are read from Redis and
 * BACKUP_DIR at scrape time (true whatever process did the work); job durations are observed from the
 * queues' event streams while this server runs.
 */
/** `waitForEvents`: return once the job-outcome listeners are attached (false while Redis is away: they attach when it is back). */
export async function createMetrics(
  config: Config,
  queues: Queues,
  schedules: Schedules,
  waitForEvents = true,
): Promise<Metrics> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'dbops_process_' });

  new Gauge({
    name: 'dbops_jobs',
    help: 'Jobs in each queue, by state',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      for (const type of workerTypes) {
        const counts = await queues.get(type).getJobCounts(...STATES);
        for (const state of STATES) this.set({ queue: type, state }, counts[state] ?? 0);
      }
    },
  });

  // The stores: one listing of each per scrape feeds the two gauges (a scrape starts every collect at
  // once). A store that cannot be read is said by its gauge, not by a failed scrape: the other metrics
  // matter most while a store is down.
  type StoreListing = { store: string; manifests?: Manifest[] };
  let storeListings: Promise<StoreListing[]> | undefined;
  const listings = () =>
    (storeListings ??= Promise.all(
      BackupCatalogue.of(config).stores.map((store) =>
        store.list().then(
          ({ manifests }): StoreListing => ({ store: store.name, manifests }),
          (): StoreListing => ({ store: store.name }),
        ),
      ),
    ).finally(() => (storeListings = undefined)));
  new Gauge({
    name: 'dbops_store_up',
    help: 'Whether each backup store could be listed at this scrape (1) or not (0)',
    labelNames: ['store'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { store, manifests } of await listings()) this.set({ store }, manifests ? 1 : 0);
    },
  });
  new Gauge({
    name: 'dbops_last_successful_backup_timestamp_seconds',
    help: 'Completion time of the newest backup of each environment in the stores that could be read (Unix seconds)',
    labelNames: ['env'],
    registers: [registry],
    async collect() {
      this.reset();
      const newest = new Map<string, number>();
      for (const { manifests } of await listings())
        for (const manifest of manifests ?? []) {
          const at = Date.parse(manifest.completedAt) / 1000;
          if (at > (newest.get(manifest.env) ?? 0)) newest.set(manifest.env, at);
        }
      for (const [env, at] of newest) this.set({ env }, at);
    },
  });

  // Schedules: one read of their state per scrape feeds the three gauges.
  let scheduleViews: Promise<ScheduleView[]> | undefined;
  const views = () =>
    (scheduleViews ??= schedules.list().finally(() => setTimeout(() => (scheduleViews = undefined), 1_000).unref()));
  new Gauge({
    name: 'dbops_schedule_missed',
    help: '1 when the last due run of a schedule did not succeed within its window (never ran, or failed)',
    labelNames: ['schedule', 'operation'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const view of await views())
        this.set({ schedule: view.name, operation: view.operation }, view.status.state === 'missed' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'dbops_schedule_last_success_timestamp_seconds',
    help: 'When the last run of each schedule succeeded (Unix seconds; absent if it never has)',
    labelNames: ['schedule'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const view of await views())
        if (view.lastSuccessAt) this.set({ schedule: view.name }, Date.parse(view.lastSuccessAt) / 1000);
    },
  });
  new Gauge({
    name: 'dbops_schedule_next_run_timestamp_seconds',
    help: 'When each schedule runs next (Unix seconds)',
    labelNames: ['schedule'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const view of await views())
        if (view.nextRunAt) this.set({ schedule: view.name }, Date.parse(view.nextRunAt) / 1000);
    },
  });

  // The WAL archivers, from their reports in Redis: one read per scrape feeds the five gauges.
  let reports: Promise<ArchiverReport[]> | undefined;
  const archivers = () =>
    (reports ??= archiverReports(queues.connection, config).finally(() =>
      setTimeout(() => (reports = undefined), 1_000).unref(),
    ));
  const archiverGauge = (name: string, help: string, value: (report: ArchiverReport) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['server'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const report of await archivers()) {
          const measured = value(report);
          if (measured !== undefined) this.set({ server: report.server }, measured);
        }
      },
    });
  archiverGauge(
    'dbops_wal_lag_bytes',
    'WAL the server wrote that the archiver has not received yet (bytes)',
    (report) => report.lagBytes,
  );
  archiverGauge(
    'dbops_wal_lag_seconds',
    "The archiver's flush lag as the server measures it (seconds)",
    (report) => report.lagSeconds,
  );
  archiverGauge(
    'dbops_wal_slot_retained_bytes',
    "WAL the archiver's replication slot keeps on the server's disk (bytes)",
    (report) => report.slotRetainedBytes,
  );
  archiverGauge(
    'dbops_wal_archiving_failed',
    'Whether the archiver cannot archive right now (1: a store or the server fails; it keeps trying), else 0',
    (report) => (report.error ? 1 : 0),
  );
  archiverGauge(
    'dbops_wal_recovery_point_timestamp_seconds',
    'Up to when the stores hold all WAL the server wrote (Unix seconds): now minus this is the recovery point objective',
    (report) => (report.caughtUpAt ? Date.parse(report.caughtUpAt) / 1000 : undefined),
  );

  const duration = new Histogram({
    name: 'dbops_job_duration_seconds',
    help: 'Time from a job starting to it finishing for good, by type and outcome',
    labelNames: ['type', 'outcome'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
    registers: [registry],
  });

  const listeners: { events: QueueEvents; connection: ReturnType<typeof createRedis> }[] = [];
  const observe = async (queue: WorkerType, jobId: string, outcome: 'completed' | 'failed') => {
    const job = await queues.get(queue).getJob(jobId);
    const type = job && isOperationType(job.name) ? job.name : queue;
    if (job?.processedOn && job.finishedOn)
      duration.observe({ type, outcome }, (job.finishedOn - job.processedOn) / 1000);
  };
  for (const type of workerTypes) {
    const connection = createRedis(config, 'worker');
    const events = new QueueEvents(queueName(type), { connection, prefix: config.QUEUE_PREFIX });
    events.on('error', () => undefined);
    events.on('completed', ({ jobId }) => void observe(type, jobId, 'completed').catch(() => undefined));
    events.on('failed', ({ jobId }) => void observe(type, jobId, 'failed').catch(() => undefined));
    listeners.push({ events, connection });
  }
  const ready = Promise.all(listeners.map(({ events }) => events.waitUntilReady()));
  if (waitForEvents) await ready;
  else ready.catch(() => undefined);

  return {
    registry,
    async close() {
      for (const { events, connection } of listeners) {
        await events.close();
        await connection.quit().catch(() => undefined);
      }
    },
    disconnect() {
      for (const { connection } of listeners) connection.disconnect();
    },
  };
}
