import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { CliExit, ValidationError } from '../../errors.js';
import type { ChainReport } from '../../queue/history.js';
import type { JobFilterWords } from '../../queue/job-filter.js';
import { humanDuration, listTime } from '../../units.js';
import { cliConfig } from '../config.js';
import { EXIT, out, printJson, printTable } from '../io.js';
import { withProducer } from '../producer.js';

function sayReport(report: ChainReport, where: string): void {
  const range = report.first === null ? 'no entries' : `entries ${report.first} to ${report.last} (${report.entries})`;
  const how = report.keyed
    ? 'with the key derived from the signing key'
    : 'by plain hashes (no signing key configured: someone who can write to Redis could rewrite the whole chain)';
  if (report.ok) return out(`${where}: the chain holds: ${range}, checked ${how}`);
  for (const problem of report.problems) out(`${where}: ${problem}`);
  throw new CliExit(EXIT.failed, `${where}: the chain does not hold (${report.problems.length} problem(s) above)`);
}

export function registerHistory(program: Command): void {
  const history = program
    .command('history')
    .description('finished jobs, kept beyond the queues: who asked, what ran, what it did (newest first)')
    .option('--type <type>', 'only this operation type (a comma list for several)')
    .option('--state <state>', 'only this outcome (completed, failed, cancelled; a comma list for several)')
    .option('--env <env>', 'only jobs on this environment (a copy: its source or target)')
    .option('--since <time>', 'ended since: a duration back from now (30m, 12h, 7d) or an ISO 8601 time')
    .option('--until <time>', 'ended before this ISO 8601 time (or duration back from now)')
    .option('--search <text>', 'only entries whose job, requester, payload or outcome contain this text')
    .option('--limit <n>', 'at most this many (1 to 1000)', '50')
    .option('--json', 'print as JSON')
    .action(async (options: JobFilterWords & { json?: boolean }) => {
      const [{ parseJobFilter }, { historyFilterOf }] = await Promise.all([
        import('../../queue/job-filter.js'),
        import('../../queue/history-entry.js'),
      ]);
      const filter = historyFilterOf(parseJobFilter(options));
      const entries = await withProducer((producer) => producer.history.search(filter));
      if (options.json) return printJson(entries);
      if (entries.length === 0) return out('no entries');
      printTable(
        ['ENDED', 'JOB', 'ENV', 'STATE', 'BY', 'TOOK', 'OUTCOME'],
        entries.map((entry) => [
          listTime(entry.at),
          entry.reference,
          entry.envs.join('→') || '-',
          entry.state,
          entry.cancelledBy ? `${entry.requestedBy}; cancelled by ${entry.cancelledBy}` : entry.requestedBy,
          humanDuration(entry.durationMs),
          entry.outcome,
        ]),
      );
    });
  history
    .command('verify')
    .description("check the history's chain: exit 0 when no entry was changed, removed or inserted")
    .option('--file <file>', 'check an export (history export) instead of the history in Redis')
    .action(async (options: { file?: string }) => {
      if (!options.file) return sayReport(await withProducer((producer) => producer.history.verify()), 'history');
      const [{ ChainCheck, parseEntry }, { chainKeyFrom }] = await Promise.all([
        import('../../queue/history.js'),
        import('../../queue/history-entry.js'),
      ]);
      const check = new ChainCheck(chainKeyFrom(cliConfig().signingKey?.key));
      const lines = createInterface({ input: createReadStream(options.file), crlfDelay: Infinity });
      let number = 0;
      for await (const line of lines) {
        number += 1;
        if (!line.trim()) continue;
        const entry = parseEntry(line);
        if (!entry) throw new ValidationError(`${options.file}:${number}: not a history entry`);
        check.add(entry);
      }
      sayReport(check.report(), options.file);
    });
  history
    .command('export')
    .description('every entry kept, oldest first, one JSON object per line (history verify --file checks it)')
    .option('--file <file>', 'write to this file (made new; an existing file is refused) instead of stdout')
    .action(async (options: { file?: string }) => {
      await withProducer(async (producer) => {
        const sink: NodeJS.WritableStream = options.file
          ? createWriteStream(options.file, { flags: 'wx', mode: 0o600 })
          : process.stdout;
        let count = 0;
        for await (const entry of producer.history.entries()) {
          count += 1;
          if (!sink.write(`${JSON.stringify(entry)}\n`))
            await new Promise<void>((resolve) => sink.once('drain', () => resolve()));
        }
        if (sink !== process.stdout) {
          sink.end();
          await finished(sink as NodeJS.WritableStream);
          process.stderr.write(`${count} entries written to ${options.file}\n`);
        }
      });
    });
}
