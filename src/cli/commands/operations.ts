import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { CliExit, ValidationError } from '../../errors.js';
import { EXIT, parseWholeNumber } from '../io.js';
import { runOperation } from '../lazy.js';
import type { OperationType } from '../../operations/index.js';
import type { RunFlags, RunOperation } from '../run-flags.js';
import { derivedCommand, payloadFlag, payloadOf, withPayloadFlags } from '../payload-flags.js';

export type RegisterCommand = (program: Command, run?: RunOperation) => void;

/** The flags every operation command shares. */
export function withRunFlags(command: Command): Command {
  return command
    .option('--wait', 'follow the job to its end; exit non-zero if it fails (the default for a status, list or report)')
    .option('--no-wait', 'print the job id and return, even for a status, list or report')
    .option('--json', 'with --wait: print only the result object, as JSON')
    .option('--cancel-on-interrupt', 'with --wait: Ctrl-C cancels the job (by default the job goes on)')
    .option('--local', 'run in this process without Redis (emergency mode)');
}

export const flagsOf = (options: RunFlags): RunFlags => ({
  wait: options.wait,
  json: options.json,
  local: options.local,
  cancelOnInterrupt: options.cancelOnInterrupt,
});

const BACKUP_FIELDS = ['env', 'format', 'jobs', 'compress', 'allDatabases', 'digests'];

export function registerBackup(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    withPayloadFlags(
      program.command('backup').description('back up an environment with pg_dump into BACKUP_DIR'),
      'backup',
      BACKUP_FIELDS,
    ).option(
      '--physical',
      "a base backup of the environment's whole server (pg_basebackup), for point-in-time recovery (docs/pitr.md)",
    ),
  ).action(async (options) => {
    const payload = payloadOf('backup', options, BACKUP_FIELDS);
    if (options.physical) {
      if (Object.keys(payload).some((field) => field !== 'env'))
        throw new ValidationError('--physical takes only --env: a base backup is of the whole server, as it is');
      await run('physicalbackup', { env: options.env }, flagsOf(options));
      return;
    }
    await run('backup', payload, flagsOf(options));
  });
}

