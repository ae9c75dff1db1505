import type { Config } from '../config.js';
import { ValidationError } from '../errors.js';
import { validatePayload } from '../operations/validate.js';
import { jobOptionsFor, type Queues } from '../queue/queues.js';
import { schedulerId } from '../job-ids.js';
import { scheduleSchema, shortestIntervalMs, type ScheduleDefinition, type StoredSchedule } from './definition.js';
import { scheduleStatus, type ScheduleStatus } from './status.js';

export interface ScheduleRun {
  jobId: string;
  state: 'completed' | 'failed';
  at: string;
  reason?: string;
}

interface RunRecord {
  last?: ScheduleRun;
  lastSuccessAt?: string;
}

export interface ScheduleView extends StoredSchedule {
  nextRunAt: string | null;
  lastRun: ScheduleRun | null;
  lastSuccessAt: string | null;
  status: ScheduleStatus;
}

/**
 * Schedules are BullMQ job schedulers (upsertJobScheduler: Redis fires them, whichever workers are
 * up; one per name, however often it is added). Beside them, in Redis, dbops keeps each schedule's
 * definition and the outcome of its last run, for `schedule list`, /metrics and missed-run alerts.
 */
export class Schedules {
  constructor(
    private readonly config: Config,
    private readonly queues: Queues,
  ) {}

  private key(kind: 'schedules' | 'schedule-runs' | 'schedule-missed'): string {
    return `${this.config.QUEUE_PREFIX}:dbops:${kind}`;
  }

  private get redis() {
    return this.queues.connection;
  }

  /** Validates a schedule (its payload as the job's would be) without storing it. */
  async validate(input: unknown): Promise<ScheduleDefinition> {
    const parsed = scheduleSchema.safeParse(input);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((issue) => ({
        path: issue.path.join('.') || '(schedule)',
        message: issue.message,
      }));
      throw new ValidationError(
        `invalid schedule: ${issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ')}`,
        issues,
      );
    }
    const definition = parsed.data as ScheduleDefinition;
    const minimum = this.config.SCHEDULE_MIN_INTERVAL_SECONDS;
    if (shortestIntervalMs(definition.cron, definition.tz) < minimum * 1000) {
      throw new ValidationError(
        `invalid schedule: cron: "${definition.cron}" runs more often than every ${minimum} s (SCHEDULE_MIN_INTERVAL_SECONDS)`,
        [{ path: 'cron', message: `runs more often than every ${minimum} s` }],
      );
    }
    const payload = await validatePayload(this.config, definition.operation, definition.payload);
    return { ...definition, payload: payload as Record<string, unknown> };
  }

  async add(input: unknown, source: StoredSchedule['source'] = 'cli'): Promise<StoredSchedule> {
    const definition = await this.validate(input);
    const existing = await this.get(definition.name);
    if (existing && existing.operation !== definition.operation)
      await this.queues.get(existing.operation).removeJobScheduler(schedulerId(existing));
    const now = new Date().toISOString();
    const unchanged = existing && sameDefinition(existing, definition);
    const stored: StoredSchedule = {
      ...definition,
      source,
      createdAt: existing?.createdAt ?? now,
      updatedAt: unchanged ? existing.updatedAt : now,
    };
    await this.queues.get(definition.operation).upsertJobScheduler(
      schedulerId(definition),
      { pattern: definition.cron, tz: definition.tz },
      {
        name: definition.operation,
        data: definition.payload,
        opts: jobOptionsFor(this.config, definition.operation),
      },
    );
    await this.redis.hset(this.key('schedules'), definition.name, JSON.stringify(stored));
    return stored;
  }

  async remove(name: string): Promise<boolean> {
    const existing = await this.get(name);
    if (!existing) return false;
    await this.queues.get(existing.operation).removeJobScheduler(schedulerId(existing));
    await this.redis.hdel(this.key('schedules'), name);
    await this.redis.hdel(this.key('schedule-runs'), name);
    await this.redis.hdel(this.key('schedule-missed'), name);
    return true;
  }

  async get(name: string): Promise<StoredSchedule | undefined> {
    const text = await this.redis.hget(this.key('schedules'), name);
    return text ? (JSON.parse(text) as StoredSchedule) : undefined;
  }

  async stored(): Promise<StoredSchedule[]> {
    const all = await this.redis.hgetall(this.key('schedules'));
    return Object.values(all)
      .map((text) => JSON.parse(text) as StoredSchedule)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async list(now = new Date()): Promise<ScheduleView[]> {
    const runs = await this.redis.hgetall(this.key('schedule-runs'));
    const views: ScheduleView[] = [];
    for (const schedule of await this.stored()) {
      const record: RunRecord = runs[schedule.name] ? JSON.parse(runs[schedule.name]!) : {};
      const scheduler = await this.queues.get(schedule.operation).getJobScheduler(schedulerId(schedule));
      views.push({
        ...schedule,
        nextRunAt: scheduler?.next ? new Date(scheduler.next).toISOString() : null,
        lastRun: record.last ?? null,
        lastSuccessAt: record.lastSuccessAt ?? null,
        status: scheduleStatus(schedule, record.lastSuccessAt ? new Date(record.lastSuccessAt) : undefined, now),
      });
    }
    return views;
  }

  /** Called when a job made by a schedule has finished for good. */
  async recordRun(name: string, run: ScheduleRun): Promise<void> {
    const text = await this.redis.hget(this.key('schedule-runs'), name);
    const record: RunRecord = text ? JSON.parse(text) : {};
    if (record.last && record.last.at > run.at) return; // an older run reported late
    record.last = run;
    if (run.state === 'completed') {
      record.lastSuccessAt = run.at;
      await this.redis.hdel(this.key('schedule-missed'), name); // a later miss is news again
    }
    await this.redis.hset(this.key('schedule-runs'), name, JSON.stringify(record));
  }

  /** True once per streak of misses: whoever claims it first sends the alert. */
  async claimMissedAlert(name: string, dueAt: Date): Promise<boolean> {
    return (await this.redis.hsetnx(this.key('schedule-missed'), name, dueAt.toISOString())) === 1;
  }

  /**
   * Makes the schedules from SCHEDULES_FILE exist as written: adds or updates each, removes those
   * the file once had and no longer has. Schedules added from the CLI are left alone.
   */
  async applyFile(definitions: unknown[]): Promise<{ applied: string[]; removed: string[] }> {
    const validated = [];
    for (const [index, definition] of definitions.entries()) {
      try {
        validated.push(await this.validate(definition));
      } catch (error) {
        const name = (definition as { name?: unknown } | null)?.name;
        throw new ValidationError(
          `schedule ${typeof name === 'string' ? `"${name}"` : `#${index + 1}`}: ${(error as Error).message}`,
        );
      }
    }
    const names = new Set(validated.map((definition) => definition.name));
    if (names.size !== validated.length) throw new ValidationError('two schedules have the same name');
    for (const definition of validated) await this.add(definition, 'file');
    const removed: string[] = [];
    for (const schedule of await this.stored()) {
      if (schedule.source === 'file' && !names.has(schedule.name)) {
        await this.remove(schedule.name);
        removed.push(schedule.name);
      }
    }
    return { applied: [...names], removed };
  }
}

