import { Option, type Command } from 'commander';
import { ValidationError } from '../errors.js';
import { parseWholeNumber } from './io.js';
import { PAYLOAD_FLAGS } from './payload-flags.generated.js';

/**
 * A payload field as a command-line flag. `src/cli/derive-flags.ts` derives one from each field of each
 * operation's payload schema whose value a flag can carry (a string, a number, a boolean, a list of
 * strings); `npm run gen:flags` writes them all into `payload-flags.generated.ts`, so that the CLI
 * builds its flags from the schemas without loading them (and zod) on every start.
 */
export interface PayloadFlag {
  /** The payload field it fills. */
  field: string;
  /** commander's spelling: `--env <env>`, `--dry-run`, `--drop-previous`. */
  flags: string;
  description: string;
  /** How the argument is read: text, a whole number, a number; a switch; a repeatable text; a switch that sets `value`. */
  kind: 'string' | 'integer' | 'number' | 'boolean' | 'list' | 'value';
  /** For `value`: what the switch puts into the field. */
  value?: unknown;
  choices?: string[];
  /** The schema requires the field. */
  required: boolean;
}

/** Per operation type: its summary and the flags of its payload. */
export type PayloadFlagTable = Record<string, { summary: string; flags: PayloadFlag[] }>;

const TABLE = PAYLOAD_FLAGS as PayloadFlagTable;

const collect = (value: string, previous: string[] = []) => [...previous, value];

function parseNumber(value: string): number {
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number)) throw new ValidationError(`"${value}" is not a number`);
  return number;
}

function flagOf(type: string, field: string): PayloadFlag {
  const flag = TABLE[type]?.flags.find((candidate) => candidate.field === field);
  if (!flag) throw new Error(`the payload of "${type}" has no field "${field}" a flag can carry (npm run gen:flags)`);
  return flag;
}

/**
 * The commander option for one field of an operation's payload: spelling, argument and parser from its
 * schema; `description`, the command's own words for it instead of the schema's.
 */
export function payloadFlag(type: string, field: string, description?: string): Option {
  const flag = flagOf(type, field);
  const option = new Option(flag.flags, description ?? flag.description);
  if (flag.choices) option.choices(flag.choices);
  if (flag.kind === 'integer') option.argParser(parseWholeNumber);
  if (flag.kind === 'number') option.argParser(parseNumber);
  if (flag.kind === 'list') option.argParser(collect);
  if (flag.required) option.makeOptionMandatory();
  return option;
}

/** Adds the flags of these payload fields, in this order, to a command. */
export function withPayloadFlags(command: Command, type: string, fields: string[]): Command {
  for (const field of fields) command.addOption(payloadFlag(type, field));
  return command;
}

/** commander's name for a flag's value in the parsed options (`--drop-previous` → `dropPrevious`). */
const attributeOf = (flag: PayloadFlag): string => new Option(flag.flags).attributeName();

/** The payload fields the given flags fill, from commander's parsed options; a flag not given leaves its field out. */
export function payloadOf(type: string, options: Record<string, unknown>, fields?: string[]): Record<string, unknown> {
  const payload: Record<string, unknown> = {};
  for (const flag of TABLE[type]?.flags ?? []) {
    if (fields && !fields.includes(flag.field)) continue;
    const given = options[attributeOf(flag)];
    if (given === undefined) continue;
    payload[flag.field] = flag.kind === 'value' ? flag.value : given;
  }
  return payload;
}

/** Every operation type the flag table knows. */
export const flaggedTypes = (): string[] => Object.keys(TABLE);

/**
 * `manage-db <type> [flags]` for an operation no command of its own enqueues: every flag its payload's
 * schema allows, nothing written by hand. (Fields a flag cannot carry, such as lists of objects, go
 * through `enqueue <type> JSON`.)
 */
export function derivedCommand(parent: Command, type: string): Command {
  const fields = (TABLE[type]?.flags ?? []).map((flag) => flag.field);
  return withPayloadFlags(parent.command(type).description(TABLE[type]?.summary ?? type), type, fields);
}