export function registerRestore(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('restore')
      .description('restore a backup into an environment (through a shadow database, swapped in on success)')
      .addOption(payloadFlag('restore', 'env'))
      .option('--backup <id>', 'backup id (see `backups list`)')
      .option('--latest', "the newest verified backup of --from's database (default: the target's own)")
      .option('--from <env>', 'with --latest: whose newest verified backup')
      .option(
        '--at-revision <rev>',
        "with --latest: the newest whose schema was at this migration revision (backups list's SCHEMA)",
      )
      .addOption(payloadFlag('restore', 'store'))
      .addOption(payloadFlag('restore', 'confirm'))
      .addOption(payloadFlag('restore', 'jobs'))
      .addOption(payloadFlag('restore', 'keepPrevious'))
      .addOption(payloadFlag('restore', 'sourceSettings'))
      .option(
        '--create-roles',
        'first create the roles the backup needs that the server lacks (no passwords, no privileged attributes)',
      )
      .option(
        '--allow-role-attributes <list>',
        'with --create-roles: what created roles may keep, comma-separated: SUPERUSER, REPLICATION, BYPASSRLS, CREATEROLE, CREATEDB, PREDEFINED_ROLES (LOGIN is always kept)',
        (value: string) =>
          value
            .split(',')
            .map((item) => item.trim().toUpperCase())
            .filter(Boolean),
      )
      .option('--no-owner', 'restore without owners and grants, for a server without those roles')
      .option(
        '--table <schema.table>',
        'only this table (repeatable), from the backup: needs --suffix or --replace; no other table is touched',
        collect,
      )
      .option(
        '--schema <schema>',
        'like --table, for every table of this schema the backup holds (repeatable)',
        collect,
      )
      .option('--suffix <suffix>', 'with --table: each table comes back beside the live one as <table><suffix>')
      .option(
        '--replace',
        "with --table: the backup's rows replace the table's, in one transaction; the live rows are kept as <table>_prev_<time>",
      )
      .option('--to-time <iso8601>', "with --from: --from's database as it was at this moment (point-in-time recovery)")
      .option('--to-lsn <lsn>', 'with --from: as it was at this WAL position')
      .option('--latest-wal', 'with --from: as far as the archived WAL goes')
      .option('--verify', 'with --to-*: compare every table of the recovered database with the shadow before the swap'),
  ).action(async (options) => {
    const pointInTime = [options.toTime, options.toLsn, options.latestWal].filter((value) => value !== undefined);
    if (pointInTime.length > 0) {
      if (pointInTime.length > 1) throw new ValidationError('name one of --to-time, --to-lsn, --latest-wal');
      if (!options.from) throw new ValidationError('--to-time, --to-lsn and --latest-wal go with --from ENV');
      if (options.backup || options.latest || options.table || options.schema)
        throw new ValidationError('a point-in-time restore takes no --backup, --latest, --table or --schema');
      await run(
        'pitr',
        {
          env: options.env,
          from: options.from,
          toTime: options.toTime,
          toLsn: options.toLsn,
          latestWal: options.latestWal ? true : undefined,
          confirm: options.confirm,
          store: options.store,
          keepPrevious: options.dropPrevious ? false : undefined,
          verify: options.verify ?? false,
        },
        flagsOf(options),
      );
      return;
    }
    if (options.from && !options.latest)
      throw new ValidationError('--from goes with --latest or --to-time, --to-lsn, --latest-wal');
    const selected = options.table ?? options.schema;
    if ((options.suffix !== undefined || options.replace) && !selected)
      throw new ValidationError(`${options.replace ? '--replace' : '--suffix'} goes with --table or --schema`);
    if (selected) {
      if ((options.suffix === undefined) === !options.replace)
        throw new ValidationError(
          '--table and --schema need either --suffix (each table comes back beside the live one as <table><suffix>) or --replace',
        );
      await run(
        'restoretables',
        {
          env: options.env,
          backup: options.backup,
          tables: options.table,
          schemas: options.schema,
          suffix: options.suffix,
          replace: options.replace ?? false,
          store: options.store,
          confirm: options.confirm,
        },
        flagsOf(options),
      );
      return;
    }
    await run(
      'restore',
      {
        env: options.env,
        backup: options.backup,
        latest: options.latest ? (options.from ?? options.env) : undefined,
        atRevision: options.atRevision,
        confirm: options.confirm,
        store: options.store,
        jobs: options.jobs,
        keepPrevious: options.dropPrevious ? false : undefined,
        sourceSettings: options.sourceSettings ?? false,
        createRoles: options.createRoles ?? false,
        allowRoleAttributes: options.allowRoleAttributes,
        noOwner: options.owner === false,
      },
      flagsOf(options),
    );
  });
}

