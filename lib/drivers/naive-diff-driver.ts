/**
 * Docker's graphdriver.NaiveDiffDriver: turns any {@link ProtoDriver} into a full {@link Driver} by mounting a
 * layer (and its parent) with get/put and comparing the two trees with the archive engine.
 * @module
 */
import * as fs from 'node:fs/promises';
import { Readable } from 'node:stream';

import { applyLayer } from '../archive/apply';
import { ChangeKind, type Change } from '../archive/change';
import { changesDirs, diffSize } from '../archive/changes';
import { exportChanges } from '../archive/diff';
import { loadBindings } from '../native/bindings';
import type { NativeBindings } from '../native/types';
import { DelegatingDriver } from './delegating-driver';
import type { Driver, ProtoDriver } from './driver';
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
   * (within the same second) would be invisible to the next diff. Such an edit can only be mistaken for an entry
   * of the diff whose mtime lies in that second (or later), so the wait is skipped when every added or modified
   * path of the diff, looked at once the tar is written, was last changed (mtime and ctime) before the second in
   * which the diff started.
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
 * Whether some added or modified path of `changes` under `root` has an mtime in the second of `startMs` or later
 * (or cannot be looked at: then the answer is yes, so that the caller keeps waiting). One batched lstat.
 */
async function changedSince(root: string, changes: readonly Change[], startMs: number, b: NativeBindings): Promise<boolean> {
  const startSec = Math.floor(startMs / 1000);
  const paths = changes.filter((c) => c.kind !== ChangeKind.Delete).map((c) => (c.path === '/' ? '' : c.path.slice(1)));
  if (paths.length === 0) return false;
  try {
    const dir = await fs.open(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      const stats = await b.lstatMany(dir.fd, paths);
      if (!Array.isArray(stats) || stats.length !== paths.length) return true;
      // A path gone meanwhile was maybe written into the tar with a recent mtime: counted as recent. The ctime
      // catches an mtime set back (utimes) after the tar took the recent one.
      return stats.some((st) => st === null || st === undefined || st.mtimeSec >= startSec || st.ctimeSec >= startSec);
    } finally {
      await dir.close();
    }
  } catch {
    return true;
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
    /** Runs once the source has ended, before the release (the layer is still got). */
    private readonly afterSource: () => Promise<void> = () => Promise.resolve(),
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
          await this.afterSource();
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
 *
 * @example
 * ```ts
 * import * as fs from 'node:fs';
 * import { loadBindings, NaiveDiffDriver, VfsProtoDriver } from 'graphdriver';
 *
 * const bindings = loadBindings();
 * const proto = await VfsProtoDriver.open('/var/lib/graphdriver/vfs', [], bindings);
 * const driver = new NaiveDiffDriver(proto, { bindings }); // adds diff, changes, applyDiff and diffSize
 * await driver.create('base', null);
 * await driver.applyDiff('base', null, fs.createReadStream('base.tar'));
 * await driver.createReadWrite('c1', 'base');
 * console.log(await driver.changes('c1', 'base')); // the mounted trees of c1 and base compared
 * ```
 */
export class NaiveDiffDriver<P extends ProtoDriver = ProtoDriver> extends DelegatingDriver<P> implements Driver {
  /** Native bindings for the archive engine (undefined: the engine loads the real addon). */
  protected readonly bindings: NativeBindings | undefined;
  private readonly secondBoundary: boolean;

  /** `proto` is the wrapped driver. */
  constructor(proto: P, opts: NaiveDiffOptions = {}) {
    if (opts.format !== undefined && opts.format !== 'naive') {
      throw new TypeError(`NaiveDiffDriver: unsupported whiteout format ${JSON.stringify(opts.format)}`);
    }
    super(proto);
    this.bindings = opts.bindings;
    this.secondBoundary = opts.secondBoundary ?? true;
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
      let wait = this.secondBoundary;
      const out = new ReleasingReadable(
        tar,
        () => this.proto.put(id),
        () => (wait ? untilNextSecond(started) : Promise.resolve()),
        async () => {
          // Looked at while the layer is still got; needless once the second is over anyway.
          if (wait && Date.now() < (Math.floor(started / 1000) + 1) * 1000) {
            wait = await changedSince(layerFs, changes, started, this.bindings ?? loadBindings());
          }
        },
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
      const r = await applyLayer(layerFs, diff, { ...this.archiveOpts(), format: 'naive', hash: false });
      return r.size;
    });
  }

  /** Size in bytes of the files added or modified in the layer against `parent` (hardlinks counted once). */
  async diffSize(id: string, parent?: string | null): Promise<number> {
    const changes = await this.changes(id, parent);
    return this.withLayer(id, (layerFs) => diffSize(changes, layerFs, this.archiveOpts()));
  }
}
