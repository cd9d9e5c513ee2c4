/**
 * The part every full driver built on a {@link ProtoDriver} shares: the ProtoDriver methods, forwarded to the
 * wrapped driver unchanged (Docker embeds the ProtoDriver in its NaiveDiffDriver for the same effect).
 * @module
 */
import type { CreateOpts, MountOpts, ProtoDriver } from './driver';

/**
 * Forwards every {@link ProtoDriver} method to the wrapped driver. Full drivers ({@link NaiveDiffDriver}, the aufs
 * and overlay2 drivers) extend it and add the diff methods.
 *
 * @example
 * ```ts
 * import { changesDirs, DelegatingDriver, loadBindings, VfsProtoDriver, type Change } from 'graphdriver';
 *
 * // create, get, put, remove, ... go to the wrapped vfs driver; the subclass adds what it needs
 * class ChangesDriver extends DelegatingDriver<VfsProtoDriver> {
 *   changes(id: string, parent: string): Promise<Change[]> {
 *     return changesDirs(this.proto.dir(id), this.proto.dir(parent));
 *   }
 * }
 * const driver = new ChangesDriver(await VfsProtoDriver.open('/var/lib/graphdriver/vfs', [], loadBindings()));
 * await driver.createReadWrite('c1', 'base');
 * console.log(driver.name, await driver.changes('c1', 'base')); // 'vfs', what c1 changed against base
 * ```
 */
export class DelegatingDriver<P extends ProtoDriver = ProtoDriver> implements ProtoDriver {
  constructor(
    /** The wrapped driver. */
    protected readonly proto: P,
  ) {}

  get name(): string {
    return this.proto.name;
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.proto.create(id, parent, opts);
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.proto.createReadWrite(id, parent, opts);
  }

  remove(id: string): Promise<void> {
    return this.proto.remove(id);
  }

  get(id: string, opts?: MountOpts): Promise<string> {
    return this.proto.get(id, opts);
  }

  put(id: string): Promise<void> {
    return this.proto.put(id);
  }

  exists(id: string): Promise<boolean> {
    return this.proto.exists(id);
  }

  status(): Promise<Array<[string, string]>> {
    return this.proto.status();
  }

  getMetadata(id: string): Promise<Record<string, string> | null> {
    return this.proto.getMetadata(id);
  }

  cleanup(): Promise<void> {
    return this.proto.cleanup();
  }
}
