import { runTimes, type StoredSchedule } from './definition.js';

export interface ScheduleStatus {
  /** ok: the last run whose window has closed succeeded; missed: it did not (or never ran); pending: no window closed yet. */
  state: 'ok' | 'missed' | 'pending';
  /** The run that was due (the last whose window has closed). */
  dueAt?: Date;
  windowEndsAt?: Date;
}

/**
 * Whether a schedule's last due run succeeded within its window (by default: before the next run was
 * due). A run that never started (no worker, queue paused) and one that failed count alike: missed.
 */
export function scheduleStatus(
  schedule: Pick<StoredSchedule, 'cron' | 'tz' | 'windowSeconds' | 'updatedAt'>,
  lastSuccessAt: Date | undefined,
  now: Date,
): ScheduleStatus {
  const times = runTimes(schedule);
  const windowEnd = (due: Date) =>
    schedule.windowSeconds ? new Date(due.getTime() + schedule.windowSeconds * 1000) : times.next(due);
  let due = times.previous(now);
  for (let step = 0; windowEnd(due) > now && step < 1_000; step += 1) due = times.previous(new Date(due.getTime() - 1));
  if (windowEnd(due) > now || due < new Date(schedule.updatedAt)) return { state: 'pending' };
  const state = lastSuccessAt && lastSuccessAt >= due ? 'ok' : 'missed';
  return { state, dueAt: due, windowEndsAt: windowEnd(due) };
}
