import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerDerived, registerBackup } from '../src/cli/commands/operations.js';
import { derivePayloadFlags, renderPayloadFlagsModule } from '../src/cli/derive-flags.js';
import type { RunFlags } from '../src/cli/run-flags.js';
import { getOperation, operationTypes, type OperationType } from '../src/operations/index.js';

const ROOT = path.resolve(import.meta.dirname, '..');

/** A program whose operation commands hand their payload to the test instead of enqueueing it. */
function programWith(
  register: (
    program: Command,
    run: (type: OperationType, input: Record<string, unknown>, flags: RunFlags) => Promise<void>,
  ) => void,
) {
  const runs: { type: string; input: Record<string, unknown> }[] = [];
  const program = new Command().exitOverride();
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  register(program, async (type, input) => {
    runs.push({ type, input });
  });
  return { program, runs };
}

describe("the CLI's flags come from the payload schemas", () => {
  it('the flag table in the source is what the schemas say now (regenerate it with npm run gen:flags)', () => {
    expect(readFileSync(path.join(ROOT, 'src/cli/payload-flags.generated.ts'), 'utf8')).toBe(
      renderPayloadFlagsModule(),
    );
  });

  it('every operation has its flags: each field a flag can carry, spelled from the field, required as the schema says', () => {
    const table = derivePayloadFlags();
    expect(Object.keys(table).sort()).toEqual([...operationTypes].sort());
    const copy = new Map(table.copy!.flags.map((flag) => [flag.field, flag]));
    expect(copy.get('from')).toMatchObject({ flags: '--from <env>', kind: 'string', required: true });
    expect(copy.get('jobs')).toMatchObject({ flags: '--jobs <n>', kind: 'integer', required: false });
    expect(copy.get('rest')).toMatchObject({ flags: '--rest <rest>', choices: ['all', 'empty'] });
    expect(copy.get('keepPrevious')).toMatchObject({ flags: '--drop-previous', kind: 'value', value: false });
    expect(copy.get('withChildren')).toMatchObject({ flags: '--with-children', kind: 'boolean' });
    // A list of objects is no flag: it goes through the command's own parsing, or enqueue's JSON.
    expect(copy.has('sanitize')).toBe(false);
    expect(copy.has('subset')).toBe(false);
    const tables = new Map(table.restoretables!.flags.map((flag) => [flag.field, flag]));
    expect(tables.get('tables')).toMatchObject({ flags: '--tables <tables>', kind: 'list', required: false });
  });

  it('no operation command declares --env, --confirm, --store, --jobs, --drop-previous or --source-settings by hand', () => {
    const source = (file: string) => readFileSync(path.join(ROOT, 'src/cli/commands', file), 'utf8');
    const backups = source('backups.ts');
    // Operation commands: operations.ts, and backups' verify and prune (list and download are no jobs).
    const texts = [
      source('operations.ts'),
      backups.slice(backups.indexOf(".command('verify')"), backups.indexOf(".command('download')")),
    ];
    expect(texts[1]).toContain("'prune',"); // the slice holds prune's flags
    const declared = texts.flatMap((text) => [
      ...text.matchAll(/['"`]--(?:env|confirm|store|jobs|drop-previous|source-settings)\b[^'"`]*['"`]/g),
    ]);
    expect(declared.map((match) => match[0])).toEqual([]);
  });

  it('an operation without a command of its own gets one from its schema: flags, payload, required fields', async () => {
    // Every operation has a command today; prune stands in for the next one.
    const { program, runs } = programWith((program, run) => registerDerived('prune')(program, run));
    await program.parseAsync(
      ['prune', '--env', 'staging', '--dry-run', '--policy', 'last=3', '--store', 'local', '--confirm', 'staging'],
      { from: 'user' },
    );
    expect(runs).toEqual([
      { type: 'prune', input: { env: 'staging', dryRun: true, policy: 'last=3', store: 'local', confirm: 'staging' } },
    ]);
    // The payload it builds is one the worker accepts.
    expect(getOperation('prune').schema.safeParse(runs[0]!.input).success).toBe(true);

    const copy = programWith((program, run) => registerDerived('copy')(program, run));
    await copy.program.parseAsync(
      ['copy', '--from', 'production', '--to', 'staging', '--jobs', '3', '--drop-previous', '--rest', 'empty'],
      { from: 'user' },
    );
    expect(copy.runs[0]!.input).toEqual({
      from: 'production',
      to: 'staging',
      jobs: 3,
      keepPrevious: false,
      rest: 'empty',
    });
    expect(getOperation('copy').schema.safeParse(copy.runs[0]!.input).success).toBe(true);

    const missing = programWith((program, run) => registerDerived('copy')(program, run));
    await expect(missing.program.parseAsync(['copy', '--to', 'staging'], { from: 'user' })).rejects.toThrow(
      /required option '--from <env>' not specified/,
    );
    const badChoice = programWith((program, run) => registerDerived('copy')(program, run));
    await expect(
      badChoice.program.parseAsync(['copy', '--from', 'a', '--to', 'b', '--rest', 'some'], { from: 'user' }),
    ).rejects.toThrow(/Allowed choices are all, empty/);
    expect([...missing.runs, ...badChoice.runs]).toEqual([]);
  });

  it('a written command fills its payload through the same table (backup)', async () => {
    const { program, runs } = programWith((program, run) => registerBackup(program, run));
    await program.parseAsync(['backup', '--env', 'staging', '--format', 'directory', '--jobs', '4', '--digests'], {
      from: 'user',
    });
    expect(runs).toEqual([{ type: 'backup', input: { env: 'staging', format: 'directory', jobs: 4, digests: true } }]);
    await program.parseAsync(['backup', '--env', 'staging', '--physical'], { from: 'user' });
    expect(runs[1]).toEqual({ type: 'physicalbackup', input: { env: 'staging' } });
  });
});
