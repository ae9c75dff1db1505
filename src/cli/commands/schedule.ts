import { Command } from 'commander';
import { ValidationError } from '../../errors.js';
import type { OperationType } from '../../operations/index.js';
import type { Schedules, ScheduleView } from '../../schedules/schedules.js';
import { inZone } from '../../units.js';
import { out, printJson, printTable } from '../io.js';
import { withProducer } from '../producer.js';
import type { RunOperation } from '../run-flags.js';
import { operationCommands } from './index.js';
import { parseDuration } from './operations.js';

async function withSchedules<T>(fn: (schedules: Schedules) => Promise<T>): Promise<T> {
  const { Schedules } = await import('../../schedules/schedules.js');
  return withProducer((producer) => fn(new Schedules(producer.config, producer.queues)));
}

/**
 * The payload an operation command would enqueue, built by that very command: `schedule add nightly
 * --cron "0 2 * * *" backup --env production` schedules exactly what `backup --env production` runs.
 */
async function capturePayload(argv: string[]): Promise<{ type: OperationType; payload: Record<string, unknown> }> {
  let captured: { type: OperationType; payload: Record<string, unknown> } | undefined;
  const capture: RunOperation = async (type, input) => {
    captured = { type, payload: Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined)) };
  };
  const program = new Command('manage-db schedule add … <operation>')
    .exitOverride()
    .configureOutput({ outputError: () => undefined, writeOut: () => undefined });
  for (const register of operationCommands) register(program, capture);
  const silence = (command: Command) => {
    command.exitOverride().configureOutput({ outputError: () => undefined, writeOut: () => undefined });
    command.commands.forEach(silence);
  };
  silence(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (error) {
    throw new ValidationError(`schedule add: ${(error as Error).message.replace(/^error: /, '')}`);
  }
  if (!captured)
    throw new ValidationError(
      'schedule add: name the operation and its options after the schedule, e.g. backup --env production',
    );
  return captured;
}

interface AddOptions {
  cron?: string;
  tz?: string;
  window?: string;
  json?: boolean;
}

/**
 * `schedule add`'s own options come between its name and the operation; everything from the
 * operation on belongs to the operation (whose options may share names with these, like --json).
 */
function splitAddArguments(rest: string[], options: AddOptions): { own: AddOptions; operationArgs: string[] } {
  const own = { ...options };
  const args = [...rest];
  while (args[0]?.startsWith('--')) {
    const [flag, inline] = args.shift()!.split(/=(.*)/s, 2) as [string, string | undefined];
    const value = () => {
      const next = inline ?? args.shift();
      if (next === undefined) throw new ValidationError(`schedule add: ${flag} needs a value`);
      return next;
    };
    if (flag === '--cron') own.cron = value();
    else if (flag === '--tz') own.tz = value();
    else if (flag === '--window') own.window = value();
    else if (flag === '--json') own.json = true;
    else throw new ValidationError(`schedule add: unknown option ${flag} (the operation comes before its options)`);
  }
  return { own, operationArgs: args };
}

function statusText(view: ScheduleView): string {
  if (view.status.state === 'missed') return `MISSED (run due ${inZone(view.status.dueAt, view.tz ?? 'UTC')})`;
  return view.status.state;
}

export function registerSchedule(program: Command): void {
  const schedule = program.command('schedule').description('run operations on a cron schedule (BullMQ job schedulers)');
  schedule
    .command('add')
    .description(
      'add or replace a schedule: schedule add <name> --cron "<expr>" [--tz ZONE] [--window D] <operation> <its options>',
    )
    .argument('<name>', 'schedule name (adding the same name again replaces it)')
    .argument('<operation...>', 'the operation and its options, as you would run it, e.g. backup --env production')
    .option('--cron <expr>', 'cron expression: five fields, or six with seconds first (required)')
    .option('--tz <zone>', 'time zone of the expression (default UTC), e.g. Europe/Berlin')
    .option(
      '--window <duration>',
      'time a run has to succeed in before it counts as missed (default: until the next run)',
    )
    .option('--json', 'print the stored schedule as JSON')
    .passThroughOptions()
    .action(async (name: string, rest: string[], options: AddOptions) => {
      const { own, operationArgs } = splitAddArguments(rest, options);
      if (!own.cron) throw new ValidationError('schedule add: --cron "<expr>" is required');
      const { type, payload } = await capturePayload(operationArgs);
      const stored = await withSchedules((schedules) =>
        schedules.add({
          name,
          cron: own.cron,
          tz: own.tz,
          operation: type,
          payload,
          windowSeconds: own.window === undefined ? undefined : parseDuration(own.window),
        }),
      );
      if (own.json) return printJson(stored);
      const { describeOperation } = await import('../../schedules/schedules.js');
      out(`schedule ${stored.name}: ${describeOperation(stored)} at "${stored.cron}" (${stored.tz ?? 'UTC'})`);
    });
  schedule
    .command('list')
    .description('every schedule with its next run, its last run and outcome, and whether it missed a run')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const views = await withSchedules((schedules) => schedules.list());
      const { describeOperation } = await import('../../schedules/schedules.js');
      if (options.json) return printJson(views);
      if (views.length === 0) return out('no schedules');
      // Times in each schedule's own zone, as its cron reads.
      printTable(
        ['NAME', 'DOES', 'CRON', 'NEXT RUN', 'LAST RUN', 'STATUS'],
        views.map((view) => [
          view.name,
          describeOperation(view),
          `${view.cron} (${view.tz ?? 'UTC'})`,
          inZone(view.nextRunAt, view.tz ?? 'UTC'),
          view.lastRun ? `${view.lastRun.state} ${inZone(view.lastRun.at, view.tz ?? 'UTC')}` : 'never',
          statusText(view),
        ]),
      );
    });
  schedule
    .command('remove')
    .description('remove a schedule (its pending run goes too; jobs already running finish)')
    .argument('<name>', 'schedule name')
    .action(async (name: string) => {
      const removed = await withSchedules((schedules) => schedules.remove(name));
      if (!removed) throw new ValidationError(`unknown schedule "${name}" (see manage-db schedule list)`);
      out(`schedule ${name} removed`);
    });
}
