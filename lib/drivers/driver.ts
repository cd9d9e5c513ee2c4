/**
 * The graph driver contract, as Docker's `graphdriver.ProtoDriver` / `Driver`, with Promise-returning methods.
 * @module
 */
import type { Readable } from 'node:stream';

import type { Change } from '../archive/change';
import type { NativeBindings } from '../native/types';

export { ChangeKind, type Change } from '../archive/change';

/** Options for {@link ProtoDriver.create} and {@link ProtoDriver.createReadWrite}. */
export interface CreateOpts {
  /** SELinux mount label (passed through to mounts as `context=`). */
  mountLabel?: string;
  /** Per-layer options such as `{ size: '10G' }` where the driver supports quotas. */
  storageOpt?: Record<string, string>;
}

/** Options for {@link ProtoDriver.get}. */
export interface MountOpts {
  /** SELinux mount label. */
  mountLabel?: string;
  /** Extra mount options. */
  options?: string[];
}

/** The part of a driver every backend implements itself. */
export interface ProtoDriver {
  /** 'aufs' | 'devicemapper' | 'overlay2' | 'btrfs' | 'vfs'. */
  readonly name: string;
  /** Creates a read-only layer `id` on top of `parent` (null/undefined for a base layer). */
  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void>;
  /** Creates a read-write (container) layer. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void>;
  /** Removes layer `id`; refused while it is mounted. */
  remove(id: string): Promise<void>;
  /** Mounts (reference counted) and returns the path of the layer's root filesystem. */
  get(id: string, opts?: MountOpts): Promise<string>;
  /** Releases one {@link get}; the last release unmounts. */
  put(id: string): Promise<void>;
  /** Whether layer `id` exists. */
  exists(id: string): Promise<boolean>;
  /** Ordered key/value pairs describing the driver (Docker's keys). */
  status(): Promise<Array<[string, string]>>;
  /** Driver-specific metadata of a layer (paths, device names), null when there is none. */
  getMetadata(id: string): Promise<Record<string, string> | null>;
  /** Unmounts everything and releases devices; the driver is unusable afterwards. */
  cleanup(): Promise<void>;
}

/** A full driver: a ProtoDriver plus layer diffs. */
export interface Driver extends ProtoDriver {
  /** Uncompressed tar of the layer's changes against `parent` (aufs/OCI whiteouts). */
  diff(id: string, parent?: string | null): Promise<Readable>;
  /** The layer's changes against `parent`, sorted by path. */
  changes(id: string, parent?: string | null): Promise<Change[]>;
  /** Applies a tar diff into layer `id`; resolves to the bytes applied. */
  applyDiff(id: string, parent: string | null | undefined, diff: Readable): Promise<number>;
  /** Size in bytes of the layer's changes against `parent`. */
  diffSize(id: string, parent?: string | null): Promise<number>;
}

/** Dependencies a driver's init may be given (tests inject mocked bindings). */
export interface DriverDeps {
  bindings?: NativeBindings;
}

/** A driver constructor as registered with {@link registerDriver}. */
export type DriverInit = (home: string, options: string[], deps: DriverDeps) => Promise<Driver>;
