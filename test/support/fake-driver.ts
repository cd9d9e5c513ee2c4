/**
 * An in-memory Driver for unit tests of the store: layers are map entries holding the last tar applied to them,
 * with Docker's rules (parents must exist, no removal while mounted or with children). `get` returns a real,
 * empty directory per layer (under `base`) so that code opening the root works.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import type { Change } from '../../lib/archive/change';
import type { CreateOpts, Driver, MountOpts } from '../../lib/drivers/driver';
import { LayerExistsError, LayerInUseError, LayerNotFoundError, NotMountedError } from '../../lib/drivers/errors';

export interface FakeLayer {
  parent: string | null;
  readWrite: boolean;
  data: Buffer;
  opts?: CreateOpts;
}

export class FakeDriver implements Driver {
  readonly name: string;
  readonly layers = new Map<string, FakeLayer>();
  readonly mounts = new Map<string, number>();
  readonly calls: string[] = [];
  /** Makes the next applyDiff fail with this error (after reading `failAfter` bytes). */
  failApply: Error | null = null;
  failAfter = 0;
  /** applyDiff reads at most this many bytes and returns (to test that the store still hashes the rest). */
  readLimit = Number.POSITIVE_INFINITY;
  /** Called inside create/createReadWrite (e.g. to fail or to stop at a given point). */
  onCreate: ((id: string) => void | Promise<void>) | null = null;
  cleaned = false;

  constructor(
    readonly base: string,
    name = 'fake',
  ) {
    this.name = name;
  }

  private async make(id: string, parent: string | null | undefined, readWrite: boolean, opts?: CreateOpts): Promise<void> {
    this.calls.push(`${readWrite ? 'createReadWrite' : 'create'} ${id} ${parent ?? '-'}`);
    if (this.layers.has(id)) throw new LayerExistsError(id);
    const p = parent ?? null;
    if (p !== null && !this.layers.has(p)) throw new LayerNotFoundError(p);
    await this.onCreate?.(id);
    const l: FakeLayer = { parent: p, readWrite, data: Buffer.alloc(0) };
    if (opts !== undefined) l.opts = opts;
    this.layers.set(id, l);
  }

  create(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.make(id, parent, false, opts);
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOpts): Promise<void> {
    return this.make(id, parent, true, opts);
  }

  async remove(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    if (!this.layers.has(id)) throw new LayerNotFoundError(id);
    if ((this.mounts.get(id) ?? 0) > 0) throw new LayerInUseError(id, 'mounted');
    for (const l of this.layers.values()) if (l.parent === id) throw new LayerInUseError(id, 'has children');
    this.layers.delete(id);
    fs.rmSync(path.join(this.base, id), { recursive: true, force: true });
  }

  async get(id: string, _opts?: MountOpts): Promise<string> {
    if (!this.layers.has(id)) throw new LayerNotFoundError(id);
    this.mounts.set(id, (this.mounts.get(id) ?? 0) + 1);
    const dir = path.join(this.base, id);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  async put(id: string): Promise<void> {
    const n = this.mounts.get(id) ?? 0;
    if (n === 0) throw new NotMountedError(id);
    if (n === 1) this.mounts.delete(id);
    else this.mounts.set(id, n - 1);
  }

  async exists(id: string): Promise<boolean> {
    return this.layers.has(id);
  }

  async status(): Promise<Array<[string, string]>> {
    return [['Layers', String(this.layers.size)]];
  }

  async getMetadata(): Promise<Record<string, string> | null> {
    return null;
  }

  async cleanup(): Promise<void> {
    this.cleaned = true;
    this.mounts.clear();
  }

  async diff(id: string): Promise<Readable> {
    const l = this.layers.get(id);
    if (!l) throw new LayerNotFoundError(id);
    return Readable.from([l.data]);
  }

  async changes(): Promise<Change[]> {
    return [];
  }

  async applyDiff(id: string, _parent: string | null | undefined, diff: Readable): Promise<number> {
    const l = this.layers.get(id);
    if (!l) throw new LayerNotFoundError(id);
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of diff) {
      const b = c as Buffer;
      parts.push(b);
      n += b.length;
      if (this.failApply && n >= this.failAfter) {
        const e = this.failApply;
        this.failApply = null;
        throw e;
      }
      if (n >= this.readLimit) break;
    }
    l.data = Buffer.concat(parts);
    return l.data.length;
  }

  async diffSize(id: string): Promise<number> {
    return this.layers.get(id)?.data.length ?? 0;
  }
}
