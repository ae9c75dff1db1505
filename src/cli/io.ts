import { CliExit, ValidationError, errorMessage } from '../errors.js';
import { scrubSecrets } from '../secrets.js';
import { alignColumns } from '../units.js';

/*
 * What every command prints with, kept light: the CLI loads a command's heavy modules (the catalogue,
 * BullMQ, PostgreSQL's client) only when that command runs, so `--help` and the like start fast.
 */

/** Exit codes: 0 done, 1 the job or command failed, 2 invalid input (nothing was enqueued or changed). */
/** 130: stopped by Ctrl-C (128 + SIGINT), as shells report it. */
export const EXIT = { ok: 0, failed: 1, invalid: 2, interrupted: 130 } as const;

let secrets: readonly string[] = [];

/** The configured secrets, scrubbed from everything the CLI prints (set once the configuration is loaded). */
export function useSecrets(configured: readonly string[]): void {
  secrets = configured;
}

export function scrub(text: string): string {
  return scrubSecrets(text, secrets);
}

export function out(line: string): void {
  process.stdout.write(`${scrub(line)}\n`);
}

export function err(line: string): void {
  process.stderr.write(`${scrub(line)}\n`);
}

/** A table: a header, and columns aligned by padding (two spaces between; the last one unpadded). */
export function printTable(header: string[], rows: string[][]): void {
  for (const line of alignColumns(header, rows)) out(line);
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** One line for any error; validation problems exit 2. */
export function toExit(error: unknown): CliExit {
  if (error instanceof CliExit) return error;
  if (error instanceof ValidationError) return new CliExit(EXIT.invalid, error.forCli ?? errorMessage(error));
  const message = errorMessage(error).split('\n')[0] ?? 'unknown error';
  return new CliExit(EXIT.failed, message);
}

/** Integers given on the command line: whole numbers only ("2", not "2.5" or "two"). */
export function parseWholeNumber(value: string): number {
  if (!/^-?\d+$/.test(value.trim())) throw new ValidationError(`"${value}" is not a whole number`);
  return Number(value);
}
