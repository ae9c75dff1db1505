import type { Config } from '../config.js';
import { ValidationError } from '../errors.js';
import type { RecoveryContext } from '../ownership.js';
import { FileStore } from './file-store.js';
import {
  backupIdSchema,
  lastVerification,
  type Manifest,
  type SkippedManifest,
  type Verification,
} from './manifest.js';
import { sealFor, type Seal } from './signing.js';
import { S3Store } from './s3-store.js';
import type { BackupStore } from './store.js';
import { WorkArea } from './work-area.js';

export interface SignedManifest {
  id: string;
  store: string;
  signed: boolean;
  reason?: string;
}

/** A backup as the catalogue lists it: its manifest (from the first store that holds it) and every store that does. */
export interface ListedBackup {
  manifest: Manifest;
  stores: string[];
}

/**
 * Every backup store of BACKUP_STORES, as one catalogue: the manifests in the stores are the
 * catalogue (nothing about backups lives only in Redis or on one host's disk). A backup is read from
 * the first store that holds it, or from the one named.
 */
type CatalogueConfig = Pick<Config, 'backupStores' | 'backupDir' | 's3'>;
const catalogues = new WeakMap<CatalogueConfig, BackupCatalogue>();

export class BackupCatalogue {
  /** One catalogue per configuration: its stores' clients (an S3 client and its open connections) serve every job and request. */
  static of(config: CatalogueConfig): BackupCatalogue {
    let catalogue = catalogues.get(config);
    if (!catalogue) {
      catalogue = new BackupCatalogue(config);
      catalogues.set(config, catalogue);
    }
    return catalogue;
  }

  readonly stores: BackupStore[];
  /** BACKUP_DIR: where jobs keep their work in progress on this host. */
  readonly workArea: WorkArea;
  private readonly seal: () => Promise<Seal>;

  private constructor(config: CatalogueConfig) {
    const configured =
      config.backupStores.length !== 1 ||
      config.backupStores[0]!.kind !== 'file' ||
      config.backupStores[0]!.dir !== config.backupDir;
    const seal = (this.seal = () => sealFor(config));
    this.stores = config.backupStores.map((spec) =>
      spec.kind === 'file'
        ? new FileStore(spec.dir, seal, spec.name, configured ? 'BACKUP_STORES' : 'BACKUP_DIR')
        : new S3Store(spec, seal, config.s3),
    );
    this.workArea = new WorkArea(config.backupDir);
  }

  /** The store named `name` (as BACKUP_STORES names it); every store when none is named. */
  select(name?: string): BackupStore[] {
    if (name === undefined) return this.stores;
    const store = this.stores.find((candidate) => candidate.name === name);
    if (!store) {
      throw new ValidationError(
        `no backup store is named "${name}" (BACKUP_STORES has ${this.stores.map((one) => one.name).join(', ')})`,
        [{ path: 'store', message: 'no such backup store' }],
      );
    }
    return [store];
  }

  /**
   * One entry per backup dbops can prove its own, oldest first, with the stores that hold it; and
   * every object that looks like a manifest but is not (unsigned, forged, misnamed, damaged), with why.
   */
  async listing(
    filter: { env?: string; store?: string } = {},
  ): Promise<{ backups: ListedBackup[]; skipped: SkippedManifest[] }> {
    const stores = this.select(filter.store);
    const lists = await Promise.all(stores.map((store) => store.list()));
    const byId = new Map<string, ListedBackup>();
    lists.forEach(({ manifests }, index) => {
      for (const manifest of manifests) {
        if (filter.env && manifest.env !== filter.env) continue;
        const listed = byId.get(manifest.id);
        if (listed) listed.stores.push(stores[index]!.name);
        else byId.set(manifest.id, { manifest, stores: [stores[index]!.name] });
      }
    });
    return {
      backups: [...byId.values()].sort((a, b) => a.manifest.completedAt.localeCompare(b.manifest.completedAt)),
      skipped: lists.flatMap((list) => list.skipped),
    };
  }

  /** One entry per backup dbops can prove its own, oldest first, with the stores that hold it. */
  async listWithStores(filter: { env?: string; store?: string } = {}): Promise<ListedBackup[]> {
    return (await this.listing(filter)).backups;
  }

