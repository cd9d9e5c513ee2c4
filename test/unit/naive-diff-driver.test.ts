/**
 * NaiveDiffDriver with a fake ProtoDriver and mocked bindings: every get is matched by exactly one put, on
 * success and on every error path, and a diff stream releases its layer before it ends or when destroyed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { ChangeKind } from '../../lib/archive/change';
import type { ProtoDriver } from '../../lib/drivers/driver';
import { NaiveDiffDriver } from '../../lib/drivers/naive-diff-driver';
import type { NativeBindings, ScanEntry } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

function entry(p: string, mode: number, extra: Partial<ScanEntry> = {}): ScanEntry {
  return {
    path: p,
    mode,
    uid: 0,
    gid: 0,
    size: 0,
    blocks: 0,
    mtimeSec: 1,
    mtimeNsec: 0,
    atimeSec: 1,
    atimeNsec: 0,
    ctimeSec: 1,
    ctimeNsec: 0,
    rdev: 0,
    dev: 1,
    ino: 1,
    nlink: 1,
    ...extra,
  };
}

/** A ProtoDriver whose layers are temp dirs; counts gets and puts per id. */
class FakeProto implements ProtoDriver {
  readonly name = 'fake';
  readonly gets = new Map<string, number>();
  readonly puts = new Map<string, number>();
  failGet = new Set<string>();
  failPut = new Set<string>();
  readonly events: string[] = [];

  constructor(private readonly root: string) {}

  dir(id: string): string {
    return path.join(this.root, id);
  }

  create = jest.fn(async (id: string) => {
    fs.mkdirSync(this.dir(id));
  });
  createReadWrite = jest.fn(async (id: string) => {
    fs.mkdirSync(this.dir(id));
  });
  remove = jest.fn(async () => undefined);
  exists = jest.fn(async (id: string) => fs.existsSync(this.dir(id)));
  status = jest.fn(async (): Promise<Array<[string, string]>> => [['Fake', 'yes']]);
  getMetadata = jest.fn(async () => ({ k: 'v' }));
  cleanup = jest.fn(async () => undefined);

  async get(id: string): Promise<string> {
    if (this.failGet.has(id)) throw Object.assign(new Error(`get ${id} failed`), { code: 'EFAKEGET' });
    this.gets.set(id, (this.gets.get(id) ?? 0) + 1);
    this.events.push(`get ${id}`);
    return this.dir(id);
  }

  async put(id: string): Promise<void> {
    this.puts.set(id, (this.puts.get(id) ?? 0) + 1);
    this.events.push(`put ${id}`);
    if (this.failPut.has(id)) throw Object.assign(new Error(`put ${id} failed`), { code: 'EFAKEPUT' });
  }

  /** Every id got as many times as put. */
  balanced(): boolean {
    const ids = new Set([...this.gets.keys(), ...this.puts.keys()]);
    return [...ids].every((id) => (this.gets.get(id) ?? 0) === (this.puts.get(id) ?? 0));
  }
}

