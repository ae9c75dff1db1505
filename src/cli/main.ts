import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { operationCommands } from './commands/index.js';
import { registerJobs } from './commands/jobs.js';
import { registerSchedule } from './commands/schedule.js';
import { registerSchema } from './commands/schema.js';
import { EXIT, err, toExit } from './io.js';

/** Read beside the compiled module, or beside its bundle (dist/src/cli-bundle/, the same depth). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string })
    .version;
}

function buildProgram(): Command {
  const program = new Command('manage-db')
    .description('PostgreSQL operations as jobs on a Redis queue')
    .showSuggestionAfterError(false)
    .exitOverride()
    .enablePositionalOptions() // for `schedule add`, whose operation's options follow its own
    .version(packageVersion(), '-V, --version')
    .configureOutput({ outputError: () => undefined });
  for (const register of operationCommands) register(program);
  registerJobs(program);
  registerSchedule(program);
  registerSchema(program);
  for (const command of program.commands) {
    command.exitOverride().configureOutput({ outputError: () => undefined });
    for (const sub of command.commands) sub.exitOverride().configureOutput({ outputError: () => undefined });
  }
  return program;
}

async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT.ok;
      if (error.code === 'commander.help') return EXIT.invalid; // help shown because no command was given
      err(error.message.replace(/^error: /, 'manage-db: ').split('\n')[0] ?? 'invalid arguments');
      return EXIT.invalid;
    }
    const exit = toExit(error);
    if (exit.message) err(exit.code === EXIT.invalid ? `manage-db: ${exit.message}` : exit.message);
    return exit.code;
  }
}

// Exit explicitly: a Redis client that is still reconnecting must not keep the CLI alive.
// Output into a closed pipe (`manage-db jobs list --json | head -1`) ends the command quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(EXIT.ok);
  throw error;
});
// Written to a pipe, output is sent asynchronously: the exit waits until both streams took everything
// (`backups list --json` of a few hundred backups was cut at 216 kB in a pipe).
const flushed = (stream: NodeJS.WriteStream) => new Promise<void>((resolve) => stream.write('', () => resolve()));
void main(process.argv).then(async (code) => {
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
});