/** Reads SQL files named on the command line; the job carries their text, not their paths. */
function readSqlFiles(files: string[]): { name: string; sql: string }[] {
  return files.map((file) => {
    try {
      return { name: path.basename(file), sql: readFileSync(file, 'utf8') };
    } catch (error) {
      throw new ValidationError(
        `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
  });
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * `schema.table:condition`, split at the first colon; or `schema.table:N%` (a sample of N % of the
 * rows) and `schema.table:N% order by EXPR` (the first N % in that order).
 */
function parseSubset(
  text: string,
): { table: string; where: string } | { table: string; percent: number; orderBy?: string } {
  const colon = text.indexOf(':');
  if (colon < 1 || colon === text.length - 1)
    throw new ValidationError(`--subset "${text}": expected schema.table:SQL condition, or schema.table:N%`);
  const table = text.slice(0, colon).trim();
  const rule = text.slice(colon + 1).trim();
  const share = /^(\d+(?:\.\d+)?)\s*%(?:\s+order\s+by\s+(\S[\s\S]*))?$/i.exec(rule);
  if (!share) return { table, where: rule };
  return { table, percent: Number(share[1]), ...(share[2] ? { orderBy: share[2].trim() } : {}) };
}

/** A masking policy file (YAML, or JSON, which is YAML too), as the payload carries it. */
async function readPolicy(file: string | undefined): Promise<unknown> {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ValidationError(
      `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const { parse } = await import('yaml');
  try {
    return parse(text) as unknown;
  } catch (error) {
    throw new ValidationError(`${file} is not YAML: ${(error as Error).message.split('\n')[0]}`);
  }
}

export function registerCopy(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('copy')
      .description("copy one environment's database into another (through a shadow database, swapped in on success)")
      .requiredOption('--from <env>', 'source environment')
      .option('--to <env>', 'target environment (replaced)')
      .addOption(payloadFlag('copy', 'confirm'))
      .addOption(payloadFlag('copy', 'jobs'))
      .option('--sanitize <file>', 'SQL run in the copy before it becomes visible (repeatable)', collect)
      .option(
        '--mask <policy.yml>',
        'mask the copy by this policy (docs/masking.md); a column it does not cover fails the copy',
      )
      .option(
        '--mask-report',
        "print the source's columns the policy (or no policy) does not cover, as a starting policy",
      )
      .option(
        '--subset <table:rule>',
        "copy only these rows ('public.rental:rental_date > now() - interval ''30 days''', 'public.customer:5%', 'public.customer:5% order by create_date desc') and every row they reference (repeatable)",
        collect,
      )
      .addOption(
        new Option(
          '--with <children>',
          'with --subset: also every row that references a chosen row, transitively',
        ).choices(['children']),
      )
      .addOption(
        new Option('--rest <all|empty>', 'with --subset: the tables no rule names and no kept row references').choices([
          'all',
          'empty',
        ]),
      )
      .option('--verify', 'compare every table of source and copy (row count and content hash)')
      .addOption(payloadFlag('copy', 'keepPrevious'))
      .addOption(payloadFlag('copy', 'sourceSettings')),
  ).action(async (options) => {
    if (options.maskReport) {
      await run('maskreport', { from: options.from, mask: await readPolicy(options.mask) }, flagsOf(options));
      return;
    }
    if (options.to === undefined) throw new CliExit(EXIT.invalid, "required option '--to <env>' not specified");
    await run(
      'copy',
      {
        from: options.from,
        to: options.to,
        confirm: options.confirm,
        jobs: options.jobs,
        sanitize: readSqlFiles(options.sanitize ?? []),
        mask: await readPolicy(options.mask),
        subset: options.subset?.map(parseSubset),
        rest: options.rest,
        withChildren: options.with === 'children',
        verify: options.verify ?? false,
        keepPrevious: options.dropPrevious ? false : undefined,
        sourceSettings: options.sourceSettings ?? false,
      },
      flagsOf(options),
    );
  });
}

/** `90s`, `15m`, `2h`, `1h30m` or plain seconds. */
export function parseDuration(value: string): number {
  const match = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$/.exec(value.trim());
  if (!match || value.trim() === '')
    throw new ValidationError(`"${value}" is not a duration (e.g. 90s, 15m, 2h, 1h30m)`);
  const [, hours = '0', minutes = '0', seconds = '0'] = match;
  return Number(hours) * 3600 + Number(minutes) * 60 + Number(seconds);
}

export function registerTriggers(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('triggers')
      .description('list, enable, disable, create or drop triggers')
      .argument('<action>', 'list | enable | disable | create | drop')
      .addOption(payloadFlag('triggers', 'env'))
      .option('--table <schema.table>', 'only this table')
      .option('--name <trigger>', 'only this trigger')
      .option('--file <sql>', 'create: the SQL definition')
      .option(
        '--for <duration>',
        'disable: switch back on after this long (e.g. 30m), even if this worker dies',
        parseDuration,
      )
      .addOption(payloadFlag('triggers', 'confirm')),
  ).action(async (action: string, options) => {
    await run(
      'triggers',
      {
        env: options.env,
        action,
        table: options.table,
        name: options.name,
        sql: options.file ? readSqlFiles([options.file])[0]!.sql : undefined,
        forSeconds: options.for,
        confirm: options.confirm,
      },
      flagsOf(options),
    );
  });
}

export function registerMaintenance(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('maintenance')
      .description('vacuum, analyze or reindex a table or the whole database; or report on its health')
      .argument('<action>', 'vacuum | analyze | reindex | report')
      .addOption(payloadFlag('maintenance', 'env'))
      .option('--table <schema.table>', 'only this table (default: every table)')
      .option('--analyze', 'vacuum: also analyze')
      .option('--full', 'vacuum: VACUUM FULL (rewrites tables under an exclusive lock)')
      .option(
        '--lock-timeout <ms>',
        'skip a table whose lock does not come within this many milliseconds',
        parseWholeNumber,
      )
      .addOption(payloadFlag('maintenance', 'confirm')),
  ).action(async (action: string, options) => {
    await run(
      'maintenance',
      {
        env: options.env,
        action,
        table: options.table,
        analyze: options.analyze ?? false,
        full: options.full ?? false,
        lockTimeoutMs: options.lockTimeout,
        confirm: options.confirm,
      },
      flagsOf(options),
    );
  });
}

export function registerPrevious(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('previous')
      .description('list, or drop, the earlier versions of a database that restores and copies kept')
      .argument('<action>', 'list | drop')
      .addOption(payloadFlag('previous', 'env'))
      .option('--name <database>', 'drop: the kept database (see previous list)')
      .addOption(payloadFlag('previous', 'confirm')),
  ).action(async (action: string, options) => {
    await run('previous', { env: options.env, action, name: options.name, confirm: options.confirm }, flagsOf(options));
  });
}

