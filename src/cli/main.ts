import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { operationCommands } from './commands/index.js';
import { registerHistory } from './commands/history.js';
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
    .exitOverride()
    .enablePositionalOptions() // for `schedule add`, whose operation's options follow its own
    .version(packageVersion(), '-V, --version')
    .configureOutput({ outputError: () => undefined });
  for (const register of operationCommands) register(program);
  registerJobs(program);
  registerHistory(program);
  registerSchedule(program);
  registerSchema(program);
  for (const command of program.commands) {
    for (const each of [command, ...command.commands]) {
      each.exitOverride().configureOutput({ outputError: () => undefined });
      unknownOptionsFirst(each);
    }
  }
  return program;
}

/**
 * A mistyped option is said as such (`unknown option '--evn' (Did you mean --env?)`), not as the
 * required option it failed to give: commander checks required options before unknown ones.
 */
function unknownOptionsFirst(command: Command): void {
  const internals = command as unknown as {
    missingMandatoryOptionValue(option: unknown): never;
    unknownOption(flag: string): never;
  };
  const missing = internals.missingMandatoryOptionValue.bind(command);
  internals.missingMandatoryOptionValue = (option) => {
    const unknown = command.args.find((arg) => /^--?[A-Za-z]/.test(arg));
    if (unknown) internals.unknownOption(unknown);
    return missing(option);
  };
}

async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT.ok;
      if (error.code === 'commander.help') return EXIT.invalid; // help shown because no command was given
      // One line: commander's message, with its suggestion ("(Did you mean backup?)") beside it.
      const said = error.message
        .replace(/^error: /, '')
        .split('\n')
        .map((line) => line.trim());
      err(`manage-db: ${said.filter(Boolean).join(' ') || 'invalid arguments'}`);
      return EXIT.invalid;
    }
    const exit = toExit(error);
    // One convention: `manage-db: <message>`, exit 1 for a failed operation, 2 for bad usage or configuration.
    if (exit.message) err(`manage-db: ${exit.message}`);
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
