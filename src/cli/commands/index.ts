import type { OperationType } from '../../operations/index.js';
import { registerBackups } from './backups.js';
import { flaggedTypes } from '../payload-flags.js';
import {
  registerBackup,
  registerCopy,
  registerDerived,
  registerEnqueue,
  registerMaintenance,
  registerMigrate,
  registerPrevious,
  registerRestore,
  registerTriggers,
  type RegisterCommand,
} from './operations.js';

export type { RegisterCommand };

/**
 * The command written for an operation of the catalogue. An operation without one gets
 * `manage-db <type>`, its flags derived from its payload schema (src/cli/payload-flags.ts).
 */
export const commandOf: Partial<Record<OperationType, RegisterCommand>> = {
  backup: registerBackup,
  restore: registerRestore,
  migrate: registerMigrate,
  copy: registerCopy,
  triggers: registerTriggers,
  maintenance: registerMaintenance,
  prune: registerBackups, // backups prune
  verify: registerBackups, // backups verify
  previous: registerPrevious,
  maskreport: registerCopy, // copy --mask-report
  restoretables: registerRestore, // restore --table
  physicalbackup: registerBackup, // backup --physical
  pitr: registerRestore, // restore --from --to-time | --to-lsn | --latest-wal
  pitrdrill: registerBackups, // backups verify --pitr
};

/** Every command that enqueues a job, once each, in the order `--help` lists them: the CLI and `schedule add` both use it. */
export const operationCommands: RegisterCommand[] = [
  ...new Set(Object.values(commandOf)),
  ...flaggedTypes()
    .filter((type) => !Object.hasOwn(commandOf, type))
    .map((type) => registerDerived(type as OperationType)),
  registerEnqueue,
];
