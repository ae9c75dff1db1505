import type { Command } from 'commander';
import type { Manifest, SkippedManifest, Verification } from '../../backups/manifest.js';
import { cliConfig } from '../config.js';
import { CliExit, ValidationError } from '../../errors.js';
import { humanDuration, humanSize, listTime } from '../../units.js';
import { EXIT, err, out, printJson, printTable } from '../io.js';
import { payloadFlag, payloadOf, withPayloadFlags } from '../payload-flags.js';
import { runOperation } from '../lazy.js';
import type { RunOperation } from '../run-flags.js';
import { flagsOf, withRunFlags } from './operations.js';

/** Verification state for `backups list`: the newest check's level and outcome. */
function checkText(manifest: Manifest): string {
  const last: Verification | undefined = manifest.verifications?.at(-1);
  if (!last) return 'never checked';
  return `${last.ok ? 'ok' : 'DAMAGED'} (${last.level}, ${last.at.slice(0, 16)}Z)`;
}

/** Objects in the stores that look like backups but are not provably dbops' own: said on stderr, one line each. */
function warnSkipped(skipped: SkippedManifest[]): void {
  for (const item of skipped) err(`skipped ${item.name} in the ${item.store} store: ${item.reason}`);
}

/** `backups list --physical`: what each server's archive can recover, per store. */
async function listPhysical(options: { env?: string; store?: string; json?: boolean }): Promise<void> {
  const [{ PitrArchive }, { serverWindows }, { normalizeEnvName }] = await Promise.all([
    import('../../pitr/wal-archive.js'),
    import('../../pitr/servers.js'),
    import('../../config.js'),
  ]);
  const archive = await PitrArchive.of(cliConfig());
  const { windows, unreadable } = await serverWindows(archive, {
    env: options.env ? normalizeEnvName(options.env) : undefined,
    store: options.store,
  });
  for (const one of windows) for (const line of one.skipped) err(`skipped ${line} in the ${one.store} store`);
  for (const { store, error } of unreadable) err(`cannot read the ${store} store: ${error}`);
  if (options.json) printJson(windows.map(({ store, window }) => ({ store, ...window })));
  else if (windows.length === 0 && unreadable.length === 0)
    out('no point-in-time archive in the stores (PITR_ENVS, npm run worker -- wal, backup --physical)');
  else {
    printTable(
      ['SERVER', 'ENVS', 'STORE', 'RECOVERABLE FROM', 'TO', 'RPO', 'BASE BACKUPS', 'WAL SEGMENTS', 'ERRORS'],
      windows.map(({ store, window }) => [
        window.server,
        Object.keys(window.envs).join(',') || '-',
        store,
        window.from ? listTime(window.from) : '-',
        window.to ? listTime(window.to) : '-',
        window.rpoSeconds === undefined ? '-' : `${window.rpoSeconds}s`,
        String(window.baseBackups.length),
        String(window.segments),
        String(window.errors.length),
      ]),
    );
    for (const { store, window } of windows)
      for (const error of window.errors) err(`${window.server} (${store}): ${error}`);
  }
  if (unreadable.length > 0 || windows.some(({ window }) => window.errors.length > 0)) throw new CliExit(EXIT.failed);
}

