import { open, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../config.js';
import { errorMessage } from '../errors.js';
import { scrubSecrets } from '../secrets.js';
import type { Logger } from '../logger.js';
import { privateDir } from '../backups/work-area.js';
import { connect } from '../postgres/client.js';
import { serverBinDir } from '../postgres/binaries.js';
import { StderrTail, finishTool, startTool } from '../postgres/tools.js';
import { resolveTarget } from '../postgres/target.js';
import {
  advanceSlot,
  ensureSlot,
  serverFacts,
  walPosition,
  type ServerFacts,
  type WalPosition,
} from '../postgres/wal.js';
import { GrowingSegment } from './growing-segment.js';
import { PitrArchive, type ServerStatus } from './wal-archive.js';
import {
  HISTORY_NAME,
  SEGMENT_NAME,
  formatLsn,
  parseLsn,
  parseSegmentName,
  segmentEnd,
  segmentName,
} from './wal-names.js';

/*
 * The WAL archiver: one per PostgreSQL server across all hosts (a lock decides which). It streams the
 * server's WAL with pg_receivewal into a spool directory on this host, and from there into every backup
 * store, compressed and with its checksum. The replication slot is dbops' own: it is advanced only as far
 * as every store holds, so the server keeps whatever is not archived yet, whichever archiver dies and
 * wherever the next one runs. A new archiver resumes from its spool, or, with an empty one (another
 * host), right after the stores' last segment.
 */

export const SLOT = 'dbops_wal';
/** The application name pg_receivewal connects with (tools.ts sets PGAPPNAME to `dbops-<tool>`). */
export const RECEIVER_NAME = 'dbops-pg_receivewal';
const ROUND_MS = 250;
const RENEW_MS = 2_000;
const STATUS_MS = 1_000;
/** Between two rounds while a store fails. */
const FAILING_ROUND_MS = 1_000;

/** Who archives which server: held by one archiver process at a time, renewed while it runs. */
export interface ServerLock {
  acquire(server: string): Promise<boolean>;
  /** False when the lock was lost (expired and taken): the archiver stops at once. */
  renew(server: string): Promise<boolean>;
  release(server: string): Promise<void>;
}

export interface ArchiverReport {
  server: string;
  envs: Record<string, string>;
  host: string;
  pid: number;
  /** What the server had written (absent when it did not answer), what the receiver flushed, and what the stores hold. */
  serverLsn?: string;
  receivedLsn?: string;
  archivedLsn?: string;
  lagBytes?: number;
  lagSeconds?: number;
  slotRetainedBytes?: number;
  slotLimitBytes?: number;
  caughtUpAt?: string;
  at: string;
  warning?: string;
  /** Why the archiver cannot archive right now (a store or the server failing): it keeps trying. */
  error?: string;
}

export interface ArchiverOptions {
  config: Config;
  logger: Logger;
  lock: ServerLock;
  report(report: ArchiverReport): Promise<void>;
  /** The environments of PITR_ENVS whose server did not answer (none: all answered), said after each attempt. */
  reportUnreachable(envs: UnreachableEnv[]): Promise<void>;
}

/** An environment of PITR_ENVS whose server the archiver cannot reach, since when, and why. */
export interface UnreachableEnv {
  env: string;
  error: string;
  since: string;
}

interface ServerGroup {
  facts: ServerFacts;
  envs: Record<string, string>;
  url: string;
}

/**
 * The servers of these environments (default: PITR_ENVS), grouped by system identifier. An environment
 * whose server does not answer is reported, not fatal: the others are archived meanwhile.
 */
export async function pitrServers(
  config: Config,
  envs: string[] = config.pitrEnvs,
): Promise<{ groups: ServerGroup[]; unreachable: { env: string; error: string }[] }> {
  // Asked all at once: a server that does not answer costs its timeout once, not once per environment before it.
  type Answer =
    { env: string; target: ReturnType<typeof resolveTarget>; facts: ServerFacts } | { env: string; error: string };
  const answers = await Promise.all(
    envs.map(async (env): Promise<Answer> => {
      const target = resolveTarget(config, env);
      try {
        const client = await connect(target.url, 'dbops:wal', env);
        try {
          return { env, target, facts: await serverFacts(client) };
        } finally {
          await client.end().catch(() => undefined);
        }
      } catch (error) {
        return { env, error: errorMessage(error) };
      }
    }),
  );
  const groups = new Map<string, ServerGroup>();
  const unreachable: { env: string; error: string }[] = [];
  for (const answer of answers) {
    if (!('facts' in answer)) {
      unreachable.push({ env: answer.env, error: answer.error });
      continue;
    }
    const { env, target, facts } = answer;
    const group = groups.get(facts.systemId) ?? { facts, envs: {}, url: target.url };
    group.envs[env] = target.database;
    groups.set(facts.systemId, group);
  }
  return { groups: [...groups.values()], unreachable };
}

/** How long the archiver waits before asking again for a server that did not answer. */
const DISCOVERY_RETRY_MS = 15_000;

/**
 * Runs the archiver for every server of PITR_ENVS until `signal` aborts. A server that does not answer
 * at the start is asked again every 15 s; the others are archived meanwhile.
 */
export async function runArchiver(options: ArchiverOptions, signal: AbortSignal): Promise<void> {
  const running = new Map<string, { group: ServerGroup; run: Promise<void> }>();
  const since = new Map<string, string>();
  let pending = options.config.pitrEnvs;
  while (pending.length > 0 && !signal.aborted) {
    const { groups, unreachable } = await pitrServers(options.config, pending);
    for (const { env } of unreachable) if (!since.has(env)) since.set(env, new Date().toISOString());
    await options
      .reportUnreachable(
        unreachable.map(({ env, error }) => ({
          env,
          error: scrubSecrets(error, options.config.secrets),
          since: since.get(env)!,
        })),
      )
      .catch((error: unknown) => options.logger.warn({ err: error }, 'cannot report the unreachable servers'));
    for (const group of groups) {
      const known = running.get(group.facts.systemId);
      if (known) Object.assign(known.group.envs, group.envs);
      else running.set(group.facts.systemId, { group, run: new ServerArchiver(options, group).run(signal) });
    }
    for (const { env, error } of unreachable)
      options.logger.error(
        { env, error },
        `cannot reach ${env}'s server: archiving the others, and asking again in ${DISCOVERY_RETRY_MS / 1000} s`,
      );
    pending = unreachable.map(({ env }) => env);
    if (pending.length > 0) await sleep(DISCOVERY_RETRY_MS, undefined, { signal }).catch(() => undefined);
  }
  await Promise.all([...running.values()].map(({ run }) => run));
}

class LostLock extends Error {}

class ServerArchiver {
  private readonly server: string;
  private readonly spool: string;
  private readonly uploaded = new Set<string>();
  /** The segment being received, compressed as far as it was stored. */
  private growing?: GrowingSegment;
  private partialFlushed?: string;
  private archivedLsn?: bigint;
  private caughtUpAt?: string;
  private lastStatusWrite = 0;
  private lastWarning = 0;
  private lastFailure?: string;
  private lastFailureLog = 0;
  private lastPrune = 0;
  /** Where the slot was last advanced to. */
  private slotAt?: bigint;

  constructor(
    private readonly options: ArchiverOptions,
    private readonly group: ServerGroup,
  ) {
    this.server = group.facts.systemId;
    this.spool = path.join(options.config.backupDir, '.pitr-spool', this.server);
  }

  private get logger(): Logger {
    return this.options.logger;
  }

  async run(signal: AbortSignal): Promise<void> {
    const { lock } = this.options;
    let waiting = false;
    while (!signal.aborted) {
      if (!(await lock.acquire(this.server).catch(() => false))) {
        if (!waiting) this.logger.info({ server: this.server }, 'another archiver holds this server; standing by');
        waiting = true;
        await sleep(RENEW_MS, undefined, { signal }).catch(() => undefined);
        continue;
      }
      waiting = false;
      this.logger.info({ server: this.server, envs: this.group.envs }, 'archiving WAL');
      try {
        await this.archive(signal);
      } catch (error) {
        if (error instanceof LostLock) this.logger.warn({ server: this.server }, 'lost the archiver lock: stopping');
        // Logged (once a minute while it lasts) and reported by reportFailure.
        else if (!signal.aborted) await this.reportFailure(error);
      } finally {
        await lock.release(this.server).catch(() => undefined);
      }
      await sleep(1_000, undefined, { signal }).catch(() => undefined);
    }
  }

  private async archive(outer: AbortSignal): Promise<void> {
    const { config } = this.options;
    const binDir = await serverBinDir(this.group.facts.major, config.PG_BIN_DIR, 'pg_receivewal');
    const archive = await PitrArchive.of(config);
    await privateDir(this.spool);
    const client = await connect(this.group.url, 'dbops:wal');
    try {
      await ensureSlot(client, SLOT);
      await this.seedSpool(archive);
      const swept = await archive.sweepLeftovers(this.server);
      if (swept > 0)
        this.logger.info({ server: this.server, swept }, 'removed what a killed archiver left half-written');
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    const stop = new AbortController();
    const onOuter = () => stop.abort();
    outer.addEventListener('abort', onOuter, { once: true });
    let receiver: Promise<void> | undefined;
    try {
      let lastRenew = Date.now();
      let failing = false;
      while (!outer.aborted) {
        if (Date.now() - lastRenew > RENEW_MS) {
          if (!(await this.options.lock.renew(this.server))) throw new LostLock();
          lastRenew = Date.now();
        }
        receiver ??= this.receive(binDir, stop.signal).finally(() => {
          receiver = undefined;
        });
        // The server's position now, and a moment later what the receiver flushed, which is at least
        // that (its lag is milliseconds): this round stores everything the server had at its start.
        const roundStart = new Date();
        const startLsn = parseLsn((await walPosition(client, SLOT, RECEIVER_NAME)).serverLsn);
        await sleep(failing ? FAILING_ROUND_MS : ROUND_MS, undefined, { signal: outer }).catch(() => undefined);
        if (outer.aborted) break;
        const position = await walPosition(client, SLOT, RECEIVER_NAME);
        // A store that fails does not stop the receiver: the spool and the slot keep the WAL meanwhile,
        // and the report says what fails while the slot's retained WAL grows.
        let failure: string | undefined;
        try {
          await this.uploadRound(archive, position, outer);
          this.caughtUp(roundStart, startLsn);
          if (Date.now() - this.lastPrune > 30_000) {
            this.lastPrune = Date.now();
            for (const store of archive.stores) await onStore(store, () => archive.prunePartials(store, this.server));
          }
          await this.writeStatus(archive);
        } catch (error) {
          if (outer.aborted) throw error;
          failure = this.failed(error);
        }
        // The slot keeps what the stores do not hold yet, wherever the archiver that takes over runs.
        if (this.archivedLsn !== undefined && this.archivedLsn !== this.slotAt) {
          await advanceSlot(client, SLOT, formatLsn(this.archivedLsn));
          this.slotAt = this.archivedLsn;
        }
        await this.report(position, failure);
        failing = failure !== undefined;
      }
    } finally {
      outer.removeEventListener('abort', onOuter);
      stop.abort();
      await receiver?.catch(() => undefined);
      await client.end().catch(() => undefined);
    }
  }

  /**
   * An empty spool (a new host, or one whose disk was lost): pg_receivewal is made to start at the
   * segment after the last one the stores hold, by a zero-filled partial segment of that name (it
   * streams a partial segment again from its start). The slot has kept that WAL on the server.
   */
  private async seedSpool(archive: PitrArchive): Promise<void> {
    const present = (await readdir(this.spool)).some((name) => SEGMENT_NAME.test(name.replace(/\.partial$/, '')));
    const store = archive.stores[0];
    if (present || !store) return;
    const { timeline, walSegmentBytes } = this.group.facts;
    let last: bigint | undefined;
    for (const entry of (await archive.walListing(store, this.server)).entries) {
      if (entry.partial || !SEGMENT_NAME.test(entry.name)) continue;
      const segment = parseSegmentName(entry.name, walSegmentBytes);
      if (segment.timeline === timeline && (last === undefined || segment.number > last)) last = segment.number;
    }
    if (last === undefined) return;
    const next = segmentName({ timeline, number: last + 1n }, walSegmentBytes);
    const handle = await open(path.join(this.spool, `${next}.partial`), 'w', 0o600);
    try {
      await handle.truncate(walSegmentBytes);
    } finally {
      await handle.close();
    }
    this.archivedLsn = segmentEnd({ timeline, number: last }, walSegmentBytes);
    this.logger.info({ server: this.server, from: next }, "resuming after the stores' last WAL segment");
  }

  /** pg_receivewal until it exits (then the loop starts it again) or is stopped. */
  private async receive(binDir: string | undefined, signal: AbortSignal): Promise<void> {
    const tail = new StderrTail();
    try {
      const child = startTool(
        'pg_receivewal',
        // No --slot: the slot is dbops' own, advanced only as far as the stores hold (see archive()).
        ['-D', this.spool, '--synchronous', '--no-loop', '--status-interval=1', '--no-password'],
        { url: this.group.url, binDir, signal, onStderrLine: (line) => tail.push(line) },
      );
      await finishTool('pg_receivewal', child, tail);
      this.logger.warn({ server: this.server }, 'pg_receivewal ended; starting it again');
    } catch (error) {
      if (!signal.aborted)
        this.logger.warn({ err: error, server: this.server }, 'pg_receivewal failed; starting it again');
    }
    await sleep(1_000, undefined, { signal }).catch(() => undefined);
  }

  /** Archives what the spool holds that is not archived yet; removes what a newer file made unneeded. */
  private async uploadRound(archive: PitrArchive, position: WalPosition, signal: AbortSignal): Promise<void> {
    const names = (await readdir(this.spool).catch(() => [] as string[])).sort();
    const segmentBytes = this.group.facts.walSegmentBytes;
    const complete = names.filter((name) => SEGMENT_NAME.test(name));
    const newest = names.filter((name) => SEGMENT_NAME.test(name.replace(/\.partial$/, ''))).at(-1);
    for (const name of [...names.filter((one) => HISTORY_NAME.test(one)), ...complete]) {
      const file = path.join(this.spool, name);
      if (!this.uploaded.has(name)) {
        // The segment that was growing: compressed already, but for the bytes that came last.
        const grown =
          this.growing?.name === name ? await this.growing.complete(file, (await stat(file)).size) : undefined;
        for (const store of archive.stores)
          await onStore(store, () =>
            grown
              ? archive.putCompressedWal(store, this.server, grown, { name, partial: false }, signal)
              : archive.putWal(store, this.server, file, { name, partial: false }, signal),
          );
        if (this.growing?.name === name) this.growing = undefined;
        this.uploaded.add(name);
        if (SEGMENT_NAME.test(name)) {
          const end = segmentEnd(parseSegmentName(name, segmentBytes), segmentBytes);
          if (this.archivedLsn === undefined || end > this.archivedLsn) this.archivedLsn = end;
        }
      }
      // pg_receivewal resumes after the newest file in its directory: that one stays.
      if (SEGMENT_NAME.test(name) && newest !== undefined && name < newest.replace(/\.partial$/, '')) {
        await rm(file, { force: true });
        this.uploaded.delete(name);
      }
    }
    const partial = names.find((name) => name.endsWith('.partial'));
    const flushed = position.flushLsn;
    if (partial && flushed && flushed !== this.partialFlushed) {
      const name = partial.replace(/\.partial$/, '');
      const file = path.join(this.spool, partial);
      // As far as it was received, the rest of the file is zeros: only that much is kept. A position
      // outside this segment (it was completed meanwhile) waits for the complete segment's round.
      const segment = parseSegmentName(name, segmentBytes);
      const length = Number(parseLsn(flushed) - segment.number * BigInt(segmentBytes));
      if (length <= 0 || length > segmentBytes) return;
      if (this.growing?.name !== name || length < this.growing.length) this.growing = new GrowingSegment(name);
      try {
        await this.growing.extend(file, length);
      } catch (error) {
        // Renamed to a complete segment meanwhile: the next round archives that one.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      const wal = this.growing.current();
      for (const store of archive.stores)
        await onStore(store, () =>
          archive.putCompressedWal(store, this.server, wal, { name, partial: true, flushLsn: flushed }, signal),
        );
      this.partialFlushed = flushed;
      const lsn = parseLsn(flushed);
      if (this.archivedLsn === undefined || lsn > this.archivedLsn) this.archivedLsn = lsn;
    }
  }

  private readonly samples: { at: Date; lsn: bigint }[] = [];

  /** The recovery point: the latest moment whose WAL (the server's position then) the stores hold in full. */
  private caughtUp(at: Date, serverLsn: bigint): void {
    this.samples.push({ at, lsn: serverLsn });
    if (this.samples.length > 1_000) this.samples.shift();
    const archived = this.archivedLsn;
    if (archived === undefined) return;
    let reached: Date | undefined;
    while (this.samples.length > 0 && this.samples[0]!.lsn <= archived) reached = this.samples.shift()!.at;
    if (reached) this.caughtUpAt = reached.toISOString();
  }

  /** The signed status in every store, at most once a second: what they hold, and up to when. */
  private async writeStatus(archive: PitrArchive): Promise<void> {
    if (this.archivedLsn === undefined || !this.caughtUpAt || Date.now() - this.lastStatusWrite <= STATUS_MS) return;
    const status: ServerStatus = {
      kind: 'dbops-wal-status',
      server: this.server,
      envs: this.group.envs,
      walSegmentBytes: this.group.facts.walSegmentBytes,
      timeline: this.group.facts.timeline,
      archivedLsn: formatLsn(this.archivedLsn),
      caughtUpAt: this.caughtUpAt,
      updatedAt: new Date().toISOString(),
    };
    for (const store of archive.stores) await onStore(store, () => archive.writeStatus(store, status));
    this.lastStatusWrite = Date.now();
  }

  /** What a failure is said as (secrets scrubbed), logged when it first happens and once a minute after. */
  private failed(error: unknown): string {
    const message = scrubSecrets(errorMessage(error), this.options.config.secrets);
    if (message !== this.lastFailure || Date.now() - this.lastFailureLog > 60_000) {
      this.lastFailure = message;
      this.lastFailureLog = Date.now();
      this.logger.error({ server: this.server, error: message }, 'cannot archive; trying again');
    }
    return message;
  }

  /** The archiver's report (Redis: the console, the API, /metrics), every round. */
  private async report(position: WalPosition | undefined, error?: string): Promise<void> {
    const warning = position && this.retainedWarning(position);
    await this.options
      .report({
        server: this.server,
        envs: this.group.envs,
        host: os.hostname(),
        pid: process.pid,
        ...(position
          ? {
              serverLsn: position.serverLsn,
              ...(position.flushLsn ? { receivedLsn: position.flushLsn } : {}),
              ...(position.lagBytes !== undefined ? { lagBytes: position.lagBytes } : {}),
              ...(position.flushLagSeconds !== undefined ? { lagSeconds: position.flushLagSeconds } : {}),
              ...(position.slotRetainedBytes !== undefined ? { slotRetainedBytes: position.slotRetainedBytes } : {}),
              ...(position.slotLimitBytes !== undefined ? { slotLimitBytes: position.slotLimitBytes } : {}),
            }
          : {}),
        ...(this.archivedLsn !== undefined ? { archivedLsn: formatLsn(this.archivedLsn) } : {}),
        ...(this.caughtUpAt ? { caughtUpAt: this.caughtUpAt } : {}),
        at: new Date().toISOString(),
        ...(warning ? { warning } : {}),
        ...(error ? { error } : {}),
      })
      .catch((failure: unknown) => this.logger.warn({ err: failure }, 'cannot report the archiver status'));
  }

  /**
   * Archiving could not start (the server or a store failing): said in the report, with the slot's
   * retained WAL when the server answers, until the next attempt.
   */
  private async reportFailure(error: unknown): Promise<void> {
    const message = this.failed(error);
    let position: WalPosition | undefined;
    try {
      const client = await connect(this.group.url, 'dbops:wal');
      try {
        position = await walPosition(client, SLOT, RECEIVER_NAME);
      } finally {
        await client.end().catch(() => undefined);
      }
    } catch {
      // the server does not answer: the report says what failed, without its position
    }
    await this.report(position, message);
  }

  /** Said (and logged once a minute) while the slot holds back more WAL than is safe for the server's disk. */
  private retainedWarning(position: WalPosition): string | undefined {
    const configured = this.options.config.PITR_SLOT_WARN_MB;
    const limit =
      configured !== undefined
        ? configured * 2 ** 20
        : position.slotLimitBytes
          ? position.slotLimitBytes * 0.8
          : 8 * 2 ** 30;
    const retained = position.slotRetainedBytes ?? 0;
    if (retained <= limit) return undefined;
    const warning = `the slot ${SLOT} keeps ${Math.round(retained / 2 ** 20)} MiB of WAL on the server (limit ${Math.round(limit / 2 ** 20)} MiB): the archiver is falling behind and the server's disk fills`;
    if (Date.now() - this.lastWarning > 60_000) {
      this.lastWarning = Date.now();
      this.logger.warn({ server: this.server, retainedBytes: retained }, warning);
    }
    return warning;
  }
}

/** `work` on one store: its failure names the store. */
async function onStore<T>(store: { name: string }, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw new Error(`store ${store.name}: ${errorMessage(error)}`, { cause: error });
  }
}
