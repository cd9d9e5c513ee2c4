/**
 * Docker's graphdriver.NaiveDiffDriver: turns any {@link ProtoDriver} into a full {@link Driver} by mounting a
 * layer (and its parent) with get/put and comparing the two trees with the archive engine.
 * @module
 */
import { Readable } from 'node:stream';

import { applyLayer } from '../archive/apply';
import type { Change } from '../archive/change';
import { changesDirs, diffSize } from '../archive/changes';
import { exportChanges } from '../archive/diff';
import type { NativeBindings } from '../native/types';
import type { CreateOpts, Driver, MountOpts, ProtoDriver } from './driver';
import { checkParentId } from './layer-id';

/** Options of {@link NaiveDiffDriver}. */
export interface NaiveDiffOptions {
  /** Native bindings used by the archive engine (default: the real addon). */
  bindings?: NativeBindings;
  /** How whiteouts are stored in the layers: a naive driver keeps whole trees, so whiteouts become deletions. */
  format?: 'naive';
  /**
   * After a diff stream ends, wait until the second in which the diff started is over (default true), as Docker
   * does. Layers applied from a tar carry whole-second mtimes, and the naive comparison treats a whole-second
   * mtime as equal to any time within that second; without the wait, a same-size edit made right after a commit
   * (within the same second) would be invisible to the next diff.
   */
  secondBoundary?: boolean;
}

/** Runs `fn` and then `release`; a failure of `release` is reported only when `fn` itself succeeded. */
async function releasing<T>(fn: () => Promise<T>, release: () => Promise<void>): Promise<T> {
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    await release().catch(() => undefined);
    throw e;
  }
  await release();
  return result;
}

/** Resolves once the wall clock has passed the second in which `startMs` lies (timers may fire a little early). */
async function untilNextSecond(startMs: number): Promise<void> {
  const boundary = Math.floor(startMs / 1000) * 1000 + 1000;
  for (let now = Date.now(); now < boundary; now = Date.now()) {
    await new Promise((resolve) => setTimeout(resolve, boundary - now));
  }
}

/**
 * A readable that forwards `source` and calls `release` exactly once: before it signals the end (so a consumer
 * that sees 'end' may remove the layer right away), when the source fails, or when the consumer destroys it early
 * (then 'close' is emitted only after the release has finished). A failing release fails the stream.
 */
class ReleasingReadable extends Readable {
  private readonly sourceIter: AsyncIterator<unknown>;
  private pumping = false;
  private releasing: Promise<void> | null = null;

  constructor(
    private readonly source: Readable,
    private readonly releaseFn: () => Promise<void>,
    private readonly beforeEnd: () => Promise<void>,
  ) {
    super();
    this.sourceIter = source[Symbol.asyncIterator]();
  }

  private release(): Promise<void> {
    this.releasing ??= this.releaseFn();
    return this.releasing;
  }

  override _read(): void {
    if (this.pumping) return;
    this.pumping = true;
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const r = await this.sourceIter.next();
        if (this.destroyed) return;
        if (r.done) {
          await this.release();
          await this.beforeEnd();
          if (!this.destroyed) this.push(null);
          return;
        }
        if (!this.push(r.value)) return;
      }
    } catch (e) {
      this.destroy(e instanceof Error ? e : new Error(String(e)));
    } finally {
      this.pumping = false;
    }
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (!this.source.destroyed) this.source.destroy();
    this.release().then(
      () => cb(err),
      (e: unknown) => cb(err ?? (e instanceof Error ? e : new Error(String(e)))),
    );
  }
}

/**
 * A full driver made of a ProtoDriver plus the naive diff methods (Docker's NaiveDiffDriver). Every ProtoDriver
 * method delegates to the wrapped driver; every get is matched by a put on every path, errors included.
 */
export class NaiveDiffDriver implements Driver {
  /** Native bindings for the archive engine (undefined: the engine loads the real addon). */
  protected readonly bindings: NativeBindings | undefined;
  private readonly secondBoundary: boolean;

  constructor(
    /** The wrapped driver. */
    protected readonly proto: ProtoDriver,
    opts: NaiveDiffOptions = {},
  ) {
    if (opts.format !== undefined && opts.format !== 'naive') {
      throw new TypeError(`NaiveDiffDriver: unsupported whiteout format ${JSON.stringify(opts.format)}`);
    }
    this.bindings = opts.bindings;
    this.secondBoundary = opts.secondBoundary ?? true;
  }

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

  private archiveOpts(): { bindings?: NativeBindings } {
    return this.bindings ? { bindings: this.bindings } : {};
  }

  /** Runs `fn` with layer `id` mounted, and puts it afterwards whatever happens. */
  protected async withLayer<T>(id: string, fn: (root: string) => Promise<T>): Promise<T> {
    const root = await this.proto.get(id);
    return releasing(() => fn(root), () => this.proto.put(id));
  }

  /**
   * Tar of the layer's changes against `parent` (all of the layer when there is none). The layer stays mounted
   * until the stream ends, fails or is destroyed; the parent only while the changes are computed, as Docker does.
   */
  async diff(id: string, parent?: string | null): Promise<Readable> {
    const parentId = checkParentId(parent);
    const started = Date.now();
    const layerFs = await this.proto.get(id);
    let handedOver = false;
    try {
      const changes =
        parentId === null
          ? await changesDirs(layerFs, null, this.archiveOpts())
          : await this.withLayer(parentId, (parentFs) => changesDirs(layerFs, parentFs, this.archiveOpts()));
      const tar = exportChanges(layerFs, changes, this.archiveOpts());
      const out = new ReleasingReadable(
        tar,
        () => this.proto.put(id),
        () => (this.secondBoundary ? untilNextSecond(started) : Promise.resolve()),
      );
      handedOver = true;
      return out;
    } finally {
      if (!handedOver) await this.proto.put(id).catch(() => undefined);
    }
  }

  /** The layer's changes against `parent` (all Add when there is none), sorted by path. */
  async changes(id: string, parent?: string | null): Promise<Change[]> {
    const parentId = checkParentId(parent);
    return this.withLayer(id, (layerFs) =>
      parentId === null
        ? changesDirs(layerFs, null, this.archiveOpts())
        : this.withLayer(parentId, (parentFs) => changesDirs(layerFs, parentFs, this.archiveOpts())),
    );
  }

  /**
   * Extracts a tar diff into layer `id` (whiteouts become deletions); resolves to the bytes of file content
   * applied. `parent` is not used: the layer already holds its parent's content.
   */
  async applyDiff(id: string, _parent: string | null | undefined, diff: Readable): Promise<number> {
    return this.withLayer(id, async (layerFs) => {
      const r = await applyLayer(layerFs, diff, { ...this.archiveOpts(), format: 'naive' });
      return r.size;
    });
  }

  /** Size in bytes of the files added or modified in the layer against `parent` (hardlinks counted once). */
  async diffSize(id: string, parent?: string | null): Promise<number> {
    const changes = await this.changes(id, parent);
    return this.withLayer(id, (layerFs) => diffSize(changes, layerFs, this.archiveOpts()));
  }
}