function sameDefinition(a: ScheduleDefinition, b: ScheduleDefinition): boolean {
  return (
    a.cron === b.cron &&
    a.tz === b.tz &&
    a.operation === b.operation &&
    a.windowSeconds === b.windowSeconds &&
    JSON.stringify(a.payload) === JSON.stringify(b.payload)
  );
}

/** What a schedule does, in words: "backup of production", "full check of the newest backup of production". */
export function describeOperation(schedule: Pick<ScheduleDefinition, 'operation' | 'payload'>): string {
  const payload = (schedule.payload ?? {}) as Record<string, unknown>;
  const env = typeof payload.env === 'string' ? payload.env : undefined;
  switch (schedule.operation) {
    case 'backup':
      return payload.allDatabases ? `backup of every database on ${env}'s server` : `backup of ${env}`;
    case 'verify':
      return `${payload.full ? 'full check' : 'check'} of ${payload.backup ? `backup ${String(payload.backup)}` : `the newest backup of ${String(payload.latest)}`}${env ? ` (restored on ${env}'s server)` : ''}`;
    case 'prune':
      return `retention for ${env ?? 'every environment'}${payload.dryRun ? ' (dry run)' : ''}`;
    case 'maintenance':
      return `${String(payload.action)} of ${env}${payload.table ? ` (${String(payload.table)})` : ''}`;
    case 'copy':
      return `copy of ${String(payload.from)} into ${String(payload.to)}`;
    case 'restore':
      return `restore of ${payload.backup ? `backup ${String(payload.backup)}` : `the newest verified backup of ${String(payload.latest)}`} into ${env}`;
    default:
      return `${schedule.operation} ${JSON.stringify(payload)}`;
  }
}
