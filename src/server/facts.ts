import type { Config } from '../config.js';
import { errorMessage } from '../errors.js';
import { withClient } from '../postgres/client.js';
import { describeServer, listPreviousDatabases, type PreviousDatabase } from '../postgres/databases.js';
import { withDatabase } from '../postgres/target.js';
import { redisLedger } from '../queue/ledger.js';
import type { RedisConnection } from '../queue/connection.js';
import { scrubSecrets } from '../secrets.js';
import type { ArchiverReport } from '../pitr/archiver.js';
import { serverWindows } from '../pitr/servers.js';
import { PitrArchive } from '../pitr/wal-archive.js';
import type { RecoveryWindow } from '../pitr/window.js';
import { archiverReports, unreachableEnvs } from '../queue/wal-archivers.js';

/**
 * Facts the server shows that cost a connection or a listing to learn (a database's size, a store's
 * manifests): learnt at most once per `ttlMs` for each key, however many requests ask meanwhile, so
 * that nobody (an unauthenticated visitor of the console least of all) can make the server open a
 * connection to every database per request. A failure is remembered as long, as what there is to show.
 */
export function factsCache<T>(ttlMs: number, learn: (key: string) => Promise<T>): (key: string) => Promise<T> {
  const known = new Map<string, { value: Promise<T>; until: number }>();
  return (key) => {
    const now = Date.now();
    const entry = known.get(key);
    if (entry && entry.until > now) return entry.value;
    const value = learn(key);
    known.set(key, { value, until: now + ttlMs });
    return value;
  };
}

/** What the server learns of an environment's database by connecting: read-only, for the console and the API. */
export type ServerFacts =
  | { reachable: true; version: string; sizeBytes: number; previous: PreviousDatabase[] }
  | { reachable: false; reason: string };

export async function serverFacts(config: Config, connection: RedisConnection, name: string): Promise<ServerFacts> {
  const env = config.environments.get(name);
  if (!env) return { reachable: false, reason: `no environment "${name}"` };
  try {
    const facts = await withClient(env.url, describeServer, 'dbops:facts', name);
    const previous = await withClient(
      withDatabase(env.url, config.PG_MAINTENANCE_DB),
      (client) => listPreviousDatabases(client, facts.database, redisLedger(connection, config)),
      'dbops:facts',
    );
    return { reachable: true, version: facts.version, sizeBytes: facts.sizeBytes, previous };
  } catch (error) {
    return { reachable: false, reason: scrubSecrets(errorMessage(error), config.secrets) };
  }
}

/** The store of an entry no store holds: a server the archiver cannot reach and that has no archive yet. */
export const NO_STORE = '-';

/** A server's point-in-time archive as one store holds it, with its archiver's latest report when one runs. */
export interface RecoveryFacts extends RecoveryWindow {
  store: string;
  archiver?: ArchiverReport;
}

/**
 * What each server's archive can recover (per store) and how its archiver is doing: for the console, the
 * API and /metrics. A store that cannot be read shows, for each archived server, that error instead of
 * a window; the archivers' reports are shown all the same.
 */
export async function recoveryFacts(
  config: Config,
  connection: RedisConnection,
  filter: { env?: string; store?: string } = {},
): Promise<RecoveryFacts[]> {
  const [{ windows, unreadable }, reports, unreachable] = await Promise.all([
    PitrArchive.of(config).then((archive) => serverWindows(archive, filter)),
    archiverReports(connection, config).catch(() => [] as ArchiverReport[]),
    unreachableEnvs(connection, config).catch(() => []),
  ]);
  const facts: RecoveryFacts[] = windows.map(({ store, window }) => {
    const archiver = reports.find((report) => report.server === window.server);
    return { store, ...window, ...(archiver ? { archiver } : {}) };
  });
  /** An entry that is an error alone: no window to show. */
  const errorOnly = (store: string, envs: Record<string, string>, message: string, archiver?: ArchiverReport) =>
    facts.push({
      store,
      server: archiver?.server ?? 'unknown',
      envs,
      baseBackups: [],
      segments: 0,
      errors: [message],
      ...(archiver ? { archiver } : {}),
    });
  const reported = reports.filter((report) => !filter.env || report.envs[filter.env] !== undefined);
  for (const { store, error } of unreadable) {
    const message = `cannot read the store: ${scrubSecrets(error, config.secrets)}`;
    if (reported.length === 0) errorOnly(store, {}, message);
    for (const archiver of reported) errorOnly(store, archiver.envs, message, archiver);
  }
  // A server the archiver cannot reach: said on its windows, or on an entry of its own when it has none.
  for (const { env, error, since } of unreachable) {
    if (filter.env && filter.env !== env) continue;
    const message = `the archiver cannot reach ${env}'s server (since ${since}): ${error}`;
    const known = facts.filter((one) => one.envs[env] !== undefined);
    for (const one of known) one.errors.push(message);
    if (known.length === 0) errorOnly(NO_STORE, { [env]: '' }, message);
  }
  return facts;
}
