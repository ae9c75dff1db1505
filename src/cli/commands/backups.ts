import type { Command } from 'commander';
import { BackupStore } from '../../backups/store.js';
import { normalizeEnvName } from '../../config.js';
import { countTocEntries } from '../../postgres/tools.js';
import { CliExit, EXIT, cliConfig, out, printJson } from '../io.js';

function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function registerBackups(program: Command): void {
  const backups = program.command('backups').description('the backups in BACKUP_DIR');
  backups
    .command('list')
    .description('list backups, oldest first')
    .option('--env <env>', 'only this environment')
    .option('--json', 'print the manifests as JSON')
    .action(async (options: { env?: string; json?: boolean }) => {
      const store = new BackupStore(cliConfig().backupDir);
      const manifests = await store.list({ env: options.env ? normalizeEnvName(options.env) : undefined });
      if (options.json) return printJson(manifests);
      if (manifests.length === 0) return out(`no backups in ${store.dir}`);
      out(['ID', 'ENV', 'DATABASE', 'FORMAT', 'SIZE', 'COMPLETED'].join('\t'));
      for (const manifest of manifests) {
        out([manifest.id, manifest.env, manifest.database, manifest.format, humanSize(manifest.sizeBytes), manifest.completedAt].join('\t'));
      }
    });
  backups
    .command('verify <id>')
    .description("check a backup's SHA-256 against its manifest and that pg_restore reads its table of contents")
    .option('--json', 'print the outcome as JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      const config = cliConfig();
      const store = new BackupStore(config.backupDir);
      const manifest = await store.get(id);
      const integrity = await store.checkIntegrity(manifest);
      let outcome: { id: string; ok: boolean; reason?: string; tocEntries?: number };
      if (!integrity.ok) outcome = { id, ok: false, reason: integrity.reason };
      else {
        try {
          outcome = { id, ok: true, tocEntries: await countTocEntries(store.archivePath(manifest), config.PG_BIN_DIR) };
        } catch (error) {
          outcome = { id, ok: false, reason: (error as Error).message };
        }
      }
      if (options.json) printJson(outcome);
      else out(outcome.ok ? `${id}: ok (sha256 matches, ${outcome.tocEntries} table of contents entries)` : `${id}: DAMAGED: ${outcome.reason}`);
      if (!outcome.ok) throw new CliExit(EXIT.failed);
    });
}