describe('NaiveDiffDriver', () => {
  let tmp: string;
  let proto: FakeProto;
  let b: jest.Mocked<NativeBindings>;
  let d: NaiveDiffDriver;

  beforeEach(() => {
    tmp = makeTmp('gd-naive-');
    proto = new FakeProto(tmp);
    fs.mkdirSync(proto.dir('layer'));
    fs.mkdirSync(proto.dir('parent'));
    b = mockBindings();
    // layer: /a (new dir); parent: /gone (file) → Add /a, Delete /gone
    b.scanTree.mockImplementation(async (root: string) =>
      root === proto.dir('layer')
        ? [entry('/', S_IFDIR | 0o755), entry('/a', S_IFDIR | 0o755)]
        : [entry('/', S_IFDIR | 0o755), entry('/gone', S_IFREG | 0o644, { size: 3 })],
    );
    b.lstatMany.mockImplementation(async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFDIR | 0o755)));
    d = new NaiveDiffDriver(proto, { bindings: b, format: 'naive', secondBoundary: false });
  });

  afterEach(() => removeTmp(tmp));

  it('delegates every ProtoDriver method', async () => {
    expect(d.name).toBe('fake');
    await d.create('x', 'parent', { storageOpt: {} });
    expect(proto.create).toHaveBeenCalledWith('x', 'parent', { storageOpt: {} });
    await d.createReadWrite('y', null);
    expect(proto.createReadWrite).toHaveBeenCalledWith('y', null, undefined);
    await d.remove('x');
    expect(proto.remove).toHaveBeenCalledWith('x');
    expect(await d.exists('layer')).toBe(true);
    expect(await d.status()).toEqual([['Fake', 'yes']]);
    expect(await d.getMetadata('layer')).toEqual({ k: 'v' });
    expect(await d.get('layer')).toBe(proto.dir('layer'));
    await d.put('layer');
    await d.cleanup();
    expect(proto.cleanup).toHaveBeenCalledTimes(1);
    expect(proto.balanced()).toBe(true);
  });

  it('refuses a whiteout format other than naive', () => {
    expect(() => new NaiveDiffDriver(proto, { format: 'overlay' as unknown as 'naive' })).toThrow(TypeError);
  });

  describe('changes', () => {
    it('gets both layers, compares them and puts both', async () => {
      expect(await d.changes('layer', 'parent')).toEqual([
        { path: '/a', kind: ChangeKind.Add },
        { path: '/gone', kind: ChangeKind.Delete },
      ]);
      expect(proto.gets.get('layer')).toBe(1);
      expect(proto.gets.get('parent')).toBe(1);
      expect(proto.balanced()).toBe(true);
    });

    it('without a parent everything is an Add and only the layer is got', async () => {
      expect(await d.changes('layer', '')).toEqual([{ path: '/a', kind: ChangeKind.Add }]);
      expect(proto.gets.has('parent')).toBe(false);
      expect(proto.balanced()).toBe(true);
    });

    it('puts the layer when getting the parent fails', async () => {
      proto.failGet.add('parent');
      await expect(d.changes('layer', 'parent')).rejects.toMatchObject({ code: 'EFAKEGET' });
      expect(proto.puts.get('layer')).toBe(1);
      expect(proto.balanced()).toBe(true);
    });

    it('puts both when the comparison fails', async () => {
      b.scanTree.mockRejectedValue(Object.assign(new Error('scan failed'), { code: 'EIO' }));
      await expect(d.changes('layer', 'parent')).rejects.toMatchObject({ code: 'EIO' });
      expect(proto.puts.get('layer')).toBe(1);
      expect(proto.puts.get('parent')).toBe(1);
      expect(proto.balanced()).toBe(true);
    });

    it('a failing put after an error does not hide the error', async () => {
      b.scanTree.mockRejectedValue(Object.assign(new Error('scan failed'), { code: 'EIO' }));
      proto.failPut.add('layer');
      await expect(d.changes('layer', 'parent')).rejects.toMatchObject({ code: 'EIO' });
    });

    it('a failing put after success is reported', async () => {
      proto.failPut.add('parent');
      await expect(d.changes('layer', 'parent')).rejects.toMatchObject({ code: 'EFAKEPUT' });
      expect(proto.puts.get('layer')).toBe(1);
    });

    it('an invalid parent id is refused before anything is got', async () => {
      await expect(d.changes('layer', '../x')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
      expect(proto.gets.size).toBe(0);
    });
  });

  describe('diff', () => {
    async function drain(s: Readable): Promise<Buffer> {
      const chunks: Buffer[] = [];
      for await (const c of s) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    }

    it('puts the parent once the changes are known and the layer before the stream ends', async () => {
      const s = await d.diff('layer', 'parent');
      expect(proto.puts.get('parent')).toBe(1);
      expect(proto.puts.get('layer')).toBeUndefined();
      let putAtEnd: number | undefined;
      s.on('end', () => {
        putAtEnd = proto.puts.get('layer');
      });
      const tar = await drain(s);
      expect(putAtEnd).toBe(1);
      expect(proto.balanced()).toBe(true);
      // a directory entry for a/ and a whiteout for gone, then the end-of-archive blocks
      expect(tar.length % 512).toBe(0);
      expect(tar.subarray(0, 100).toString('latin1').replace(/\0+$/, '')).toBe('a/');
      expect(tar.subarray(512, 612).toString('latin1').replace(/\0+$/, '')).toBe('.wh.gone');
    });

    it('puts the layer when the stream is destroyed before being read, before close', async () => {
      const s = await d.diff('layer', 'parent');
      const closed = new Promise<number | undefined>((resolve) => s.once('close', () => resolve(proto.puts.get('layer'))));
      s.destroy();
      expect(await closed).toBe(1);
      expect(proto.balanced()).toBe(true);
    });

    it('puts the layer when the stream fails while exporting', async () => {
      b.lstatMany.mockRejectedValue(Object.assign(new Error('lstat failed'), { code: 'EIO' }));
      const s = await d.diff('layer', 'parent');
      await expect(drain(s)).rejects.toMatchObject({ code: 'EIO' });
      await new Promise((r) => setImmediate(r));
      expect(proto.puts.get('layer')).toBe(1);
      expect(proto.balanced()).toBe(true);
    });

    it('puts the layer when getting the parent fails', async () => {
      proto.failGet.add('parent');
      await expect(d.diff('layer', 'parent')).rejects.toMatchObject({ code: 'EFAKEGET' });
      expect(proto.balanced()).toBe(true);
    });

    it('puts both when computing the changes fails', async () => {
      b.scanTree.mockRejectedValue(Object.assign(new Error('scan failed'), { code: 'EIO' }));
      await expect(d.diff('layer', 'parent')).rejects.toMatchObject({ code: 'EIO' });
      expect(proto.puts.get('layer')).toBe(1);
      expect(proto.puts.get('parent')).toBe(1);
    });

    it('a failing final put fails the stream', async () => {
      proto.failPut.add('layer');
      const s = await d.diff('layer', null);
      await expect(drain(s)).rejects.toMatchObject({ code: 'EFAKEPUT' });
      expect(proto.puts.get('layer')).toBe(1);
    });

    it('waits for the next second boundary before ending when a diffed path changed in that second (Docker)', async () => {
      const waiting = new NaiveDiffDriver(proto, { bindings: b });
      const start = Date.now();
      const now = Math.floor(start / 1000);
      b.lstatMany.mockImplementation(async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFDIR | 0o755, { mtimeSec: now })));
      await drain(await waiting.diff('layer', 'parent'));
      expect(Math.floor(Date.now() / 1000)).toBeGreaterThan(Math.floor(start / 1000));
      // looked at before the layer was put
      expect(b.lstatMany).toHaveBeenCalledWith(expect.any(Number), ['a']);
      expect(proto.balanced()).toBe(true);
    });

    it('waits as well when the changed paths cannot be looked at, or one changed only its ctime', async () => {
      const waiting = new NaiveDiffDriver(proto, { bindings: b });
      for (const answer of [
        async () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })),
        async () => [null],
        async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFDIR | 0o755, { mtimeSec: 1, ctimeSec: Math.floor(Date.now() / 1000) })),
      ]) {
        // The first lstatMany is the exporter's (the changed entries written into the tar), the second the check.
        b.lstatMany.mockReset();
        b.lstatMany.mockImplementationOnce(async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFDIR | 0o755)));
        b.lstatMany.mockImplementationOnce(answer as never);
        const start = Date.now();
        await drain(await waiting.diff('layer', 'parent'));
        expect(Math.floor(Date.now() / 1000)).toBeGreaterThan(Math.floor(start / 1000));
        expect(b.lstatMany).toHaveBeenCalledTimes(2);
      }
      expect(proto.balanced()).toBe(true);
    });

    it('ends without waiting when every diffed path is older than the second the diff started in', async () => {
      const waiting = new NaiveDiffDriver(proto, { bindings: b });
      // The clock stands still: a wait for the next second would never end (and the test would time out).
      const frozen = Date.now();
      const clock = jest.spyOn(Date, 'now').mockReturnValue(frozen);
      try {
        b.lstatMany.mockImplementation(async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFDIR | 0o755, { mtimeSec: Math.floor(frozen / 1000) - 1 })));
        await drain(await waiting.diff('layer', 'parent'));
      } finally {
        clock.mockRestore();
      }
      expect(b.lstatMany).toHaveBeenCalledWith(expect.any(Number), ['a']);
      expect(proto.balanced()).toBe(true);
    });
  });

  describe('applyDiff', () => {
    it('puts the layer when the archive is invalid', async () => {
      const junk = Readable.from([Buffer.alloc(1024, 0x41)]);
      await expect(d.applyDiff('layer', 'parent', junk)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
      expect(proto.gets.get('layer')).toBe(1);
      expect(proto.gets.has('parent')).toBe(false);
      expect(proto.balanced()).toBe(true);
    });

    it('puts the layer when the input stream fails', async () => {
      const failing = new Readable({
        read() {
          this.destroy(Object.assign(new Error('network down'), { code: 'ECONNRESET' }));
        },
      });
      await expect(d.applyDiff('layer', null, failing)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(proto.balanced()).toBe(true);
    });

    it('applies an empty archive and reports 0 bytes', async () => {
      expect(await d.applyDiff('layer', null, Readable.from([Buffer.alloc(1024)]))).toBe(0);
      expect(proto.balanced()).toBe(true);
    });
  });

  describe('diffSize', () => {
    it('puts every layer when sizing fails', async () => {
      b.scanTree.mockImplementation(async (root: string) =>
        root === proto.dir('layer') ? [entry('/', S_IFDIR | 0o755), entry('/f', S_IFREG | 0o644, { size: 10 })] : [entry('/', S_IFDIR | 0o755)],
      );
      b.lstatMany.mockRejectedValue(Object.assign(new Error('lstat failed'), { code: 'EIO' }));
      await expect(d.diffSize('layer', 'parent')).rejects.toMatchObject({ code: 'EIO' });
      expect(proto.balanced()).toBe(true);
    });

    it('sums the added and modified files', async () => {
      b.scanTree.mockImplementation(async (root: string) =>
        root === proto.dir('layer') ? [entry('/', S_IFDIR | 0o755), entry('/f', S_IFREG | 0o644, { size: 10 })] : [entry('/', S_IFDIR | 0o755)],
      );
      b.lstatMany.mockImplementation(async (_fd: number, paths: string[]) => paths.map((p) => entry(`/${p}`, S_IFREG | 0o644, { size: 10 })));
      expect(await d.diffSize('layer', 'parent')).toBe(10);
      expect(proto.balanced()).toBe(true);
    });
  });
});
