import { CronExpressionParser } from 'cron-parser';
import * as z from 'zod';
import { isOperationType, operationTypes, type OperationType } from '../operations/index.js';

export const scheduleNameSchema = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, {
  message: 'a schedule name is lower-case letters, digits, _ and - (at most 63)',
});

function cronProblem(cron: string, tz: string | undefined): string | undefined {
  try {
    CronExpressionParser.parse(cron, { tz });
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * The shortest time between two of the next `runs` runs: a cron can be uneven (`0,1 * * * *`), so one
 * gap is not enough to know it.
 */
export function shortestIntervalMs(cron: string, tz: string | undefined, runs = 50): number {
  const times = CronExpressionParser.parse(cron, { tz, currentDate: new Date() })
    .take(runs)
    .map((date) => date.getTime());
  let shortest = Infinity;
  for (let i = 1; i < times.length; i += 1) shortest = Math.min(shortest, times[i]! - times[i - 1]!);
  return shortest;
}

/** A schedule as users write it (CLI or SCHEDULES_FILE): what to run, and when. */
export const scheduleSchema = z
  .strictObject({
    name: scheduleNameSchema,
    /** Five fields (minute…weekday), or six with seconds first. */
    cron: z.string().min(1).max(200),
    /** IANA time zone the cron expression is read in; UTC when not given. */
    tz: z
      .string()
      .max(100)
      .refine(
        (zone) => {
          try {
            new Intl.DateTimeFormat('en', { timeZone: zone });
            return true;
          } catch {
            return false;
          }
        },
        { message: 'not a time zone (e.g. Europe/Berlin)' },
      )
      .optional(),
    operation: z.string().refine(isOperationType, { message: `one of ${operationTypes.join(', ')}` }),
    payload: z.record(z.string(), z.unknown()).default({}),
    /** Seconds a run has to succeed in; by default, until the next run is due. */
    windowSeconds: z
      .number()
      .int()
      .positive()
      .max(366 * 86_400)
      .optional(),
  })
  .superRefine((schedule, context) => {
    const problem = cronProblem(schedule.cron, schedule.tz);
    if (problem) context.addIssue({ code: 'custom', path: ['cron'], message: `not a cron expression: ${problem}` });
  });

export type ScheduleDefinition = z.output<typeof scheduleSchema> & { operation: OperationType };

/** A schedule as stored: its definition, where it came from, and since when it exists. */
export interface StoredSchedule extends ScheduleDefinition {
  source: 'cli' | 'file';
  createdAt: string;
  updatedAt: string;
}

/** Run times of a schedule: the last at or before `at`, and the one after a given time. */
export function runTimes(schedule: Pick<ScheduleDefinition, 'cron' | 'tz'>) {
  return {
    previous(at: Date): Date {
      return CronExpressionParser.parse(schedule.cron, { tz: schedule.tz, currentDate: new Date(at.getTime() + 1) })
        .prev()
        .toDate();
    },
    next(at: Date): Date {
      return CronExpressionParser.parse(schedule.cron, { tz: schedule.tz, currentDate: at }).next().toDate();
    },
  };
}
