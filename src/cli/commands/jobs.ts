import type { Command } from 'commander';
import type { Progress } from '../../operations/operation.js';
import { JOB_STATES, NOT_RETRYABLE, jobDurationMs, jobTarget } from '../../queue/job-facts.js';
import type { JobFilterWords } from '../../queue/job-filter.js';
import { CliExit } from '../../errors.js';
import { withProducer } from '../producer.js';
import { humanDuration, listTime } from '../../units.js';
import { EXIT, out, printJson, printTable } from '../io.js';

function progressText(progress: Progress): string {
  return `${Math.floor(progress.percent)}% ${progress.step}`.trim();
}

export function registerJobs(program: Command): void {
  const jobs = program.command('jobs').description('jobs in the queues');
  jobs
    .command('list')
    .description('recent jobs of every type, newest first')
    .option('--type <type>', 'only this operation type (a comma list for several)')
    .option('--state <state>', `only this state (${JOB_STATES.join(', ')}; a comma list for several)`)
    .option('--env <env>', 'only jobs on this environment (a copy: its source or target)')
    .option('--since <time>', 'queued since: a duration back from now (30m, 12h, 7d) or an ISO 8601 time')
    .option('--until <time>', 'queued before this ISO 8601 time (or duration back from now)')
    .option('--search <text>', 'only jobs whose id, payload, result or failure reason contain this text')
    .option('--limit <n>', 'at most this many (1 to 1000)', '50')
    .option('--json', 'print as JSON')
    .action(async (options: JobFilterWords & { json?: boolean }) => {
      const { parseJobFilter } = await import('../../queue/job-filter.js');
      const filter = parseJobFilter(options);
      const list = await withProducer((producer) => producer.list(filter));
      if (options.json) return printJson(list);
      if (list.length === 0) return out('no jobs');
      printTable(
        ['JOB', 'TARGET', 'STATE', 'PROGRESS', 'TOOK', 'QUEUED', 'REASON'],
        list.map((job) => [
          job.reference,
          jobTarget(job),
          job.state,
          progressText(job.progress),
          job.startedAt ? humanDuration(jobDurationMs(job)) : '',
          listTime(job.createdAt),
          (job.failedReason ?? '').split('\n')[0]!,
        ]),
      );
    });
  jobs
    .command('show <job>')
    .description("a job's state, progress, result and log; <job> is <type>/<id>, or an id looked for in every queue")
    .option('--json', 'print as JSON')
    .action(async (reference: string, options: { json?: boolean }) => {
      await withProducer(async (producer) => {
        const job = await producer.getJob(reference);
        if (!job) throw new CliExit(EXIT.failed, `no job "${reference}"`);
        const summary = await producer.summarize(job);
        const { logs } = await producer.queues.get(summary.type).getJobLogs(summary.id, -50, -1);
        if (options.json) return printJson({ ...summary, logs });
        out(`${summary.reference}  ${summary.state}  ${progressText(summary.progress)}`);
        out(`payload: ${JSON.stringify(summary.data)}`);
        if (summary.result !== null) out(`result:  ${JSON.stringify(summary.result)}`);
        if (summary.failedReason) out(`reason:  ${summary.failedReason}`);
        out(
          `created ${summary.createdAt ?? '-'}, started ${summary.startedAt ?? '-'}, finished ${summary.finishedAt ?? '-'}, attempts ${summary.attemptsMade}`,
        );
        for (const line of logs) out(`  | ${line}`);
      });
    });
  jobs
    .command('cancel <job>')
    .description(
      'remove a waiting job, or stop a running one (the target stays as it was); <job> is <type>/<id> or an id',
    )
    .action(async (id: string) => {
      const outcome = await withProducer((producer) => producer.cancel(id));
      const messages = {
        removed: `${id}: removed from the queue before it started`,
        signalled: `${id}: told its worker to stop`,
        finished: `${id}: already finished, nothing to cancel`,
        unknown: `${id}: no such job`,
      } as const;
      out(messages[outcome]);
      if (outcome === 'unknown') throw new CliExit(EXIT.failed);
    });
  jobs
    .command('retry <job>')
    .description('run a failed or cancelled job once more; <job> is <type>/<id> or an id')
    .action(async (id: string) => {
      const outcome = await withProducer((producer) => producer.retry(id));
      const messages = {
        retrying: `${id}: back in the queue`,
        'not-failed': `${id}: ${NOT_RETRYABLE}`,
        unknown: `${id}: no such job`,
      } as const;
      out(messages[outcome]);
      if (outcome !== 'retrying') throw new CliExit(EXIT.failed);
    });
}
