import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import type { JobRef } from '../job-ids.js';
import type { RecoveryContext } from '../ownership.js';
import type { BackupStore } from '../backups/store.js';
import { connect } from '../postgres/client.js';
import { serverBinDir } from '../postgres/binaries.js';
import { inRecovery } from '../postgres/wal.js';
import { verifyBaseDirectory } from './base-backup.js';
import { tablespacesCreated } from './tablespace-records.js';
import type { PitrArchive } from './wal-archive.js';
import type { RecoveryPlan, RecoveryTarget } from './window.js';

/*
 * A temporary PostgreSQL instance that replays a base backup and the archived WAL up to a target, in a
 * private directory of its own (`$TMPDIR/dbops-pitr-*`): listening on a socket in that directory only
 * (never on the network), trusting only local connections to it, never running as root (a root worker
 * runs it as PITR_OS_USER). Stopped and removed on success, failure and cancellation; one a dead worker
 * left is found by its owner file and removed by recovery.
 */

const OWNER_FILE = 'dbops-pitr.json';
const PORT = 5432;
const run = promisify(execFile);

export interface RecoveryInstance {
  /** A URL to `database` on the instance, over its private socket. */
  url(database: string): string;
  /** Where recovery stopped, as the instance's log said it. */
  stoppedAt?: string;
  stop(): Promise<void>;
}

export interface RecoveryOptions {
  config: Config;
  archive: PitrArchive;
  store: BackupStore;
  plan: RecoveryPlan;
  target: RecoveryTarget;
  job: JobRef;
  /** The role the temporary instance is asked as (the source environment's user). */
  user: string;
  signal: AbortSignal;
  progress(percent: number, step: string): void;
  log(line: string): void;
}

/** The uid and gid the instance runs as: PITR_OS_USER for a root worker, else the worker's own. */
async function instanceUser(config: Config): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = config.PITR_OS_USER;
  if (!name)
    throw new PermanentError(
      'the worker runs as root and PostgreSQL does not: set PITR_OS_USER to the unprivileged user that runs the temporary recovery instance',
    );
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    throw new PermanentError(`PITR_OS_USER: there is no user "${name}" on this host`);
  }
}

async function chownTree(dir: string, owner: { uid: number; gid: number }): Promise<void> {
  await run('chown', ['-R', `${owner.uid}:${owner.gid}`, dir]);
}

function targetSettings(target: RecoveryTarget): string[] {
  if ('time' in target)
    return [`recovery_target_time=${new Date(target.time).toISOString().replace('T', ' ').replace('Z', '+00')}`];
  if ('lsn' in target) return [`recovery_target_lsn=${target.lsn}`];
  return [];
}

