/**
 * applyLayer with recyclable input (lib/archive/byte-source.ts): chunks go back to the source once parsed,
 * hashed and written. A source that scribbles over every chunk the moment it is recycled, and reuses it for the
 * next read at once, makes any early recycle visible as wrong file contents, wrong xattrs or a wrong diffID.
 * Also fileChunks() itself: every chunk size, short files, early stop.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { applyLayer } from '../../lib/archive/apply';
import { Storage } from '../../lib/storage/storage';
import { loadBindings } from '../../lib/native/bindings';
import { fileChunks, isRecyclable, type RecyclableSource } from '../../lib/archive/byte-source';
import { describeIf, isRoot } from '../support/native';
import { buildTar, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

/** Reads `data` into buffers from its own small pool; a recycled buffer is filled with garbage and reused. */
class ScribblingSource implements RecyclableSource {
  private readonly free: Buffer[] = [];
  private readonly out = new Set<Buffer>();
  private readonly seen = new WeakSet<Buffer>();
  recycled = 0;
  doubleRecycles = 0;
  foreign = 0;

  constructor(
    private readonly data: Buffer,
    private readonly chunkSize: number,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (let off = 0; off < this.data.length; off += this.chunkSize) {
      const n = Math.min(this.chunkSize, this.data.length - off);
      let buf = this.free.pop();
      buf ??= Buffer.alloc(this.chunkSize);
      this.data.copy(buf, 0, off, off + n);
      const chunk = n === this.chunkSize ? buf : buf.subarray(0, n);
      this.out.add(chunk);
      this.seen.add(chunk);
      // Let the consumer run between chunks, as a real source does.
      await new Promise((r) => setImmediate(r));
      yield chunk;
    }
  }

  recycle(chunk: Buffer): void {
    if (!this.out.delete(chunk)) {
      if (this.seen.has(chunk)) this.doubleRecycles++;
      else this.foreign++;
      return;
    }
    this.recycled++;
    const whole = Buffer.from(chunk.buffer, chunk.byteOffset, this.chunkSize);
    whole.fill(0xa5);
    this.free.push(whole);
  }

  get outstanding(): number {
    return this.out.size;
  }
}

function layer(): { tar: Buffer; entries: TestEntry[] } {
  const entries: TestEntry[] = [{ name: 'd/', type: 'dir' }];
  for (let i = 0; i < 300; i++) {
    entries.push({ name: `d/f${i}`, data: Buffer.alloc((i * 97) % 5000, String.fromCharCode(97 + (i % 26))), xattrs: { 'user.i': Buffer.from(`v${i}`) } });
  }
  const big = Buffer.alloc(3 * 1024 * 1024 + 123);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i); // some zero blocks stay zero in between
  big.fill(0, 8192, 3 * 4096 + 5000);
  entries.push({ name: 'big', data: big, xattrs: { 'user.big': Buffer.from('yes') } });
  entries.push({ name: 'l', type: 'symlink', linkname: 'd/f1' });
  entries.push({ name: 'h', type: 'link', linkname: 'd/f2' });
  return { tar: buildTar(entries), entries };
}

