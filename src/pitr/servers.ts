import { PermanentError, errorMessage } from '../errors.js';
import type { BackupStore } from '../backups/store.js';
import type { BaseManifest, PitrArchive, ServerStatus, WalEntry } from './wal-archive.js';
import { recoveryWindow, type RecoveryWindow } from './window.js';

/** One server's archive as one store holds it: base backups, WAL, the archiver's status. */
export interface ServerArchive {
  store: BackupStore;
  server: string;
  bases: BaseManifest[];
  entries: WalEntry[];
  status?: ServerStatus;
  /** Objects passed over because they are not provably dbops' own, each with why. */
  skipped: string[];
}

export async function readServerArchive(
  archive: PitrArchive,
  store: BackupStore,
  server: string,
): Promise<ServerArchive> {
  const [{ bases, skipped: baseSkipped }, { entries, skipped: walSkipped }, status] = await Promise.all([
    archive.baseListing(store, server),
    archive.walListing(store, server),
    archive.readStatus(store, server),
  ]);
  const skipped = [...baseSkipped, ...walSkipped];
  if (status && 'refused' in status) skipped.push(`status.json: ${status.refused}`);
  return {
    store,
    server,
    bases,
    entries,
    ...(status && 'value' in status && status.value.server === server ? { status: status.value } : {}),
    skipped,
  };
}

function envsOf(one: ServerArchive): Record<string, string> {
  return { ...(one.bases.at(-1)?.envs ?? {}), ...(one.status?.envs ?? {}) };
}

export interface StoreWindow {
  store: string;
  window: RecoveryWindow;
  skipped: string[];
}

/**
 * Every server's recoverable window, per store (each store is a copy of its own). A store that cannot
 * be read is said with why, beside the others' windows.
 */
export async function serverWindows(
  archive: PitrArchive,
  filter: { env?: string; store?: string } = {},
): Promise<{ windows: StoreWindow[]; unreadable: { store: string; error: string }[] }> {
  const windows: StoreWindow[] = [];
  const unreadable: { store: string; error: string }[] = [];
  for (const store of archive.stores) {
    if (filter.store && store.name !== filter.store) continue;
    try {
      for (const server of await archive.servers(store)) {
        const one = await readServerArchive(archive, store, server);
        if (filter.env && envsOf(one)[filter.env] === undefined) continue;
        windows.push({
          store: store.name,
          window: recoveryWindow(server, one.bases, one.entries, one.status),
          skipped: one.skipped,
        });
      }
    } catch (error) {
      unreadable.push({ store: store.name, error: errorMessage(error) });
    }
  }
  return { windows, unreadable };
}

/** The archive of the server environment `env` lived on: from the first store (or the one named) that holds it. */
export async function archiveOfEnv(
  archive: PitrArchive,
  env: string,
  storeName?: string,
): Promise<ServerArchive & { database: string }> {
  const stores = archive.stores.filter((store) => !storeName || store.name === storeName);
  if (stores.length === 0) throw new PermanentError(`no backup store is named "${storeName}"`);
  for (const store of stores) {
    for (const server of await archive.servers(store)) {
      const one = await readServerArchive(archive, store, server);
      const database = envsOf(one)[env];
      if (database !== undefined) return { ...one, database };
    }
  }
  throw new PermanentError(
    `no point-in-time archive of "${env}" in ${stores.map((store) => store.location).join(', ')}: add it to PITR_ENVS, run the WAL archiver (npm run worker -- wal) and take a base backup (backup --physical)`,
  );
}