  async list(filter: { env?: string; store?: string } = {}): Promise<Manifest[]> {
    return (await this.listWithStores(filter)).map((listed) => listed.manifest);
  }

  /**
   * The newest backup of an environment (of one `database` of it; only one whose newest check passed,
   * with `verified`), if any, and the objects that were passed over for not being dbops' own.
   */
  async newest(
    env: string,
    options: { database?: string; verified?: boolean; store?: string; atRevision?: string } = {},
  ): Promise<{ manifest?: Manifest; skipped: SkippedManifest[] }> {
    const { backups, skipped } = await this.listing({ env, store: options.store });
    const manifest = backups
      .map((listed) => listed.manifest)
      .filter(
        (candidate) =>
          (options.database === undefined || candidate.database === options.database) &&
          (!options.verified || lastVerification(candidate)?.ok === true) &&
          (options.atRevision === undefined ||
            candidate.schemaVersion?.revisions.includes(options.atRevision) === true),
      )
      .at(-1);
    return { manifest, skipped };
  }

  /** Looks a backup up by id only (ids that could name a path are refused first), in `store` or the first that holds it. */
  async get(id: string, storeName?: string): Promise<{ manifest: Manifest; store: BackupStore }> {
    const parsed = backupIdSchema.safeParse(id);
    if (!parsed.success) throw new ValidationError(`invalid backup id "${id}": ${parsed.error.issues[0]?.message}`);
    for (const store of this.select(storeName)) {
      const manifest = await store.read(parsed.data);
      if (!manifest) continue;
      if (manifest.id !== parsed.data)
        throw new ValidationError(`backup "${id}": its manifest in the ${store.name} store names another backup`);
      return { manifest, store };
    }
    const where = storeName ? ` in the ${storeName} store` : '';
    throw new ValidationError(`unknown backup "${id}"${where}`, [{ path: 'backup', message: 'no such backup' }]);
  }

  /**
   * Vouches for manifests dbops did not sign (made before it signed them; or, with `resign`, signed with
   * another key): each is signed once its archive is found to match it. Only ever run by a person, on a
   * trusted host (`manage-db backups sign`): no job, no HTTP route, reaches it.
   */
  async signUnsigned(options: {
    env?: string;
    ids?: string[];
    resign?: boolean;
    onSigned?: (item: SignedManifest) => void;
  }): Promise<SignedManifest[]> {
    const done: SignedManifest[] = [];
    const seal = await this.seal();
    for (const store of this.stores) {
      for (const skipped of (await store.list()).skipped) {
        const manifest = skipped.unsigned;
        if (!manifest) continue;
        if (options.env && manifest.env !== options.env) continue;
        if (options.ids && !options.ids.includes(manifest.id)) continue;
        // A manifest signed with one of this host's keys that does not check was changed: never signed again.
        if (manifest.signature && (!options.resign || seal.knowsKey(manifest.signature.keyId))) continue;
        const integrity = await store.checkIntegrity(manifest);
        const item: SignedManifest = integrity.ok
          ? { id: manifest.id, store: store.name, signed: true }
          : {
              id: manifest.id,
              store: store.name,
              signed: false,
              reason: `its archive does not match it: ${integrity.reason}`,
            };
        if (integrity.ok) await store.writeManifest(manifest);
        done.push(item);
        options.onSigned?.(item);
      }
    }
    return done;
  }

  /** Adds the outcome of a check to the backup's manifest in every store that holds it (kept to the last 20). */
  async recordVerification(id: string, verification: Verification): Promise<void> {
    for (const store of this.stores) {
      const manifest = await store.read(id).catch(() => undefined);
      if (!manifest) continue;
      await store.writeManifest({
        ...manifest,
        verifications: [...(manifest.verifications ?? []), verification].slice(-20),
      });
    }
  }

  /** What dead jobs of this prefix left in the work area and in every store. */
  async recover(context: RecoveryContext): Promise<void> {
    await this.workArea.recover(context);
    for (const store of this.stores) {
      await store
        .recover(context)
        .catch((error: unknown) =>
          context.logger.warn({ err: error, store: store.name }, 'could not recover the store'),
        );
    }
  }
}
