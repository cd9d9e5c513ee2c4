/**
 * openApplySession and createSha256 on the real kernel: the packed operation format (every op, content pieces
 * spanning chunks, streamed sparse files, tolerant directory times), stop-at-first-failure, containment inside
 * the root, and that malformed batches are refused with a TypeError instead of being read out of bounds.
 * The records are built by an encoder written here from the format documented in native/apply-entries.cc, so the
 * test checks that documentation as well as lib/archive/apply.ts's writer.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import type { ApplySession, NativeBindings } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const OPS = { create: 0, remove: 1, whiteout: 2, xattrs: 3, write: 4, finish: 5, times: 6 } as const;
const TYPES = { none: 0, file: 1, dir: 2, symlink: 3, link: 4, char: 5, block: 6, fifo: 7 } as const;

interface Rec {
  op: keyof typeof OPS;
  type?: keyof typeof TYPES;
  path?: string;
  link?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: [number, number];
  atime?: [number, number];
  deferTimes?: boolean;
  noReplace?: boolean;
  stream?: boolean;
  tolerant?: boolean;
  devMajor?: number;
  devMinor?: number;
  size?: number;
  xattrs?: Record<string, Buffer>;
  pieces?: Array<[chunk: number, off: number, len: number]>;
}

function encode(recs: Rec[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  const str = (s: string | Buffer): Buffer => {
    const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
    return Buffer.concat([u32(b.length), b]);
  };
  for (const r of recs) {
    const h = Buffer.alloc(56);
    let flags = 0;
    if (r.mode !== undefined) flags |= 1;
    if (r.uid !== undefined) flags |= 2;
    if (r.mtime) flags |= 4;
    if (r.atime) flags |= 8;
    if (r.deferTimes) flags |= 16;
    if (r.noReplace) flags |= 32;
    if (r.stream) flags |= 64;
    if (r.tolerant) flags |= 128;
    h.writeUInt8(OPS[r.op], 0);
    h.writeUInt8(TYPES[r.type ?? 'none'], 1);
    h.writeUInt16LE(flags, 2);
    h.writeUInt32LE(r.mode ?? 0, 4);
    h.writeUInt32LE(r.uid ?? 0, 8);
    h.writeUInt32LE(r.gid ?? 0, 12);
    h.writeDoubleLE(r.mtime?.[0] ?? 0, 16);
    h.writeUInt32LE(r.mtime?.[1] ?? 0, 24);
    h.writeUInt32LE(r.atime?.[1] ?? 0, 28);
    h.writeDoubleLE(r.atime?.[0] ?? 0, 32);
    h.writeUInt32LE(r.devMajor ?? 0, 40);
    h.writeUInt32LE(r.devMinor ?? 0, 44);
    h.writeDoubleLE(r.size ?? 0, 48);
    parts.push(h, str(r.path ?? ''), str(r.link ?? ''));
    const xs = Object.entries(r.xattrs ?? {});
    parts.push(u32(xs.length));
    for (const [k, v] of xs) parts.push(str(k), str(v));
    const ps = r.pieces ?? [];
    parts.push(u32(ps.length));
    for (const [c, o, l] of ps) parts.push(u32(c), u32(o), u32(l));
  }
  return Buffer.concat(parts);
}

/** What `fn` throws synchronously (undefined when it does not). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs)', 'native openApplySession', () => {
  let b: NativeBindings;
  let tmp = '';
  let root = '';
  let rootFd = -1;
  let s: ApplySession | null = null;

  beforeAll(() => {
    b = loadBindings();
  });

  beforeEach(async () => {
    tmp = makeTmp('gd-apply-session-');
    root = path.join(tmp, 'root');
    fs.mkdirSync(root);
    fs.mkdirSync(path.join(tmp, 'victim'));
    rootFd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    s = await b.openApplySession(rootFd);
  });

  afterEach(async () => {
    await s?.close();
    s = null;
    if (rootFd >= 0) fs.closeSync(rootFd);
    rootFd = -1;
    removeTmp(tmp);
  });

  const r = (p: string): string => path.join(root, p);

  it('creates every entry type with its metadata, content pieces spanning chunks', async () => {
    const c0 = Buffer.from('hello, ');
    const c1 = Buffer.from('XXworld');
    const res = await s!.run(
      encode([
        { op: 'create', type: 'dir', path: 'd', mode: 0o750, uid: 7, gid: 8, mtime: [1000, 5], deferTimes: true },
        { op: 'create', type: 'file', path: 'd/f', mode: 0o4755, uid: 1, gid: 2, mtime: [1600000000, 123], atime: [1500000000, 0], pieces: [[0, 0, 7], [1, 2, 5]] },
        { op: 'create', type: 'symlink', path: 'd/l', link: '/etc/passwd', uid: 3, gid: 4, mtime: [1234, 0] },
        { op: 'create', type: 'link', path: 'd/h', link: 'd/f' },
        { op: 'create', type: 'fifo', path: 'p', mode: 0o600 },
        { op: 'create', type: 'char', path: 'null', mode: 0o666, devMajor: 1, devMinor: 3 },
        { op: 'create', type: 'file', path: 'x', xattrs: { 'user.k': Buffer.from('v') } },
        { op: 'times', path: 'd', mtime: [1000, 5] },
      ]),
      [c0, c1],
    );
    expect(res).toEqual({ skipped: false, failed: null, warnings: [] });
    // Stat before reading: reading updates an atime older than the mtime (relatime).
    const f = fs.lstatSync(r('d/f'), { bigint: true });
    expect([Number(f.mode & 0o7777n), Number(f.uid), Number(f.gid), f.mtimeNs, f.atimeNs]).toEqual([0o4755, 1, 2, 1600000000000000123n, 1500000000000000000n]);
    expect(f.nlink).toBe(2n);
    expect(fs.readFileSync(r('d/f'), 'utf8')).toBe('hello, world');
    expect(fs.lstatSync(r('d/h')).ino).toBe(Number(f.ino));
    expect(fs.readlinkSync(r('d/l'))).toBe('/etc/passwd');
    expect(fs.lstatSync(r('d/l')).uid).toBe(3);
    const d = fs.lstatSync(r('d'), { bigint: true });
    expect([Number(d.mode & 0o7777n), Number(d.uid), d.mtimeNs]).toEqual([0o750, 7, 1000000000005n]);
    expect(fs.lstatSync(r('p')).isFIFO()).toBe(true);
    expect(fs.lstatSync(r('null')).rdev).toBe(fs.statSync('/dev/null').rdev);
    expect((await b.lgetxattr(r('x'), 'user.k'))?.toString()).toBe('v');
    expect(fs.lstatSync(r('x')).mode & 0o7777).toBe(0o644);
  });

  it('streams a large file over several batches, leaving zero blocks as holes', async () => {
    const data = Buffer.alloc(3 * 65536 + 100, 0);
    data.fill(7, 0, 4096);
    data.fill(9, 2 * 65536 + 3, 2 * 65536 + 5000);
    data.fill(1, data.length - 100);
    // Pieces of odd sizes, so blocks straddle pieces and batches.
    const cut = [0, 1000, 70000, 131075, data.length];
    await s!.run(encode([{ op: 'create', type: 'file', path: 'big', stream: true, pieces: [[0, 0, cut[1]!]] }]), [data]);
    await s!.run(encode([{ op: 'write', pieces: [[0, cut[1]!, cut[2]! - cut[1]!]] }, { op: 'write', pieces: [[0, cut[2]!, cut[3]! - cut[2]!]] }]), [data]);
    const res = await s!.run(encode([{ op: 'finish', path: 'big', mode: 0o640, mtime: [5, 0], size: data.length + 8192, pieces: [[0, cut[3]!, cut[4]! - cut[3]!]] }]), [data]);
    expect(res.failed).toBeNull();
    const got = fs.readFileSync(r('big'));
    expect(got.length).toBe(data.length + 8192);
    expect(got.subarray(0, data.length).equals(data)).toBe(true);
    expect(got.subarray(data.length).every((x) => x === 0)).toBe(true);
    const st = fs.statSync(r('big'));
    expect(st.mode & 0o7777).toBe(0o640);
    // 4 KiB of data at the start, 2 blocks around 131075..136075, the tail: far fewer than the 50 blocks.
    expect(st.blocks * 512).toBeLessThan(10 * 4096);
  });

  it('stops at the first failure: the rest of the batch and later batches do not run', async () => {
    const res = await s!.run(
      encode([
        { op: 'create', type: 'file', path: 'a' },
        { op: 'create', type: 'link', path: 'h', link: 'missing' },
        { op: 'create', type: 'file', path: 'b' },
      ]),
      [],
    );
    expect(res.failed).toEqual({ index: 1, errno: 2, code: 'ENOENT', syscall: 'linkat', path: 'h', dest: 'missing', op: 'create', type: 'link' });
    expect(await s!.run(encode([{ op: 'create', type: 'file', path: 'c' }]), [])).toEqual({ skipped: true, failed: null, warnings: [] });
    expect(fs.readdirSync(root).sort()).toEqual(['a']);
  });

  it('keeps everything inside the root: symlinked parents resolve in the root, hardlinks cannot leave it', async () => {
    fs.symlinkSync(path.join(tmp, 'victim'), r('out'));
    fs.symlinkSync('/', r('abs'));
    expect((await s!.run(encode([{ op: 'create', type: 'file', path: 'out/x' }]), [])).failed?.code).toBe('ENOENT');
    const s2 = await b.openApplySession(rootFd);
    try {
      expect((await s2.run(encode([{ op: 'create', type: 'dir', path: 'abs/inside' }]), [])).failed).toBeNull();
      expect((await s2.run(encode([{ op: 'create', type: 'link', path: 'h', link: '../victim' }]), [])).failed?.code).toBe('ENOENT');
    } finally {
      await s2.close();
    }
    expect(fs.readdirSync(path.join(tmp, 'victim'))).toEqual([]);
    expect(fs.existsSync(r('inside'))).toBe(true);
  });

  it('times: tolerant ops skip paths that no longer resolve, strict ones fail', async () => {
    const res = await s!.run(encode([{ op: 'times', path: 'gone/x', mtime: [1, 0], tolerant: true }]), []);
    expect(res.failed).toBeNull();
    expect((await s!.run(encode([{ op: 'times', path: 'gone/x', mtime: [1, 0] }]), [])).failed?.code).toBe('ENOENT');
  });

  it('makes overlay whiteouts (char 0/0) and sets xattrs on existing entries', async () => {
    const res = await s!.run(
      encode([
        { op: 'create', type: 'dir', path: 'd' },
        { op: 'whiteout', path: 'd/w' },
        { op: 'xattrs', path: 'd', xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } },
      ]),
      [],
    );
    expect(res.failed).toBeNull();
    const w = fs.lstatSync(r('d/w'));
    expect(w.isCharacterDevice() && w.rdev === 0).toBe(true);
    expect((await b.lgetxattr(r('d'), 'trusted.overlay.opaque'))?.toString()).toBe('y');
  });

  it('refuses malformed batches with a TypeError and never reads outside its buffers', async () => {
    const good = encode([{ op: 'create', type: 'file', path: 'f', pieces: [[0, 0, 4]] }]);
    const chunk = Buffer.from('abcd');
    const bad: Array<[Buffer, Buffer[]]> = [
      [good.subarray(0, 30), [chunk]],
      [good.subarray(0, good.length - 1), [chunk]],
      [encode([{ op: 'create', type: 'file', path: 'f', pieces: [[1, 0, 1]] }]), [chunk]],
      [encode([{ op: 'create', type: 'file', path: 'f', pieces: [[0, 2, 3]] }]), [chunk]],
      [encode([{ op: 'create', type: 'file', path: 'f', pieces: [[0, 0xffffffff, 2]] }]), [chunk]],
      [encode([{ op: 'create', type: 'none', path: 'f' }]), []],
      [encode([{ op: 'remove', type: 'file', path: 'f' }]), []],
      [encode([{ op: 'create', type: 'file', path: 'f', mode: 0o10000 }]), []],
      [encode([{ op: 'create', type: 'file', path: 'f\0x' }]), []],
      [encode([{ op: 'create', type: 'dir', path: 'd', stream: true }]), []],
      [encode([{ op: 'create', type: 'file', path: 'f', mtime: [0.5, 0] }]), []],
      [encode([{ op: 'create', type: 'file', path: 'f', uid: 0xffffffff, gid: 0 }]), []],
    ];
    const huge = Buffer.from(good);
    huge.writeUInt32LE(0xfffffff0, 56); // path length far beyond the buffer
    bad.push([huge, [chunk]]);
    const op = Buffer.from(good);
    op[0] = 9;
    bad.push([op, [chunk]]);
    for (const [ops, chunks] of bad) {
      const sess = await b.openApplySession(rootFd);
      try {
        // The addon's errors come from the main realm, not jest's sandbox: compare names, not constructors.
        await expect(sess.run(ops, chunks)).rejects.toHaveProperty('name', 'TypeError');
      } finally {
        await sess.close();
      }
    }
    // Random bytes: refused (or, by chance, a valid op); the process survives either way.
    for (let i = 0; i < 200; i++) {
      const sess = await b.openApplySession(rootFd);
      try {
        await sess.run(randomBytes(1 + (i % 97)), [chunk]).catch((e: unknown) => expect(e).toHaveProperty('name', 'TypeError'));
      } finally {
        await sess.close();
      }
    }
    expect(thrown(() => s!.run('x' as unknown as Buffer, []))).toHaveProperty('name', 'TypeError');
    expect(thrown(() => s!.run(good, [1 as unknown as Buffer]))).toHaveProperty('name', 'TypeError');
  });

  it('close() closes a streamed file left open; the session refuses work afterwards', async () => {
    await s!.run(encode([{ op: 'create', type: 'file', path: 'open', stream: true }]), []);
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    await s!.close();
    expect(fs.readdirSync('/proc/self/fd').length).toBeLessThan(fdsBefore);
    expect(() => s!.run(encode([]), [])).toThrow(/closed/);
    s = null;
    // The session held its own dup of the root fd: the caller's is still usable.
    expect(fs.fstatSync(rootFd).isDirectory()).toBe(true);
  });

  it('refuses a root fd that is not a directory', async () => {
    const fd = fs.openSync(path.join(tmp, 'file'), 'w');
    try {
      await expect(b.openApplySession(fd)).rejects.toMatchObject({ code: 'ENOTDIR' });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('native createSha256', () => {
  it('matches node:crypto over many chunks, in order, including empty ones', async () => {
    const b = loadBindings();
    const h = await b.createSha256();
    const ref = createHash('sha256');
    const parts = [Buffer.alloc(0), randomBytes(1), randomBytes(3 << 20), Buffer.alloc(0), randomBytes(65537)];
    for (let i = 0; i < 50; i++) parts.push(randomBytes(i * 997));
    const pending = parts.map((p) => {
      ref.update(p);
      return h.update(p);
    });
    await Promise.all(pending);
    expect(await h.digest()).toBe(ref.digest('hex'));
    expect(() => h.update(Buffer.from('x'))).toThrow(/after digest/);
    expect(() => h.digest()).toThrow(/already/);
  });

  it('checks its argument', async () => {
    const h = await loadBindings().createSha256();
    expect(thrown(() => h.update('text' as unknown as Buffer))).toHaveProperty('name', 'TypeError');
    expect(await h.digest()).toBe(createHash('sha256').digest('hex'));
  });
});
