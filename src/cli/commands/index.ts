import type { Command } from 'commander';
import type { OperationType } from '../../operations/index.js';
import type { RunOperation } from '../run-flags.js';
import { registerBackups } from './backups.js';
import {
  registerBackup,
  registerCopy,
  registerEnqueue,
  registerMaintenance,
  registerMigrate,
  registerPrevious,
  registerRestore,
  registerTriggers,
} from './operations.js';

export type RegisterCommand = (program: Command, run?: RunOperation) => void;

/**
 * The command that enqueues each operation of the catalogue. Keyed by the catalogue's types, so a new
 * operation does not compile until it has its command (or `enqueue`, which takes any type).
 */
export const commandOf: Record<OperationType, RegisterCommand> = {
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
export const operationCommands: RegisterCommand[] = [...new Set(Object.values(commandOf)), registerEnqueue];
