import { Option, type Command } from 'commander';
import { parseWholeNumber } from '../io.js';
import { runOperation, type RunFlags } from '../run-operation.js';

/** The flags every operation command shares. */
function withRunFlags(command: Command): Command {
  return command
    .option('--wait', 'follow the job to its end; exit non-zero if it fails')
    .option('--json', 'with --wait: print only the result object, as JSON')
    .option('--local', 'run in this process without Redis (emergency mode)');
}

const flagsOf = (options: RunFlags): RunFlags => ({ wait: options.wait, json: options.json, local: options.local });

export function registerBackup(program: Command): void {
  withRunFlags(
    program
      .command('backup')
      .description('back up an environment with pg_dump into BACKUP_DIR')
      .requiredOption('--env <env>', 'environment to back up')
      .addOption(new Option('--format <format>', 'archive format').choices(['custom', 'directory']).default('custom'))
      .option('--jobs <n>', 'parallel dump jobs (directory format)', parseWholeNumber)
      .option('--compress <level>', 'compression level 0-9', parseWholeNumber),
  ).action(async (options) => {
    await runOperation('backup', { env: options.env, format: options.format, jobs: options.jobs, compress: options.compress }, flagsOf(options));
  });
}

export function registerRestore(program: Command): void {
  withRunFlags(
    program
      .command('restore')
      .description('restore a backup into an environment (through a shadow database, swapped in on success)')
      .requiredOption('--env <env>', 'environment to restore into')
      .requiredOption('--backup <id>', 'backup id (see `backups list`)')
      .option('--confirm <env>', 'the environment name again, required for protected environments')
      .option('--jobs <n>', 'parallel restore jobs', parseWholeNumber)
      .option('--drop-previous', 'drop the replaced database instead of keeping it under a dated name'),
  ).action(async (options) => {
    await runOperation(
      'restore',
      {
        env: options.env,
        backup: options.backup,
        confirm: options.confirm,
        jobs: options.jobs,
        keepPrevious: options.dropPrevious ? false : undefined,
      },
      flagsOf(options),
    );
  });
}