describeIf(isRoot ? null : 'needs root (user.* xattrs on the test fs, owners)', 'applyLayer with recyclable input', () => {
  let tmp: string | undefined;
  afterEach(() => {
    removeTmp(tmp);
    tmp = undefined;
  });

  async function check(root: string, entries: TestEntry[]): Promise<void> {
    for (const e of entries) {
      if (e.type !== undefined && e.type !== 'file') continue;
      const got = fs.readFileSync(path.join(root, e.name));
      expect([e.name, got.equals(Buffer.from(e.data ?? ''))]).toEqual([e.name, true]);
    }
    const b = loadBindings();
    expect((await b.lgetxattr(path.join(root, 'd/f7'), 'user.i'))?.toString()).toBe('v7');
    expect((await b.lgetxattr(path.join(root, 'big'), 'user.big'))?.toString()).toBe('yes');
    expect(fs.readlinkSync(path.join(root, 'l'))).toBe('d/f1');
    expect(fs.statSync(path.join(root, 'h')).ino).toBe(fs.statSync(path.join(root, 'd/f2')).ino);
  }

  it.each([512, 4093, 65536, 1 << 20])('a source that scribbles over recycled chunks (chunk size %i)', async (size) => {
    tmp = makeTmp('gd-recycle-');
    const { tar, entries } = layer();
    const src = new ScribblingSource(tar, size);
    expect(isRecyclable(src)).toBe(true);
    const r = await applyLayer(tmp, src, { format: 'naive' });
    expect(r.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    await check(tmp, entries);
    // Everything came back exactly once, and the pool stayed small (chunks were reused during the apply).
    expect([src.doubleRecycles, src.foreign, src.outstanding]).toEqual([0, 0, 0]);
    expect(src.recycled).toBe(Math.ceil(tar.length / size));
  }, 60_000);

  it('fileChunks reads a file whole in any chunk size, recycles safely, and closes on an early stop', async () => {
    tmp = makeTmp('gd-recycle-');
    const file = path.join(tmp, 'layer.tar');
    const { tar, entries } = layer();
    fs.writeFileSync(file, tar);
    for (const size of [1, 511, 4096, 1 << 20, 8 << 20]) {
      const parts: Buffer[] = [];
      const src = fileChunks(file, { chunkSize: size });
      for await (const c of src) {
        parts.push(Buffer.from(c));
        src.recycle(c);
        src.recycle(c); // a second recycle of the same chunk is ignored
        if (size === 1 && parts.length > 5000) break;
      }
      if (size !== 1) expect(Buffer.concat(parts).equals(tar)).toBe(true);
    }
    const root = path.join(tmp, 'root');
    fs.mkdirSync(root);
    const r = await applyLayer(root, fileChunks(file, { chunkSize: 8192 }), { format: 'naive' });
    expect(r.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    await check(root, entries);
    expect(() => fileChunks(file, { chunkSize: 0 })).toThrow(RangeError);
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    for await (const c of fileChunks(file)) {
      expect(c.length).toBeGreaterThan(0);
      break;
    }
    expect(fs.readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(fdsBefore);
  }, 60_000);

  it('a refused archive read through fileChunks leaves no fd open and later applies work', async () => {
    tmp = makeTmp('gd-recycle-');
    const file = path.join(tmp, 'bad.tar');
    fs.writeFileSync(file, Buffer.concat([buildTar([{ name: 'ok', data: 'x'.repeat(3000) }], { end: false }), buildTar([{ name: '../escape', data: 'y' }])]));
    const root = path.join(tmp, 'root');
    fs.mkdirSync(root);
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    await expect(applyLayer(root, fileChunks(file, { chunkSize: 1024 }))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    expect(fs.readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(fdsBefore);
    expect(fs.existsSync(path.join(tmp, 'escape'))).toBe(false);
    const { tar, entries } = layer();
    fs.writeFileSync(file, tar);
    const root2 = path.join(tmp, 'root2');
    fs.mkdirSync(root2);
    await applyLayer(root2, fileChunks(file, { chunkSize: 1024 }));
    await check(root2, entries);
  }, 60_000);

  it('fileChunks reads a byte range (an archive member in place), with O_NOFOLLOW', async () => {
    tmp = makeTmp('gd-recycle-');
    const file = path.join(tmp, 'outer.bin');
    const { tar } = layer();
    const head = Buffer.alloc(777, 1);
    fs.writeFileSync(file, Buffer.concat([head, tar, Buffer.alloc(5000, 2)]));
    for (const size of [512, 4096, 1 << 20]) {
      const parts: Buffer[] = [];
      const src = fileChunks(file, { chunkSize: size, start: head.length, length: tar.length });
      for await (const c of src) {
        parts.push(Buffer.from(c));
        src.recycle(c);
      }
      expect(Buffer.concat(parts).equals(tar)).toBe(true);
    }
    const empty: Buffer[] = [];
    for await (const c of fileChunks(file, { start: 10, length: 0 })) empty.push(c);
    expect(empty).toEqual([]);
    expect(() => fileChunks(file, { start: -1 })).toThrow(RangeError);
    fs.symlinkSync(file, path.join(tmp, 'link'));
    const viaLink = async (): Promise<void> => {
      for await (const c of fileChunks(path.join(tmp!, 'link'), { openFlags: fs.constants.O_NOFOLLOW })) expect(c).toBeDefined();
    };
    await expect(viaLink()).rejects.toMatchObject({ code: 'ELOOP' });
  });

  it.each([4093, 1 << 20])('the layer store registers from a scribbling source (recorder, hash and driver hold chunks; size %i)', async (size) => {
    tmp = makeTmp('gd-recycle-');
    const { tar, entries } = layer();
    const store = await Storage.open({ root: path.join(tmp, 'root'), driver: 'vfs' });
    try {
      const src = new ScribblingSource(tar, size);
      const l = await store.registerLayer(src, null);
      expect(l.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
      // The tar re-created from the tar-split record (headers copied out of recycled chunks, CRCs computed
      // from them) is the original, byte for byte.
      const parts: Buffer[] = [];
      for await (const c of await store.layerTar(l.chainId)) parts.push(c as Buffer);
      expect(Buffer.concat(parts).equals(tar)).toBe(true);
      expect([src.doubleRecycles, src.foreign]).toEqual([0, 0]);
      expect(src.recycled).toBeGreaterThan(0);
      const img = await store.createImage(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [l.diffId] } })));
      const ctr = await store.createContainer(img.id);
      await check(await store.mountContainer(ctr.id), entries);
      await store.unmountContainer(ctr.id);
    } finally {
      await store.close();
    }
  }, 60_000);
});
