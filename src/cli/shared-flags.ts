import { Option } from 'commander';
import { parseWholeNumber } from './io.js';

/*
 * The flags several commands share, each declared once: the payload field it fills, its argument and
 * its words. A command adds the ones its operation's payload has (`.addOption(confirmFlag())`).
 */

/** `--env <env>` → `env`: the environment the command acts on (required by the operations). */
export const envFlag = (what: string, required = true): Option => {
  const option = new Option('--env <env>', what);
  return required ? option.makeOptionMandatory() : option;
};

/** `--confirm <env>` → `confirm`: a protected environment's name again. */
export const confirmFlag = (whose = 'the environment'): Option =>
  new Option('--confirm <env>', `${whose}'s name again: required to change a protected environment`);

/** `--store <name>` → `store`: one of BACKUP_STORES. */
export const storeFlag = (what = 'read the backup from this backup store (default: the first that holds it)'): Option =>
  new Option('--store <name>', what);

/** `--jobs <n>` → `jobs`: parallel jobs of pg_dump, pg_restore or a copy. */
export const jobsFlag = (what: string): Option => new Option('--jobs <n>', what).argParser(parseWholeNumber);

/** `--drop-previous` → `keepPrevious: false`. */
export const dropPreviousFlag = (): Option =>
  new Option('--drop-previous', 'drop the replaced database instead of keeping it under a dated name');

/** `--source-settings` → `sourceSettings`. */
export const sourceSettingsFlag = (whose: string): Option =>
  new Option(
    '--source-settings',
    `${whose} settings, grants, comment, limit and owner instead of the replaced database's`,
  );