export function registerMigrate(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('migrate')
      .description(
        'run migrations: Alembic (alembic.ini), Flask-Migrate (a migrations/ folder, run with FLASK_APP) or node-pg-migrate SQL files',
      )
      .argument('[action]', 'status | up | down', 'up')
      .argument('[n]', 'up: how many pending; down: how many to revert (default 1)')
      .addOption(payloadFlag('migrate', 'env'))
      .option('--dir <path>', 'migrations directory', 'migrations')
      .option('--to <rev>', 'up: apply pending migrations up to this one (an Alembic revision, or a file name)')
      .option('--kind <kind>', 'sql, alembic or flask (default: detected from the folder)')
      .option('--dry-run', 'print the SQL that would run; change nothing')
      .option('--backup-first', 'a backup job of the environment must succeed before any migration runs')
      .option(
        '--rehearse',
        'first apply the pending migrations to a scratch restore of the latest backup; the real run only if that succeeded (with --dry-run: the rehearsal alone)',
      )
      .addOption(payloadFlag('migrate', 'confirm')),
  ).action(async (action: string, n: string | undefined, options) => {
    await run(
      'migrate',
      {
        env: options.env,
        dir: path.resolve(options.dir),
        action,
        count: n === undefined ? undefined : parseWholeNumber(n),
        target: options.to,
        kind: options.kind,
        dryRun: options.dryRun ?? false,
        backupFirst: options.backupFirst ?? false,
        rehearse: options.rehearse ?? false,
        confirm: options.confirm,
      },
      flagsOf(options),
    );
  });
}

/** `manage-db <type>` for an operation no command of its own enqueues: flags and payload from its schema alone. */
export const registerDerived =
  (type: OperationType): RegisterCommand =>
  (program, run = runOperation) => {
    withRunFlags(derivedCommand(program, type)).action(async (options) => {
      await run(type, payloadOf(type, options), flagsOf(options));
    });
  };

/** Any registered operation, payload as JSON: a new operation type is usable before it has a command of its own. */
export function registerEnqueue(program: Command, run: RunOperation = runOperation): void {
  withRunFlags(
    program
      .command('enqueue')
      .description('enqueue a job of any operation type with a JSON payload, e.g. enqueue backup \'{"env":"staging"}\'')
      .argument('<type>', 'operation type')
      .argument('[payload]', 'the job payload as JSON', '{}'),
  ).action(async (type: string, payload: string, options) => {
    const { isOperationType, operationTypes } = await import('../../operations/index.js');
    if (!isOperationType(type))
      throw new ValidationError(`unknown operation type "${type}" (one of: ${operationTypes.join(', ')})`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload);
    } catch {
      throw new ValidationError('the payload is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new ValidationError('the payload must be a JSON object');
    await run(type, parsed as Record<string, unknown>, flagsOf(options));
  });
}