export function registerBackups(program: Command, run: RunOperation = runOperation): void {
  const backups = program
    .command('backups')
    .description('the backups in the backup stores (BACKUP_STORES, default BACKUP_DIR)');
  backups
    .command('list')
    .description('list backups, grouped by environment and database, oldest first, with the stores that hold each')
    .option('--env <env>', 'only this environment')
    .option('--store <name>', 'only the backups this store holds')
    .option('--json', 'print the manifests as JSON (each with heldBy: the stores that hold it)')
    .option(
      '--physical',
      'per server: the point-in-time recovery window, base backups, gaps and recovery point (exit 1 when a window has an error)',
    )
    .action(async (options: { env?: string; store?: string; json?: boolean; physical?: boolean }) => {
      if (options.physical) return listPhysical(options);
      const [{ BackupCatalogue }, { normalizeEnvName }] = await Promise.all([
        import('../../backups/catalogue.js'),
        import('../../config.js'),
      ]);
      const catalogue = BackupCatalogue.of(cliConfig());
      const { backups: listed, skipped } = await catalogue.listing({
        env: options.env ? normalizeEnvName(options.env) : undefined,
        store: options.store,
      });
      warnSkipped(skipped);
      // Grouped: each database's backups together (an --all-databases run makes one per database).
      const sorted = [...listed].sort(
        (a, b) =>
          a.manifest.env.localeCompare(b.manifest.env) ||
          a.manifest.database.localeCompare(b.manifest.database) ||
          a.manifest.completedAt.localeCompare(b.manifest.completedAt),
      );
      if (options.json) return printJson(listed.map(({ manifest, stores }) => ({ ...manifest, heldBy: stores })));
      if (sorted.length === 0) {
        const config = cliConfig();
        const env = options.env ? normalizeEnvName(options.env) : undefined;
        if (env && !config.environments.has(env)) {
          const known = [...config.environments.keys()].join(', ') || 'none configured';
          throw new ValidationError(
            `no environment "${env}" is configured (known: ${known}), and no backup of it is in the stores`,
          );
        }
        return out(
          `no backups in ${catalogue
            .select(options.store)
            .map((store) => store.location)
            .join(', ')}`,
        );
      }
      printTable(
        ['ID', 'ENV', 'DATABASE', 'FORMAT', 'SIZE', 'TOOK', 'COMPLETED', 'SCHEMA', 'CHECKED', 'STORES'],
        sorted.map(({ manifest, stores }) => [
          manifest.id,
          manifest.env,
          manifest.database,
          manifest.encryption ? `${manifest.format}+encrypted` : manifest.format,
          humanSize(manifest.sizeBytes),
          humanDuration(manifest.durationMs),
          listTime(manifest.completedAt),
          manifest.schemaVersion?.revisions.join('+') || '-',
          checkText(manifest),
          stores.join(','),
        ]),
      );
    });
  withRunFlags(
    backups
      .command('verify')
      .description(
        'check a backup: its SHA-256 against the manifest and that pg_restore reads its table of contents; the outcome is recorded in the manifest',
      )
      .argument('[id]', 'backup id (or --latest ENV)')
      .addOption(payloadFlag('verify', 'latest'))
      .addOption(payloadFlag('verify', 'full'))
      .addOption(payloadFlag('verify', 'store'))
      .addOption(
        payloadFlag(
          'verify',
          'env',
          "--full: the environment whose server holds the scratch database (default: the backup's own); --pitr: the environment to drill",
        ),
      )
      .option(
        '--pitr',
        'a point-in-time recovery drill of --env: recover a point just taken from the archive in a private instance and compare it with the source',
      ),
  ).action(async (id: string | undefined, options) => {
    if (options.pitr) {
      if (id || options.latest || options.full || !options.env)
        throw new ValidationError('--pitr takes --env ENV (and --store), no backup id, --latest or --full');
      await run('pitrdrill', { env: options.env, store: options.store }, flagsOf(options));
      return;
    }
    await run(
      'verify',
      { backup: id, latest: options.latest, full: options.full ?? false, env: options.env, store: options.store },
      flagsOf(options),
    );
  });
  withRunFlags(
    withPayloadFlags(
      backups
        .command('prune')
        .description(
          'apply the retention policy in each backup store: keep the last N verified backups, then daily/weekly/monthly ones; delete the rest',
        ),
      'prune',
      ['env', 'store', 'dryRun', 'policy', 'confirm'],
    ),
  ).action(async (options) => {
    await run('prune', payloadOf('prune', options), flagsOf(options));
  });
  backups
    .command('download')
    .description(
      "write a custom-format backup's archive, as stored (encrypted ones stay so), to a file; its sha256 is checked",
    )
    .argument('<id>', 'backup id')
    .requiredOption('--out <file>', 'the file to write (must not exist)')
    .option('--store <name>', 'from this backup store (default: the first that holds it)')
    .action(async (id: string, options: { out: string; store?: string }) => {
      const [{ BackupCatalogue }, { downloadArchive }] = await Promise.all([
        import('../../backups/catalogue.js'),
        import('../../backups/transfer.js'),
      ]);
      const { manifest, store } = await downloadArchive(
        BackupCatalogue.of(cliConfig()),
        id,
        options.out,
        options.store,
      );
      out(
        `${options.out}: backup ${manifest.id} from the ${store} store (${humanSize(manifest.sizeBytes)}, sha256 ${manifest.sha256})`,
      );
    });
  backups
    .command('sync')
    .description('copy into each backup store the backups it lacks, from a store that holds them (checked on the way)')
    .option('--from <name>', 'copy from this store only')
    .option('--to <name>', 'copy into this store only')
    .option('--env <env>', 'only the backups of this environment')
    .option('--json', 'print what was copied as JSON')
    .action(async (options: { from?: string; to?: string; env?: string; json?: boolean }) => {
      const [{ BackupCatalogue }, { syncStores }, { LOCAL_QUEUE, newJobId }, { normalizeEnvName }] = await Promise.all([
        import('../../backups/catalogue.js'),
        import('../../backups/transfer.js'),
        import('../../job-ids.js'),
        import('../../config.js'),
      ]);
      const config = cliConfig();
      const job = { prefix: config.QUEUE_PREFIX, queue: LOCAL_QUEUE, id: newJobId('sync') };
      const copied = await syncStores(BackupCatalogue.of(config), {
        from: options.from,
        to: options.to,
        env: options.env ? normalizeEnvName(options.env) : undefined,
        job,
        onSkipped: warnSkipped,
        onCopied: (item) => {
          if (!options.json)
            out(
              `${item.ok ? 'copied' : 'FAILED'} ${item.id}: ${item.from} -> ${item.to}${item.reason ? ` (${item.reason})` : ''}`,
            );
        },
      });
      if (options.json) printJson(copied);
      else if (copied.length === 0) out('every store holds every backup already');
      if (copied.some((item) => !item.ok))
        throw new CliExit(EXIT.failed, `${copied.filter((item) => !item.ok).length} backups could not be copied`);
    });
  backups
    .command('sign')
    .description(
      'vouch for backups dbops did not sign (made before it signed its manifests): each is signed once its archive matches it. Run it once, on a trusted host, after checking that nobody else wrote to the stores',
    )
    .argument('[ids...]', 'the backups to sign (or --all)')
    .option('--all', 'every unsigned backup in every store')
    .option('--env <env>', 'only the backups of this environment')
    .option('--resign', 'also those signed with another key (after BACKUP_SIGNING_KEY changed)')
    .option('--json', 'print what was signed as JSON')
    .action(async (ids: string[], options: { all?: boolean; env?: string; resign?: boolean; json?: boolean }) => {
      if ((ids.length === 0) === !options.all)
        throw new ValidationError('name the backups to sign, or --all (one of them)');
      const [{ BackupCatalogue }, { normalizeEnvName }] = await Promise.all([
        import('../../backups/catalogue.js'),
        import('../../config.js'),
      ]);
      const signed = await BackupCatalogue.of(cliConfig()).signUnsigned({
        env: options.env ? normalizeEnvName(options.env) : undefined,
        ids: ids.length ? ids : undefined,
        resign: options.resign ?? false,
        onSigned: (item) => {
          if (!options.json)
            out(
              `${item.signed ? 'signed' : 'NOT signed'} ${item.id} in the ${item.store} store${item.reason ? `: ${item.reason}` : ''}`,
            );
        },
      });
      if (options.json) printJson(signed);
      else if (signed.length === 0) out('nothing to sign: every backup in the stores is signed with this key');
      const refused = signed.filter((item) => !item.signed);
      if (refused.length > 0)
        throw new CliExit(
          EXIT.failed,
          `${refused.length} backups were not signed: their archives do not match their manifests`,
        );
    });
}