export async function startRecovery(options: RecoveryOptions): Promise<RecoveryInstance> {
  const { config, archive, store, plan, signal } = options;
  const owner = await instanceUser(config);
  const binDir = await serverBinDir(plan.base.major, config.PG_BIN_DIR, 'postgres');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dbops-pitr-'));
  const data = path.join(dir, 'data');
  const wal = path.join(dir, 'wal');
  const socket = path.join(dir, 'socket');
  let child: ResultPromise | undefined;
  const stopCheck = new AbortController();
  let release: (() => Promise<void>) | undefined;
  const removeAll = async () => {
    stopCheck.abort();
    await release?.().catch(() => undefined);
    if (child && child.exitCode === null) {
      child.kill('SIGQUIT');
      await Promise.race([child.catch(() => undefined), sleep(10_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      await child.catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await writeFile(
      path.join(dir, OWNER_FILE),
      JSON.stringify({ job: options.job, pid: process.pid, host: os.hostname() }),
      { mode: 0o600 },
    );
    await Promise.all([mkdir(data, { mode: 0o700 }), mkdir(wal, { mode: 0o700 }), mkdir(socket, { mode: 0o700 })]);
    // Marked before it is read, until the instance is gone: retention leaves it alone meanwhile.
    release = await store.markInUse(plan.base.id, options.job);
    options.progress(5, `fetching base backup ${plan.base.id}`);
    await archive.openBase(
      store,
      plan.base,
      async (tar) => {
        const extract = execa('tar', ['-C', data, '-xf', '-'], { input: tar, cancelSignal: signal });
        await extract;
      },
      (tree) => cp(tree, data, { recursive: true }),
      signal,
    );
    options.log(`fetched base backup ${plan.base.id} (${plan.base.startLsn} to ${plan.base.stopLsn})`);
    await refuseLinks(data);
    // A tar's sha256 was checked as it was read; a directory is checked against its backup_manifest,
    // while the WAL is fetched.
    const checking =
      plan.base.storage === 'tree'
        ? verifyBaseDirectory(binDir, data, AbortSignal.any([signal, stopCheck.signal])).catch((error: unknown) => {
            throw new PermanentError(
              `base backup ${plan.base.id} in the ${store.name} store is damaged: ${(error as Error).message}`,
            );
          })
        : undefined;
    checking?.catch(() => undefined);
    let fetched = 0;
    for (const entry of [...plan.history, ...plan.wal]) {
      signal.throwIfAborted();
      await archive.fetchWal(store, entry, path.join(wal, entry.name), signal, plan.base.walSegmentBytes);
      fetched += 1;
      options.progress(10 + Math.round((25 * fetched) / (plan.wal.length + plan.history.length)), 'fetching WAL');
    }
    options.log(`fetched ${plan.wal.length} WAL segment(s), checked against their sidecars`);
    if (checking) {
      await checking;
      options.log(`base backup ${plan.base.id} checked against its backup_manifest`);
    }
    const created = await tablespacesCreated(
      binDir,
      [path.join(data, 'pg_wal'), wal],
      plan.base.startLsn,
      options.target,
      signal,
    );
    if (created.length > 0)
      throw new PermanentError(
        `the WAL to replay creates ${created.map((one) => `tablespace ${one.oid} at "${one.location}" (at ${one.lsn})`).join(', ')}, after base backup ${plan.base.id}: ` +
          'recovery would write into that directory, which the live server uses. Take a base backup after it (backup --physical: base backups hold their tablespaces) and restore to a point after that one',
      );
    await linkTablespaces(data, path.join(dir, 'tablespaces'));
    for (const leftover of ['postmaster.pid', 'postmaster.opts', 'standby.signal'])
      await rm(path.join(data, leftover), { force: true });
    await writeFile(path.join(data, 'recovery.signal'), '');
    // The server's own settings stay behind, postgresql.auto.conf's too (ALTER SYSTEM): they may name
    // commands (recovery_end_command, archive_cleanup_command) that would run on this host, libraries,
    // or a standby's delay. The instance runs with the settings below alone.
    for (const file of ['postgresql.conf', 'postgresql.auto.conf'])
      await writeFile(path.join(data, file), '# dbops: a temporary recovery instance\n');
    await writeFile(path.join(dir, 'pg_hba.conf'), 'local all all trust\n');
    await writeFile(path.join(dir, 'pg_ident.conf'), '');
    if (owner) await chownTree(dir, owner);
    const settings = [
      `listen_addresses=`,
      `unix_socket_directories=${socket}`,
      `port=${PORT}`,
      `hba_file=${path.join(dir, 'pg_hba.conf')}`,
      `ident_file=${path.join(dir, 'pg_ident.conf')}`,
      'ssl=off',
      'archive_mode=off',
      'hot_standby=off',
      'fsync=off',
      'synchronous_commit=off',
      'synchronous_standby_names=',
      'primary_conninfo=',
      'primary_slot_name=',
      'max_wal_senders=0',
      'logging_collector=off',
      'log_destination=stderr',
      'cluster_name=dbops-pitr',
      `restore_command=cp "${wal}/%f" "%p"`,
      'recovery_end_command=',
      'archive_cleanup_command=',
      'recovery_target_action=promote',
    ];
    const lines: string[] = [];
    const launch = (target: RecoveryTarget) => {
      const args = ['-D', data, ...[...settings, ...targetSettings(target)].flatMap((setting) => ['-c', setting])];
      const postgres = path.join(binDir ?? '', 'postgres');
      // As PITR_OS_USER when the worker is root: setpriv drops to it and then runs postgres itself.
      const [file, argv] = owner
        ? ['setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', postgres, ...args]]
        : [postgres, args];
      const started = execa(file, argv, {
        stdin: 'ignore',
        stdout: 'ignore',
        stderr: 'pipe',
        buffer: false,
        reject: false,
        env: { LANG: 'C', PATH: process.env.PATH ?? '/usr/bin:/bin' },
        extendEnv: false,
      });
      let restored = 0;
      started.stderr?.setEncoding('utf8');
      let pending = '';
      started.stderr?.on('data', (chunk: string) => {
        pending += chunk;
        const parts = pending.split('\n');
        pending = parts.pop() ?? '';
        for (const line of parts) {
          lines.push(line);
          if (lines.length > 200) lines.shift();
          if (line.includes('restored log file')) {
            restored += 1;
            options.progress(35 + Math.round((30 * restored) / Math.max(1, plan.wal.length)), 'replaying WAL');
          }
        }
      });
      return started;
    };
    const url = (database: string) =>
      `postgresql://${encodeURIComponent(options.user)}@localhost/${encodeURIComponent(database)}?host=${encodeURIComponent(socket)}&port=${PORT}`;
    options.progress(35, 'replaying WAL');
    child = launch(options.target);
    let ready = await waitReady(child, url('postgres'), signal);
    if (
      !ready &&
      !('latest' in options.target) &&
      lines.some((line) => line.includes('recovery ended before configured recovery target'))
    ) {
      // The plan fetched WAL up to the target (the window holds it), but recovery stops only on a record
      // past it: to a time, a transaction that ended after it; to a position, the record that starts
      // there, which the archive may not hold whole yet. Without one, the state at the target is the
      // state at the end of the WAL fetched.
      options.log(
        'time' in options.target
          ? 'no transaction committed after the target time in the archived WAL: recovering to its end'
          : 'the archived WAL holds no whole record past the target position yet: recovering to its end',
      );
      child = launch({ latest: true });
      ready = await waitReady(child, url('postgres'), signal);
    }
    if (!ready) {
      const said =
        lines
          .filter((line) => /FATAL|PANIC|ERROR/.test(line))
          .slice(-3)
          .join('; ') || lines.slice(-3).join('; ');
      throw new PermanentError(`the recovery instance stopped before recovery ended: ${said}`);
    }
    const stoppedAt = lines
      .map(
        (line) =>
          /recovery stopping (?:before|after) .*|redo done at \S+|last completed transaction was at log time .*/.exec(
            line,
          )?.[0],
      )
      .filter(Boolean)
      .join('; ');
    if (stoppedAt) options.log(`recovery: ${stoppedAt}`);
    const instance: RecoveryInstance = { url, stop: removeAll, ...(stoppedAt ? { stoppedAt } : {}) };
    return instance;
  } catch (error) {
    await removeAll();
    throw error;
  }
}

/**
 * A base backup dbops made holds no link (its tablespaces are directories) and no tablespace_map (the
 * links PostgreSQL makes at startup): one found in it, pg_wal linked to a live server's, say, could
 * make the instance write anywhere on this host.
 */
async function refuseLinks(data: string): Promise<void> {
  if (existsSync(path.join(data, 'tablespace_map')))
    throw new PermanentError(
      'the base backup holds a tablespace_map (links PostgreSQL would make to the directories it names): refusing to recover from it',
    );
  for (const entry of await readdir(data, { recursive: true, withFileTypes: true })) {
    if (!entry.isSymbolicLink()) continue;
    const link = path.join(entry.parentPath, entry.name);
    throw new PermanentError(
      `the base backup holds a link, ${path.relative(data, link)} -> ${await readlink(link)}: refusing to recover from it`,
    );
  }
}

/**
 * A base backup holds each tablespace as a directory pg_tblspc/<oid> (base-backup.ts); PostgreSQL wants a
 * link there. Each moves to `into`, in the instance's own directory, and is linked from its place.
 */
async function linkTablespaces(data: string, into: string): Promise<void> {
  const links = path.join(data, 'pg_tblspc');
  for (const name of await readdir(links).catch(() => [] as string[])) {
    const entry = path.join(links, name);
    if (!/^\d+$/.test(name) || !(await lstat(entry)).isDirectory())
      throw new PermanentError(`the base backup's pg_tblspc/${name} is not a tablespace: refusing to recover from it`);
    await mkdir(into, { recursive: true, mode: 0o700 });
    await rename(entry, path.join(into, name));
    await symlink(path.join(into, name), entry);
  }
}

/** True once the instance answers as a primary; false when it exited first. */
async function waitReady(child: ResultPromise, url: string, signal: AbortSignal): Promise<boolean> {
  while (child.exitCode === null && child.signalCode === null) {
    signal.throwIfAborted();
    try {
      const client = await connect(url, 'dbops:pitr');
      try {
        if (!(await inRecovery(client))) return true;
      } finally {
        await client.end().catch(() => undefined);
      }
    } catch {
      // starting up, or still recovering
    }
    await sleep(250);
  }
  return false;
}

/** Stops and removes the temporary instances of this prefix's jobs that are no longer running. */
export async function recoverInstances({ prefix, isJobActive, logger }: RecoveryContext): Promise<void> {
  const root = os.tmpdir();
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith('dbops-pitr-')) continue;
    const dir = path.join(root, name);
    let owner: { job?: JobRef; host?: string };
    try {
      owner = JSON.parse(await readFile(path.join(dir, OWNER_FILE), 'utf8')) as typeof owner;
    } catch {
      continue; // not provably ours: left alone
    }
    if (!owner.job || owner.job.prefix !== prefix || owner.host !== os.hostname()) continue;
    if (await isJobActive(owner.job)) continue;
    const pid = Number(
      (await readFile(path.join(dir, 'data', 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0],
    );
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGQUIT');
        await sleep(1_000);
      } catch {
        // gone already
      }
    }
    await rm(dir, { recursive: true, force: true });
    logger.info({ dir }, 'removed a recovery instance a dead job left');
  }
}
