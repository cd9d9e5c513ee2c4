/**
 * Container records: `<root>/containers/<id>.json`, written atomically. A container exists when both its record
 * and its layers (`layerdb/mounts/<id>`, the commit point) exist; the record is written just before the layers
 * are published and deleted just after they are unpublished, so a record without layers is a leftover of an
 * interrupted create or remove and is dropped at open.
 * @module
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { HEX64_RE } from '../layer/digest';
import { AmbiguousIdError, ContainerNotFoundError, InvalidStoreIdError } from '../storage/errors';
import { atomicWriteFile, fsyncDir, readDirIfExists, removeTempFiles, type SyncOpts } from '../storage/fsutil';

/** A container as the store shows it. */
export interface Container {
  /** 64 hex characters. */
  id: string;
  /** Unique name, when one was given. */
  name?: string;
  /** Id of the image it was created from. */
  image: string;
  /** Driver id of the read-write layer. */
  mountId: string;
  /** Driver id of the init layer (`<mountId>-init`). */
  initId: string;
  /** Creation time (RFC 3339). */
  created?: string;
  /** Chain id of the image's top layer (null for an image without layers). */
  layer?: string | null;
  /** Driver holding the container's layers. */
  driver?: string;
}

/** Docker's container name rule (without the leading '/'). */
export const CONTAINER_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

function parseRecord(text: string, id: string): Container | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (o.id !== id || typeof o.image !== 'string' || typeof o.mountId !== 'string' || typeof o.initId !== 'string') return null;
  const c: Container = { id, image: o.image, mountId: o.mountId, initId: o.initId };
  if (typeof o.name === 'string' && CONTAINER_NAME_RE.test(o.name)) c.name = o.name;
  if (typeof o.created === 'string') c.created = o.created;
  if (typeof o.layer === 'string' || o.layer === null) c.layer = o.layer;
  if (typeof o.driver === 'string') c.driver = o.driver;
  return c;
}

/**
 * Container records; see the module documentation.
 *
 * @example
 * ```ts
 * import * as path from 'node:path';
 * import { ContainerStore, Storage } from 'graphdriver';
 *
 * const store = await Storage.open({ root: '/var/lib/graphdriver' });
 * // the records Storage keeps in <root>/containers, loaded as Storage.open loads them
 * const hasLayers = (id: string): boolean => store.layerStore.getRWLayer(id) !== null;
 * const containers = await ContainerStore.open(path.join(store.root, 'containers'), store.driver.name, hasLayers);
 * const web = containers.resolve('web'); // full id, name or unique id prefix
 * console.log(web.id, web.image, web.mountId);
 * console.log(containers.usingImage(web.image)); // ids of every container made from that image
 * ```
 */
export class ContainerStore {
  private readonly containers = new Map<string, Container>();
  /** Records that could not be parsed. */
  readonly corrupt: Array<{ path: string; reason: string }> = [];

  private constructor(
    readonly dir: string,
    private readonly syncOpts: SyncOpts,
    private readonly driverName: string,
  ) {}

  /**
   * Loads the records of containers on driver `driverName` (records of other drivers sharing the root are left
   * alone); `hasLayers(id)` says whether the container's layers are published.
   */
  static async open(dir: string, driverName: string, hasLayers: (id: string) => boolean, sync = true): Promise<ContainerStore> {
    const s = new ContainerStore(dir, { sync }, driverName);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await removeTempFiles(dir);
    for (const name of await readDirIfExists(dir)) {
      const file = path.join(dir, name);
      const m = /^([0-9a-f]{64})\.json$/.exec(name);
      if (!m) {
        s.corrupt.push({ path: file, reason: 'unexpected file' });
        continue;
      }
      const id = m[1]!;
      const c = parseRecord(await fs.readFile(file, 'utf8'), id);
      if (!c) {
        // Records are written atomically, so this is outside damage: reported when the container is ours,
        // left alone otherwise (it may belong to another driver sharing the root).
        if (hasLayers(id)) s.corrupt.push({ path: file, reason: 'malformed container record' });
        continue;
      }
      if (c.driver !== undefined && c.driver !== driverName) continue;
      if (!hasLayers(id)) {
        // Interrupted create (record written, layers never published) or remove (layers gone first).
        await fs.rm(file, { force: true });
        continue;
      }
      s.containers.set(id, c);
    }
    return s;
  }

  private file(id: string): string {
    if (!HEX64_RE.test(id)) throw new InvalidStoreIdError('container id', id);
    return path.join(this.dir, `${id}.json`);
  }

  /** Writes a record (before the container's layers are published). */
  async write(c: Container): Promise<void> {
    await atomicWriteFile(this.file(c.id), JSON.stringify({ ...c, driver: this.driverName }), this.syncOpts, 0o600);
  }

  /** Makes a written record visible to lookups (after the layers are published). */
  add(c: Container): void {
    this.containers.set(c.id, { ...c, driver: this.driverName });
  }

  /** Deletes a record (after the container's layers are unpublished). */
  async remove(id: string): Promise<void> {
    await fs.rm(this.file(id), { force: true });
    await fsyncDir(this.dir, this.syncOpts);
    this.containers.delete(id);
  }

  /** Whether some container already has this name; resolves to its id. */
  nameOwner(name: string): string | undefined {
    for (const c of this.containers.values()) if (c.name === name) return c.id;
    return undefined;
  }

  /** Finds a container by full id, name, or unique id prefix. */
  resolve(idOrName: string): Container {
    if (typeof idOrName !== 'string' || idOrName === '' || idOrName.length > 128 || !/^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(idOrName)) {
      throw new InvalidStoreIdError('container id or name', idOrName);
    }
    const key = idOrName.startsWith('/') ? idOrName.slice(1) : idOrName;
    const exact = this.containers.get(key);
    if (exact) return { ...exact };
    for (const c of this.containers.values()) if (c.name === key) return { ...c };
    if (/^[0-9a-f]+$/.test(key)) {
      const hits = [...this.containers.values()].filter((c) => c.id.startsWith(key));
      if (hits.length === 1) return { ...hits[0]! };
      if (hits.length > 1) throw new AmbiguousIdError('container', key, hits.length);
    }
    throw new ContainerNotFoundError(idOrName);
  }

  /** All containers, sorted by id. */
  list(): Container[] {
    return [...this.containers.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((c) => ({ ...c }));
  }

  /** Ids of the containers created from an image. */
  usingImage(imageId: string): string[] {
    return [...this.containers.values()].filter((c) => c.image === imageId).map((c) => c.id);
  }

  /** Drops a record file found corrupt (verify repair). */
  async dropCorrupt(): Promise<string[]> {
    const out = this.corrupt.map((c) => c.path);
    for (const p of out) await fs.rm(p, { force: true });
    this.corrupt.length = 0;
    return out;
  }

  /** Forgets containers whose layers were dropped by a repair. */
  async forget(ids: Iterable<string>): Promise<void> {
    for (const id of ids) await this.remove(id);
  }

  /** Whether a record exists for this id. */
  has(id: string): boolean {
    return this.containers.has(id);
  }
}
