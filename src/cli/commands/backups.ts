import type { Command } from 'commander';
import type { Manifest, Verification } from '../../backups/manifest.js';
import { cliConfig } from '../config.js';
import { out, printJson } from '../io.js';
import { runOperation } from '../lazy.js';
import type { RunOperation } from '../run-operation.js';
import { flagsOf, withRunFlags } from './operations.js';

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

/** Verification state for `backups list`: the newest check's level and outcome. */
function checkText(manifest: Manifest): string {
  const last: Verification | undefined = manifest.verifications?.at(-1);
  if (!last) return 'never checked';
  return `${last.ok ? 'ok' : 'DAMAGED'} (${last.level}, ${last.at.slice(0, 16)}Z)`;
}

export function registerBackups(program: Command, run: RunOperation = runOperation): void {
  const backups = program.command('backups').description('the backups in BACKUP_DIR');
  backups
    .command('list')
    .description('list backups, grouped by environment and database, oldest first')
    .option('--env <env>', 'only this environment')
    .option('--json', 'print the manifests as JSON')
    .action(async (options: { env?: string; json?: boolean }) => {
      const [{ BackupStore }, { normalizeEnvName }] = await Promise.all([import('../../backups/store.js'), import('../../config.js')]);
      const store = new BackupStore(cliConfig().backupDir);
      const listed = await store.list({ env: options.env ? normalizeEnvName(options.env) : undefined });
      // Grouped: each database's backups together (an --all-databases run makes one per database).
      const manifests = [...listed].sort(
        (a, b) => a.env.localeCompare(b.env) || a.database.localeCompare(b.database) || a.completedAt.localeCompare(b.completedAt),
      );
      if (options.json) return printJson(listed);
      if (manifests.length === 0) return out(`no backups in ${store.dir}`);
      out(['ID', 'ENV', 'DATABASE', 'FORMAT', 'SIZE', 'COMPLETED', 'CHECKED'].join('\t'));
      for (const manifest of manifests) {
        const format = manifest.encryption ? `${manifest.format}+encrypted` : manifest.format;
        out([manifest.id, manifest.env, manifest.database, format, humanSize(manifest.sizeBytes), manifest.completedAt, checkText(manifest)].join('\t'));
      }
    });
  withRunFlags(
    backups
      .command('verify')
      .description('check a backup: its SHA-256 against the manifest and that pg_restore reads its table of contents; the outcome is recorded in the manifest')
      .argument('[id]', 'backup id (or --latest ENV)')
      .option('--latest <env>', 'the newest backup of this environment')
      .option('--full', 'also restore it into a scratch database (then dropped) and compare row counts with the manifest')
      .option('--env <env>', "--full: the environment whose server holds the scratch database (default: the backup's own)"),
  ).action(async (id: string | undefined, options) => {
    await run('verify', { backup: id, latest: options.latest, full: options.full ?? false, env: options.env }, flagsOf(options));
  });
  withRunFlags(
    backups
      .command('prune')
      .description('apply the retention policy: keep the last N verified backups, then daily/weekly/monthly ones; delete the rest')
      .option('--env <env>', 'only this environment (default: every environment with a policy)')
      .option('--dry-run', 'show what would be deleted; delete nothing')
      .option('--policy <policy>', 'instead of BACKUP_RETENTION: e.g. last=7,daily=7,weekly=4,monthly=12')
      .option('--confirm <env>', 'the environment name again, required to prune a protected environment'),
  ).action(async (options) => {
    await run('prune', { env: options.env, dryRun: options.dryRun ?? false, policy: options.policy, confirm: options.confirm }, flagsOf(options));
  });
}
