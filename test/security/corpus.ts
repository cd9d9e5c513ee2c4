/**
 * The hostile-archive corpus (issue 3 item 4, issue 11 item 1), shared by the engine-level suite
 * (test/integration/archive-security.test.ts: applyLayer in every whiteout format) and the store-level suite
 * (test/security/store-hostile.test.ts: Storage.registerLayer/importImage on real drivers).
 *
 * Each case builds an archive for a context (target root, victim directory beside it, canary token) and says what
 * must happen: refused with a typed InvalidArchiveError naming the entry, or legal with its effect inside the root.
 * The `contained` checks call jest's `expect`, so this module is only for use inside jest.
 * @module
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { createGzip, gzipSync } from 'node:zlib';

import { compress as zstdCompress } from 'zstd-napi';

import type { ApplyLayerResult, ApplyOptions, ApplyWarning, WhiteoutFormat } from '../../lib/archive/apply';
import { encodeHeader, END_OF_ARCHIVE, paddingFor, paxRecord } from '../../lib/archive/tar-writer';
import { loadBindings } from '../../lib/native/bindings';
import { buildTar, fixChecksum, type TestEntry } from '../support/tar-builder';

const b = loadBindings();
export const FORMATS: WhiteoutFormat[] = ['naive', 'overlay', 'aufs'];
const MiB = 1 << 20;
const GiB = 1 << 30;

// ---------------------------------------------------------------------------------------------------------------
// Archive construction helpers (hostile archives need headers no well-behaved writer produces).

/** One entry's header (+ body) without the end-of-archive marker. */
export function ent(e: TestEntry): Buffer {
  return buildTar([e], { end: false });
}

/** Concatenates parts and appends the end-of-archive marker. */
export function tar(...parts: Buffer[]): Buffer {
  return Buffer.concat([...parts, END_OF_ARCHIVE]);
}

/** A meta header (PAX 'x'/'g', GNU 'L'/'K') with the given body. */
export function meta(flag: 'x' | 'g' | 'L' | 'K', body: Buffer, declaredSize = body.length): Buffer {
  const h = encodeHeader({ name: 'PaxHeaders.0/meta', type: 'file', mode: 0o644, uid: 0, gid: 0, size: declaredSize, mtimeSec: 0 });
  h[156] = flag.charCodeAt(0);
  fixChecksum(h);
  return Buffer.concat([h, body, Buffer.alloc(paddingFor(body.length))]);
}

/** A PAX extended header made of well-formed records. */
export function pax(records: Array<[string, string | Buffer]>, flag: 'x' | 'g' = 'x'): Buffer {
  return meta(flag, Buffer.concat(records.map(([k, v]) => paxRecord(k, Buffer.isBuffer(v) ? v : Buffer.from(v)))));
}

/** A GNU long name ('L') or long link ('K') header. */
export function gnuLong(flag: 'L' | 'K', value: string): Buffer {
  return meta(flag, Buffer.concat([Buffer.from(value), Buffer.from([0])]));
}

/** An entry whose header block is patched by `patch` (checksum fixed afterwards). */
export function patched(e: TestEntry, patch: (block: Buffer) => void, body?: Buffer): Buffer {
  const enc = ent({ ...e, data: undefined, size: 0 });
  const h = Buffer.from(enc.subarray(enc.length - 512));
  patch(h);
  fixChecksum(h);
  const data = body ?? Buffer.alloc(0);
  return Buffer.concat([enc.subarray(0, enc.length - 512), h, data, Buffer.alloc(paddingFor(data.length))]);
}

/** Writes `value` into a numeric header field in GNU base-256 (two's complement for negative values). */
export function base256(block: Buffer, off: number, len: number, value: bigint): void {
  let v = value < 0n ? (1n << BigInt(8 * len)) + value : value;
  for (let i = len - 1; i >= 0; i--) {
    block[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (value >= 0n) block[off] = (block[off]! & 0x7f) | 0x80;
}

const FIELD = { uid: [108, 8], gid: [116, 8], size: [124, 12], mtime: [136, 12], devmajor: [329, 8], devminor: [337, 8] } as const;

export function setOctal(block: Buffer, field: keyof typeof FIELD, text: string): void {
  const [off, len] = FIELD[field];
  block.fill(0, off, off + len);
  block.write(text, off, len, 'latin1');
}

/** Yields `total` zero bytes, lazily, in 1 MiB chunks. */
export async function* zeros(total: number): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(MiB);
  for (let left = total; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

/**
 * A gzip stream of `prefix` then `total` zero bytes, produced on demand: the compressor only runs as far as the
 * consumer reads, so a 2 GiB bomb costs only what the engine decompresses before its limit trips.
 */
export function gzipBomb(total: number, prefix: Buffer = Buffer.alloc(0)): AsyncIterable<Uint8Array> & { stop(): void } {
  const src = Readable.from(
    (async function* () {
      if (prefix.length > 0) yield prefix;
      yield* zeros(total);
    })(),
    { objectMode: false },
  );
  const z = createGzip({ level: 1 });
  src.pipe(z);
  return {
    [Symbol.asyncIterator]: () => (z as AsyncIterable<Uint8Array>)[Symbol.asyncIterator](),
    stop() {
      src.destroy();
      z.destroy();
    },
  };
}

/**
 * A zstd frame (RFC 8878) of `prefix` as a raw block then `total` zero bytes as RLE blocks of 128 KiB, written
 * directly: 4 bytes of input per 128 KiB of output, the shape of a real zstd bomb, generated lazily.
 */
export async function* zstdBomb(total: number, prefix: Buffer = Buffer.alloc(0)): AsyncGenerator<Buffer> {
  const BLOCK_MAX = 128 * 1024;
  const blockHeader = (size: number, type: 0 | 1, last: boolean): Buffer => {
    const v = (size << 3) | (type << 1) | (last ? 1 : 0);
    return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]);
  };
  // Magic, frame header descriptor 0 (no content size, no checksum), window descriptor 2^17 (exponent 7).
  yield Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3]);
  for (let off = 0; off < prefix.length; off += BLOCK_MAX) {
    const part = prefix.subarray(off, off + BLOCK_MAX);
    yield Buffer.concat([blockHeader(part.length, 0, false), part]);
  }
  let left = total;
  while (left > 0) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 256 && left > 0; i++) {
      const n = Math.min(BLOCK_MAX, left);
      left -= n;
      batch.push(blockHeader(n, 1, left === 0), Buffer.from([0]));
    }
    yield Buffer.concat(batch);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Victim tree, snapshots, canaries.

export interface Ctx {
  format: WhiteoutFormat;
  tmp: string;
  root: string;
  /** Absolute path of the victim directory, beside the root. */
  victim: string;
  /** A name unique to this test, used for files an escape would create (checked at `/` and in the temp dir). */
  token: string;
}

const VICTIM_SECRET = 'secret contents\n';

export async function makeVictim(victim: string): Promise<void> {
  fs.mkdirSync(path.join(victim, 'dir'), { recursive: true });
  fs.writeFileSync(path.join(victim, 'secret'), VICTIM_SECRET);
  fs.chmodSync(path.join(victim, 'secret'), 0o600);
  fs.writeFileSync(path.join(victim, 'dir', 'inner'), 'inner\n');
  fs.writeFileSync(path.join(victim, 'suid'), 'binary');
  fs.chmodSync(path.join(victim, 'suid'), 0o4755);
  fs.symlinkSync('secret', path.join(victim, 'link'));
  fs.symlinkSync('/etc', path.join(victim, 'abslink'));
  await b.lsetxattr(path.join(victim, 'secret'), 'user.victim', Buffer.from('v'));
  await b.lsetxattr(path.join(victim, 'dir'), 'trusted.victim', Buffer.from('d'));
}

/**
 * Everything under `dir` except the subtree `skip`: type, mode, owner, size, nlink, inode, mtime, ctime, rdev,
 * symlink target, content digest and every xattr. atime is left out (the snapshot itself reads the files).
 */
export async function snapshot(dir: string, skip: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const st = fs.lstatSync(p, { bigint: true });
    const rel = path.relative(dir, p) || '.';
    let extra = '';
    if (st.isSymbolicLink()) extra = `-> ${fs.readlinkSync(p)}`;
    else if (st.isFile()) extra = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    const names = (await b.llistxattr(p)).sort();
    const xs: string[] = [];
    for (const n of names) xs.push(`${n}=${(await b.lgetxattr(p, n))?.toString('hex') ?? ''}`);
    out.push(
      [rel, st.mode.toString(8), st.uid, st.gid, st.size, st.nlink, st.ino, st.mtimeNs, st.ctimeNs, st.rdev, extra, xs.join(',')].join(' '),
    );
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p).sort()) {
        const child = path.join(p, name);
        if (child !== skip) await walk(child);
      }
    }
  };
  await walk(dir);
  return out;
}

/** Places an escape that ignored the root could have reached with a `..` too many. */
export function canaryPlaces(c: Ctx): string[] {
  return ['/', os.tmpdir(), path.dirname(c.tmp), c.tmp, c.victim, path.join(c.victim, 'dir')].map((d) => path.join(d, c.token));
}

// ---------------------------------------------------------------------------------------------------------------
// Cases.

export interface Outcome {
  result: ApplyLayerResult;
  warnings: ApplyWarning[];
}

export type Expect =
  | {
      /** Refused with InvalidArchiveError (code ERR_INVALID_ARCHIVE). */
      invalid: true;
      /** The entry the error names (InvalidArchiveError.entry), when the problem is tied to one entry. */
      entry?: string | ((c: Ctx) => string);
      message?: RegExp;
      /** An ArchiveLimitError in particular. */
      limit?: boolean;
    }
  | {
      /** Legal: applied, and `check` verifies the effect is inside the root. */
      contained: (c: Ctx, o: Outcome) => void | Promise<void>;
    };

export interface Case {
  name: string;
  /** Pre-populates the root (a lower layer's content). */
  setup?: (c: Ctx) => void | Promise<void>;
  input: (c: Ctx) => Buffer | (AsyncIterable<Uint8Array> & { stop?(): void });
  opts?: (c: Ctx) => Partial<ApplyOptions>;
  expect: Expect | ((f: WhiteoutFormat) => Expect);
}

const refused = (entry?: string | ((c: Ctx) => string), message?: RegExp): Expect => ({
  invalid: true,
  ...(entry !== undefined ? { entry } : {}),
  ...(message ? { message } : {}),
});
const limit = (message?: RegExp): Expect => ({ invalid: true, limit: true, ...(message ? { message } : {}) });
const contained = (check: (c: Ctx, o: Outcome) => void | Promise<void>): Expect => ({ contained: check });

export const r = (c: Ctx, ...p: string[]): string => path.join(c.root, ...p);
export const lst = (p: string): fs.BigIntStats => fs.lstatSync(p, { bigint: true });
export const read = (p: string): string => fs.readFileSync(p, 'utf8');
export const exists = (p: string): boolean => {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
};
export const isLink = (p: string): boolean => exists(p) && fs.lstatSync(p).isSymbolicLink();
export const isWhiteoutDev = (p: string): boolean => exists(p) && lst(p).isCharacterDevice() && lst(p).rdev === 0n;
/** Absolute victim path without its leading '/', i.e. where it lands when taken relative to the root. */
export const vrel = (c: Ctx): string => c.victim.replace(/^\/+/, '');

const DEEP = 10_000;
const deepName = (n: number, leaf = 'f'): string => `${'d/'.repeat(n)}${leaf}`;
/**
 * Depth of a tree built past maxDepth through symlinks: each hop is a 500-level chain of `d` directories and a
 * symlink to its bottom, and the next hop's chain starts at that symlink. Kept at 2000 because every entry is
 * resolved from the root, so building costs grow with the square of the depth.
 */
const PHYSICAL_DEEP = 2000;
export function deepTreeEntries(depth: number): Buffer[] {
  const parts: Buffer[] = [];
  const hop = 500;
  let base = '';
  for (let i = 0; i * hop < depth; i++) {
    const chain = `${base}${'d/'.repeat(hop)}`;
    parts.push(pax([['path', chain]]), ent({ name: 'x', type: 'dir' }));
    parts.push(ent({ name: `s${i}`, type: 'symlink', linkname: `/${chain}` }));
    base = `s${i}/`;
  }
  parts.push(pax([['path', `${base}leaf`]]), ent({ name: 'x', data: 'bottom' }));
  return parts;
}

export const cases: Case[] = [
  // ---- path traversal in names ----
  {
    name: 'name "../victim/x" (CPython CVE-2007-4559 style traversal)',
    input: (c) => tar(ent({ name: `../victim/${c.token}`, data: 'x' })),
    expect: refused((c) => `../victim/${c.token}`, /escapes the layer root/),
  },
  {
    name: 'name "a/../../victim/x" after a folded prefix (Snyk "Zip Slip" 2018)',
    input: (c) => tar(ent({ name: `a/../../victim/${c.token}`, data: 'x' })),
    expect: refused((c) => `a/../../victim/${c.token}`, /escapes the layer root/),
  },
  {
    name: 'name "/../x" (absolute then up)',
    input: (c) => tar(ent({ name: `/../${c.token}`, data: 'x' })),
    expect: refused((c) => `/../${c.token}`, /escapes the layer root/),
  },
  {
    name: 'name "./a/./b/../../../x" with dot components',
    input: (c) => tar(ent({ name: `./a/./b/../../../${c.token}`, data: 'x' })),
    expect: refused((c) => `./a/./b/../../../${c.token}`),
  },
  {
    name: 'absolute name is taken relative to the root',
    input: (c) => tar(ent({ name: `${c.victim}/${c.token}`, data: 'abs' })),
    expect: contained((c) => expect(read(r(c, vrel(c), c.token))).toBe('abs')),
  },
  {
    name: 'hardlink linkname "../victim/secret"',
    input: () => tar(ent({ name: 'h', type: 'link', linkname: '../victim/secret' })),
    expect: refused('h', /hardlink target name escapes/),
  },
  {
    name: 'hardlink linkname "a/../../victim/secret"',
    input: () => tar(ent({ name: 'a/', type: 'dir' }), ent({ name: 'h', type: 'link', linkname: 'a/../../victim/secret' })),
    expect: refused('h', /hardlink target name escapes the layer root \("a\/\.\.\/\.\.\/victim\/secret"\)/),
  },
  {
    name: 'hardlink to an absolute path that only exists outside the root',
    input: (c) => tar(ent({ name: 'h', type: 'link', linkname: `${c.victim}/secret` })),
    expect: refused('h', /cannot create link \(ENOENT/),
  },
  {
    name: 'hardlink to a relative path that only exists outside the root',
    input: () => tar(ent({ name: 'h', type: 'link', linkname: 'victim/secret' })),
    expect: refused('h', /ENOENT/),
  },
  {
    name: 'PAX path record with ".." (ustar name harmless)',
    input: (c) => tar(pax([['path', `../victim/${c.token}`]]), ent({ name: 'harmless', data: 'x' })),
    expect: refused((c) => `../victim/${c.token}`, /escapes/),
  },
  {
    name: 'PAX linkpath record with ".." on a hardlink',
    input: () => tar(pax([['linkpath', '../victim/secret']]), ent({ name: 'h', type: 'link', linkname: 'harmless' })),
    expect: refused('h', /hardlink target name escapes/),
  },
  {
    name: 'global PAX path record with ".." applies to every entry',
    input: (c) => tar(pax([['path', `../victim/${c.token}`]], 'g'), ent({ name: 'harmless', data: 'x' })),
    expect: refused((c) => `../victim/${c.token}`),
  },
  {
    name: 'GNU long name with ".."',
    input: (c) => tar(gnuLong('L', `${'long/'.repeat(30)}${'../'.repeat(31)}victim/${c.token}`), ent({ name: 'harmless', data: 'x' })),
    expect: refused(undefined, /escapes the layer root/),
  },
  {
    name: 'GNU long link with ".." on a hardlink',
    input: () => tar(gnuLong('K', `${'long/'.repeat(30)}${'../'.repeat(31)}victim/secret`), ent({ name: 'h', type: 'link', linkname: 'harmless' })),
    expect: refused('h', /hardlink target name escapes/),
  },
  {
    name: 'ustar prefix field with ".."',
    input: (c) => tar(patched({ name: c.token, data: 'x' }, (h) => h.write('a/../../../victim', 345, 'latin1'))),
    expect: refused((c) => `a/../../../victim/${c.token}`, /escapes/),
  },
  {
    name: 'name component longer than NAME_MAX',
    input: () => tar(ent({ name: `d/${'n'.repeat(300)}`, data: 'x' })),
    expect: refused(`d/${'n'.repeat(300)}`, /ENAMETOOLONG/),
  },
  {
    name: 'PAX path wins over a hostile GNU long name',
    input: (c) => tar(gnuLong('L', `../../${c.token}`), pax([['path', 'safe/name']]), ent({ name: 'x', data: 'ok' })),
    expect: contained((c) => expect(read(r(c, 'safe/name'))).toBe('ok')),
  },

  // ---- symlink escapes ----
  {
    name: 'relative symlink out of the root, then a write through it',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: '../victim' }), ent({ name: `evil/${c.token}`, data: 'x' })),
    expect: refused((c) => `evil/${c.token}`, /ENOENT/),
  },
  {
    name: 'relative symlink out of the root resolves inside it when the target exists there',
    input: (c) =>
      tar(ent({ name: 'victim/', type: 'dir' }), ent({ name: 'evil', type: 'symlink', linkname: '../victim' }), ent({ name: `evil/${c.token}`, data: 'in' })),
    expect: contained((c) => expect(read(r(c, 'victim', c.token))).toBe('in')),
  },
  {
    name: 'absolute symlink to "/", then a write through it',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: '/' }), ent({ name: `evil/${c.token}`, data: 'in' })),
    expect: contained((c) => {
      expect(read(r(c, c.token))).toBe('in');
      expect(fs.readlinkSync(r(c, 'evil'))).toBe('/');
    }),
  },
  {
    name: 'absolute symlink to the victim, then a write through it',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: `evil/${c.token}`, data: 'x' })),
    expect: refused((c) => `evil/${c.token}`, /ENOENT/),
  },
  {
    name: 'chained symlinks out of the root, then a write through them',
    input: (c) =>
      tar(
        ent({ name: 'l1', type: 'symlink', linkname: 'l2' }),
        ent({ name: 'l2', type: 'symlink', linkname: `../../../..${c.victim}` }),
        ent({ name: `l1/${c.token}`, data: 'x' }),
      ),
    expect: refused((c) => `l1/${c.token}`, /ENOENT/),
  },
  {
    name: 'chained absolute and relative symlinks resolve inside the root',
    input: (c) =>
      tar(
        ent({ name: 'inside/', type: 'dir' }),
        ent({ name: 'sub/', type: 'dir' }),
        ent({ name: 'l1', type: 'symlink', linkname: '/sub/l2' }),
        ent({ name: 'sub/l2', type: 'symlink', linkname: '../../../../inside' }),
        ent({ name: `l1/${c.token}`, data: 'in' }),
      ),
    expect: contained((c) => expect(read(r(c, 'inside', c.token))).toBe('in')),
  },
  {
    name: 'symlink to /proc/self/root, then a write through it',
    input: (c) => tar(ent({ name: 'p', type: 'symlink', linkname: '/proc/self/root' }), ent({ name: `p${c.victim}/${c.token}`, data: 'x' })),
    expect: refused((c) => `p${c.victim}/${c.token}`),
  },
  {
    name: 'symlink to /proc/self/root with a /proc tree in the layer (magic link never followed)',
    input: (c) =>
      tar(
        ent({ name: 'proc/self/', type: 'dir' }),
        ent({ name: 'p', type: 'symlink', linkname: '/proc/self/root' }),
        ent({ name: `p${c.victim}/${c.token}`, data: 'x' }),
      ),
    expect: refused((c) => `p${c.victim}/${c.token}`),
  },
  {
    name: 'symlink to /proc/1/cwd, then a write through it',
    input: (c) => tar(ent({ name: 'p', type: 'symlink', linkname: '/proc/1/cwd' }), ent({ name: `p/${c.token}`, data: 'x' })),
    expect: refused((c) => `p/${c.token}`),
  },
  {
    name: 'directory replaced by a symlink out later in the same archive, then a write into it',
    input: (c) =>
      tar(
        ent({ name: 'd/', type: 'dir' }),
        ent({ name: 'd/a', data: 'a' }),
        ent({ name: 'd', type: 'symlink', linkname: c.victim }),
        ent({ name: `d/${c.token}`, data: 'x' }),
      ),
    expect: refused((c) => `d/${c.token}`, /ENOENT/),
  },
  {
    name: 'symlink named like a later parent created after the dir (to "/"): children land in the root',
    input: (c) =>
      tar(
        ent({ name: 'd/', type: 'dir' }),
        ent({ name: 'd/e/', type: 'dir' }),
        ent({ name: 'd', type: 'symlink', linkname: '/' }),
        ent({ name: `d/e/${c.token}`, data: 'in' }),
      ),
    expect: contained((c) => {
      expect(isLink(r(c, 'd'))).toBe(true);
      expect(read(r(c, 'e', c.token))).toBe('in');
    }),
  },
  {
    name: 'directory replaced by a symlink to "..": ".." of the root is the root',
    input: (c) => tar(ent({ name: 'd/', type: 'dir' }), ent({ name: 'd', type: 'symlink', linkname: '..' }), ent({ name: `d/d/d/${c.token}`, data: 'in' })),
    expect: contained((c) => expect(read(r(c, c.token))).toBe('in')),
  },
  {
    name: 'symlink loop, then a write through it',
    input: (c) =>
      tar(ent({ name: 'a', type: 'symlink', linkname: 'b' }), ent({ name: 'b', type: 'symlink', linkname: 'a' }), ent({ name: `a/${c.token}`, data: 'x' })),
    expect: refused((c) => `a/${c.token}`, /ELOOP/),
  },
  {
    name: 'symlink target longer than PATH_MAX',
    input: () => tar(pax([['linkpath', `/${'x/'.repeat(2100)}`]]), ent({ name: 'longlink', type: 'symlink', linkname: 'x' })),
    expect: refused('longlink', /ENAMETOOLONG/),
  },
  {
    name: 'symlink with an empty target',
    input: () => tar(ent({ name: 'empty', type: 'symlink', linkname: '' })),
    expect: refused('empty', /ENOENT/),
  },
  {
    name: '".." in symlink targets inside the root is legal and stored verbatim',
    input: (c) =>
      tar(
        ent({ name: 'a/b/', type: 'dir' }),
        ent({ name: 'a/b/s', type: 'symlink', linkname: '../../../../../../etc/passwd' }),
        ent({ name: 'up', type: 'symlink', linkname: '../../..' }),
        ent({ name: `up/${c.token}`, data: 'in' }),
      ),
    expect: contained((c) => {
      expect(fs.readlinkSync(r(c, 'a/b/s'))).toBe('../../../../../../etc/passwd');
      expect(read(r(c, c.token))).toBe('in');
    }),
  },

  // ---- hardlinks ----
  {
    name: 'hardlink to a symlink pointing out links the symlink itself (victim nlink unchanged)',
    input: (c) => tar(ent({ name: 's', type: 'symlink', linkname: `${c.victim}/secret` }), ent({ name: 'h', type: 'link', linkname: 's' })),
    expect: contained((c) => {
      const h = lst(r(c, 'h'));
      expect(h.isSymbolicLink()).toBe(true);
      expect(h.ino).toBe(lst(r(c, 's')).ino);
      expect(h.nlink).toBe(2n);
      expect(lst(path.join(c.victim, 'secret')).nlink).toBe(1n);
    }),
  },
  {
    name: 'hardlink to a relative symlink pointing out links the symlink itself',
    input: () => tar(ent({ name: 's', type: 'symlink', linkname: '../victim/secret' }), ent({ name: 'h', type: 'link', linkname: 's' })),
    expect: contained((c) => {
      expect(fs.readlinkSync(r(c, 'h'))).toBe('../victim/secret');
      expect(lst(r(c, 'h')).ino).toBe(lst(r(c, 's')).ino);
    }),
  },
  {
    name: 'hardlink to a directory is refused',
    input: () => tar(ent({ name: 'd/', type: 'dir' }), ent({ name: 'h', type: 'link', linkname: 'd' })),
    expect: refused('h', /EPERM/),
  },
  {
    name: 'hardlink to the root is refused',
    input: () => tar(ent({ name: 'h', type: 'link', linkname: './' })),
    expect: refused('h', /hardlink to the layer root/),
  },
  {
    name: 'hardlink through a symlinked parent pointing out',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: 'h', type: 'link', linkname: 'evil/secret' })),
    expect: refused('h', /ENOENT/),
  },
  {
    name: 'hardlink to a symlink pointing out, then a file overwriting the hardlink',
    input: (c) =>
      tar(
        ent({ name: 's', type: 'symlink', linkname: `${c.victim}/secret` }),
        ent({ name: 'h', type: 'link', linkname: 's' }),
        ent({ name: 'h', data: 'overwritten' }),
      ),
    expect: contained((c) => {
      expect(lst(r(c, 'h')).isFile()).toBe(true);
      expect(read(r(c, 'h'))).toBe('overwritten');
      expect(fs.readlinkSync(r(c, 's'))).toBe(`${c.victim}/secret`);
    }),
  },
  {
    name: 'hardlink to a file, then a file overwriting the link: the first file keeps its content',
    input: () => tar(ent({ name: 'f', data: 'orig' }), ent({ name: 'h', type: 'link', linkname: 'f' }), ent({ name: 'h', data: 'new' })),
    expect: contained((c) => {
      expect(read(r(c, 'f'))).toBe('orig');
      expect(read(r(c, 'h'))).toBe('new');
      expect(lst(r(c, 'f')).nlink).toBe(1n);
    }),
  },
  {
    name: 'large streamed file over a symlink pointing out replaces the symlink',
    input: (c) => tar(ent({ name: 'big', type: 'symlink', linkname: `${c.victim}/secret` }), ent({ name: 'big', data: Buffer.alloc(2 * MiB, 0x61) })),
    expect: contained((c) => {
      expect(lst(r(c, 'big')).isFile()).toBe(true);
      expect(lst(r(c, 'big')).size).toBe(BigInt(2 * MiB));
    }),
  },
  {
    name: 'large streamed file through a symlinked parent pointing out',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: `evil/${c.token}`, data: Buffer.alloc(2 * MiB, 0x61) })),
    expect: refused((c) => `evil/${c.token}`, /ENOENT/),
  },
  {
    name: 'fifo, device and directory entries over symlinks pointing out replace the links',
    input: (c) =>
      tar(
        ent({ name: 'n', type: 'symlink', linkname: `${c.victim}/secret` }),
        ent({ name: 'n', type: 'fifo' }),
        ent({ name: 'x', type: 'symlink', linkname: `${c.victim}/dir` }),
        ent({ name: 'x/', type: 'dir', mode: 0o700 }),
        ent({ name: 'x/f', data: 'in' }),
        ent({ name: 'c', type: 'symlink', linkname: `../victim/secret` }),
        ent({ name: 'c', type: 'char', devMajor: 1, devMinor: 3 }),
      ),
    expect: contained((c) => {
      expect(lst(r(c, 'n')).isFIFO()).toBe(true);
      expect(lst(r(c, 'x')).isDirectory()).toBe(true);
      expect(read(r(c, 'x/f'))).toBe('in');
      expect(lst(r(c, 'c')).isCharacterDevice()).toBe(true);
    }),
  },

  // ---- whiteouts ----
  {
    name: 'whiteout naming ".." (".wh..."',
    input: () => tar(ent({ name: 'a/.wh...', data: '' })),
    expect: refused('a/.wh...', /whiteout names no file/),
  },
  {
    name: 'whiteout naming "." (".wh..")',
    input: () => tar(ent({ name: '.wh..', data: '' })),
    expect: refused('.wh..', /whiteout names no file/),
  },
  {
    name: 'whiteout naming the root ("/.wh./", ".wh.")',
    input: () => tar(ent({ name: '/.wh./', data: '' })),
    expect: refused('/.wh./', /whiteout names no file/),
  },
  {
    name: 'whiteout with ".." in its directory ("../.wh.secret")',
    input: () => tar(ent({ name: '../victim/.wh.secret', data: '' })),
    expect: refused('../victim/.wh.secret', /escapes/),
  },
  {
    name: 'opaque marker above the root ("../.wh..wh..opq")',
    input: () => tar(ent({ name: '../.wh..wh..opq', data: '' })),
    expect: refused('../.wh..wh..opq', /escapes/),
  },
  {
    name: 'opaque marker folding to the root ("x/../.wh..wh..opq") only affects the root',
    setup: (c) => fs.writeFileSync(r(c, 'lower-file'), 'lower'),
    input: () => tar(ent({ name: 'x/../.wh..wh..opq', data: '' }), ent({ name: 'new', data: 'n' })),
    expect: (f) =>
      contained(async (c) => {
        if (f === 'naive') expect(fs.readdirSync(c.root).sort()).toEqual(['new']);
        if (f === 'overlay') expect(await b.lgetxattr(c.root, 'trusted.overlay.opaque')).toEqual(Buffer.from('y'));
        if (f === 'aufs') expect(fs.readdirSync(c.root).sort()).toEqual(['.wh..wh..opq', 'lower-file', 'new']);
      }),
  },
  {
    name: 'opaque marker in a symlinked dir pointing out',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: 'evil/.wh..wh..opq', data: '' })),
    // naive must open the directory (refused: it resolves to nothing inside the root); aufs writes the marker
    // file through it (refused likewise); overlay sets the opaque xattr on the link itself, inside the root.
    expect: (f) =>
      f === 'overlay'
        ? contained(async (c) => expect(await b.lgetxattr(r(c, 'evil'), 'trusted.overlay.opaque')).toEqual(Buffer.from('y')))
        : refused('evil/.wh..wh..opq'),
  },
  {
    name: 'opaque marker in a symlinked dir resolving inside the root clears only the root copy',
    setup: (c) => {
      fs.mkdirSync(r(c, 'victim'));
      fs.writeFileSync(r(c, 'victim/secret'), 'root copy');
    },
    input: () => tar(ent({ name: 'evil', type: 'symlink', linkname: '../victim' }), ent({ name: 'evil/.wh..wh..opq', data: '' })),
    expect: (f) =>
      contained((c) => {
        expect(exists(r(c, 'victim/secret'))).toBe(f !== 'naive');
        if (f === 'aufs') expect(exists(r(c, 'victim/.wh..wh..opq'))).toBe(true);
      }),
  },
  {
    name: 'opaque directory (naive) removes a lower symlink pointing out, not its target',
    setup: (c) => {
      fs.mkdirSync(r(c, 'd'));
      fs.symlinkSync(c.victim, r(c, 'd/s'));
      fs.symlinkSync('../../victim/secret', r(c, 'd/s2'));
      fs.writeFileSync(r(c, 'd/old'), 'old');
    },
    input: () => tar(ent({ name: 'd/', type: 'dir' }), ent({ name: 'd/.wh..wh..opq', data: '' }), ent({ name: 'd/new', data: 'n' })),
    expect: (f) =>
      contained((c) => {
        expect(fs.readdirSync(r(c, 'd')).sort()).toEqual(f === 'naive' ? ['new'] : f === 'aufs' ? ['.wh..wh..opq', 'new', 'old', 's', 's2'] : ['new', 'old', 's', 's2']);
      }),
  },
  {
    name: '".wh." through a symlinked parent pointing out',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: 'evil/.wh.secret', data: '' })),
    // naive: removing something that does not exist (inside the root) is a no-op; overlay and aufs must create
    // a whiteout there, which resolves to nothing inside the root.
    expect: (f) => (f === 'naive' ? contained((c) => expect(isLink(r(c, 'evil'))).toBe(true)) : refused('evil/.wh.secret', /ENOENT/)),
  },
  {
    name: '".wh." through an absolute symlinked parent resolving inside the root',
    setup: (c) => {
      fs.mkdirSync(r(c, 'inside'));
      fs.writeFileSync(r(c, 'inside/gone'), 'g');
      fs.writeFileSync(r(c, 'inside/keep'), 'k');
    },
    input: () => tar(ent({ name: 'evil', type: 'symlink', linkname: '/inside' }), ent({ name: 'evil/.wh.gone', data: '' })),
    expect: (f) =>
      contained((c) => {
        expect(read(r(c, 'inside/keep'))).toBe('k');
        if (f === 'naive') expect(exists(r(c, 'inside/gone'))).toBe(false);
        if (f === 'overlay') expect(isWhiteoutDev(r(c, 'inside/gone'))).toBe(true);
        if (f === 'aufs') expect(exists(r(c, 'inside/.wh.gone'))).toBe(true);
      }),
  },
  {
    name: 'whiteout of a symlink pointing out removes the link, never its target',
    setup: (c) => {
      fs.symlinkSync(c.victim, r(c, 's'));
      fs.symlinkSync('../victim/dir', r(c, 's2'));
    },
    input: () => tar(ent({ name: '.wh.s', data: '' }), ent({ name: '.wh.s2', data: '' })),
    expect: (f) =>
      contained((c) => {
        if (f === 'naive') expect(fs.readdirSync(c.root)).toEqual([]);
        if (f === 'overlay') expect(isWhiteoutDev(r(c, 's')) && isWhiteoutDev(r(c, 's2'))).toBe(true);
        if (f === 'aufs') expect(fs.readdirSync(c.root).sort()).toEqual(['.wh.s', '.wh.s2', 's', 's2']);
      }),
  },
  {
    name: 'aufs hardlink stash: traversal out of .wh..wh.plnk and links to missing stash entries',
    input: () =>
      tar(ent({ name: '.wh..wh.plnk/', type: 'dir' }), ent({ name: '.wh..wh.plnk/1.2', data: 'x' }), ent({ name: 'h', type: 'link', linkname: '.wh..wh.plnk/9.9' })),
    expect: refused('h'),
  },
  {
    name: 'aufs hardlink stash name with ".."',
    input: () => tar(ent({ name: '.wh..wh.plnk/../../victim/secret', data: 'x' })),
    expect: refused('.wh..wh.plnk/../../victim/secret', /escapes/),
  },

  // ---- devices ----
  {
    name: "char device with devices: 'refuse'",
    input: () => tar(ent({ name: 'null', type: 'char', devMajor: 1, devMinor: 3 })),
    opts: () => ({ devices: 'refuse' }),
    expect: refused('null', /device nodes are not allowed/),
  },
  {
    name: "block device with devices: 'refuse'",
    input: () => tar(ent({ name: 'sda', type: 'block', devMajor: 8, devMinor: 0 })),
    opts: () => ({ devices: 'refuse' }),
    expect: refused('sda', /device nodes are not allowed/),
  },
  {
    name: 'device nodes by default are created inside the root',
    input: () => tar(ent({ name: 'dev/', type: 'dir' }), ent({ name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 }), ent({ name: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0 })),
    expect: contained((c) => {
      expect(lst(r(c, 'dev/null')).rdev).toBe(BigInt((1 << 8) | 3));
      expect(lst(r(c, 'dev/sda')).isBlockDevice()).toBe(true);
    }),
  },
  {
    name: "device nodes with devices: 'skip' are left out with a warning",
    input: () => tar(ent({ name: 'null', type: 'char', devMajor: 1, devMinor: 3 }), ent({ name: 'fifo', type: 'fifo' })),
    opts: () => ({ devices: 'skip' }),
    expect: contained((c, o) => {
      expect(fs.readdirSync(c.root)).toEqual(['fifo']);
      expect(o.warnings).toEqual([{ path: 'null', message: 'device node skipped' }]);
    }),
  },
  {
    name: 'device node through a symlinked parent pointing out',
    input: (c) => tar(ent({ name: 'evil', type: 'symlink', linkname: c.victim }), ent({ name: 'evil/null', type: 'char', devMajor: 1, devMinor: 3 })),
    expect: refused('evil/null', /ENOENT/),
  },
  {
    name: 'device node with a base-256 major number beyond 32 bits',
    input: () => tar(patched({ name: 'dev0', type: 'char', devMajor: 1, devMinor: 3 }, (h) => base256(h, 329, 8, 1n << 40n))),
    expect: refused('dev0', /device number/),
  },

  // ---- duplicates and conflicting types ----
  {
    name: 'file, then dir, then symlink at the same path: the last one wins, nothing is followed',
    input: (c) =>
      tar(
        ent({ name: 'x', data: 'file' }),
        ent({ name: 'x/', type: 'dir' }),
        ent({ name: 'x/child', data: 'c' }),
        ent({ name: 'x', type: 'symlink', linkname: c.victim }),
      ),
    expect: contained((c) => expect(fs.readlinkSync(r(c, 'x'))).toBe(c.victim)),
  },
  {
    name: 'symlink, then dir, then file at the same path',
    input: (c) =>
      tar(
        ent({ name: 'x', type: 'symlink', linkname: `${c.victim}/dir` }),
        ent({ name: 'x/', type: 'dir' }),
        ent({ name: 'x/inner', data: 'mine' }),
        ent({ name: 'x', data: 'file' }),
      ),
    expect: contained((c) => expect(read(r(c, 'x'))).toBe('file')),
  },
  {
    name: 'dir with a subtree replaced by a file, then by a hardlink',
    input: () =>
      tar(ent({ name: 'x/a/b/', type: 'dir' }), ent({ name: 'x/a/b/c', data: 'c' }), ent({ name: 'x', data: 'file' }), ent({ name: 'y', data: 'y' }), ent({ name: 'x', type: 'link', linkname: 'y' })),
    expect: contained((c) => expect(lst(r(c, 'x')).ino).toBe(lst(r(c, 'y')).ino)),
  },
  {
    name: 'the same file twice: the second replaces the first',
    input: () => tar(ent({ name: 'f', data: 'one', mode: 0o4755 }), ent({ name: 'f', data: 'two', mode: 0o600 })),
    expect: contained((c) => {
      expect(read(r(c, 'f'))).toBe('two');
      expect(lst(r(c, 'f')).mode & 0o7777n).toBe(0o600n);
    }),
  },
  {
    name: 'root entry with a non-directory type',
    input: (c) => tar(ent({ name: './', type: 'symlink', linkname: c.victim })),
    expect: refused('./', /replaces the layer root/),
  },

  // ---- truncation and corrupt compression ----
  {
    name: 'tar truncated mid-header',
    input: () => buildTar([{ name: 'a', data: 'a' }, { name: 'b', data: 'b' }]).subarray(0, 1024 + 300),
    expect: refused(undefined, /unexpected end of archive in header/),
  },
  {
    name: 'tar truncated mid-body',
    input: () => buildTar([{ name: 'a', data: Buffer.alloc(5000, 1) }]).subarray(0, 512 + 3000),
    expect: refused(undefined, /unexpected end of archive/),
  },
  {
    name: 'tar truncated mid-body of a large streamed file',
    input: () => buildTar([{ name: 'big', data: Buffer.alloc(3 * MiB, 1) }]).subarray(0, 512 + 2 * MiB + 77),
    expect: refused(undefined, /unexpected end of archive/),
  },
  {
    name: 'tar truncated mid-PAX header',
    input: () => tar(pax([['path', 'x'.repeat(300)]]), ent({ name: 'x', data: 'x' })).subarray(0, 512 + 100),
    expect: refused(undefined, /unexpected end of archive in extended header/),
  },
  {
    name: 'tar ending right after a PAX header',
    input: () => pax([['path', 'a']]),
    expect: refused(undefined, /archive ends after an extended header/),
  },
  {
    name: 'truncated gzip stream',
    input: () => {
      const z = gzipSync(buildTar([{ name: 'a', data: Buffer.alloc(100_000, 7) }, { name: 'b', data: 'b' }]));
      return z.subarray(0, z.length - 20);
    },
    expect: refused(undefined, /gzip|unexpected end/),
  },
  {
    name: 'gzip stream with a corrupt CRC',
    input: () => {
      const z = Buffer.from(gzipSync(buildTar([{ name: 'a', data: 'hello' }])));
      z[z.length - 8] ^= 0xff;
      return z;
    },
    expect: refused(undefined, /corrupt gzip/),
  },
  {
    name: 'truncated zstd stream',
    input: () => {
      const z = zstdCompress(buildTar([{ name: 'a', data: Buffer.from(createHash('sha512').update('x').digest().toString('hex').repeat(2000)) }]));
      return z.subarray(0, Math.floor(z.length / 2));
    },
    expect: refused(undefined, /zstd|unexpected end/),
  },

  // ---- numbers ----
  {
    name: 'declared size far bigger than the data',
    input: () => Buffer.concat([patched({ name: 'a' }, (h) => setOctal(h, 'size', '77777777777')), Buffer.from('short')]),
    expect: refused(undefined, /unexpected end of archive/),
  },
  {
    name: 'negative base-256 size',
    input: () => tar(patched({ name: 'a' }, (h) => base256(h, 124, 12, -512n))),
    expect: refused(undefined, /negative size/),
  },
  {
    name: 'base-256 size beyond 2^53',
    input: () => tar(patched({ name: 'a' }, (h) => base256(h, 124, 12, 1n << 60n))),
    expect: refused(undefined, /size too large/),
  },
  {
    name: 'garbage in an octal size field',
    input: () => tar(patched({ name: 'a' }, (h) => setOctal(h, 'size', '12x4'))),
    expect: refused(undefined, /invalid octal digit in size/),
  },
  {
    name: 'base-256 uid within range is applied',
    input: () => tar(patched({ name: 'u', mode: 0o640 }, (h) => base256(h, 108, 8, 3_000_000_000n))),
    expect: contained((c) => expect(lst(r(c, 'u')).uid).toBe(3_000_000_000n)),
  },
  {
    name: 'base-256 uid beyond 32 bits',
    input: () => tar(patched({ name: 'u' }, (h) => base256(h, 108, 8, 1n << 40n))),
    expect: refused('u', /uid/),
  },
  {
    name: 'PAX uid 4294967295 (the "no change" id)',
    input: () => tar(pax([['uid', '4294967295']]), ent({ name: 'u', data: 'x' })),
    expect: refused('u', /uid/),
  },
  {
    name: 'PAX gid beyond 32 bits on a large streamed file',
    input: () => tar(pax([['gid', '99999999999']]), ent({ name: 'big', data: Buffer.alloc(2 * MiB, 1) })),
    expect: refused('big', /gid/),
  },

  // ---- PAX tricks ----
  {
    name: 'PAX path with a NUL byte',
    input: () => tar(pax([['path', Buffer.from('safe\0../../victim/secret')]]), ent({ name: 'x', data: 'x' })),
    expect: refused(undefined, /NUL byte in PAX path/),
  },
  {
    name: 'PAX linkpath with a NUL byte',
    input: () => tar(pax([['linkpath', Buffer.from('safe\0/etc/passwd')]]), ent({ name: 's', type: 'symlink', linkname: 'x' })),
    expect: refused(undefined, /NUL byte in PAX linkpath/),
  },
  {
    name: 'PAX size conflicting with the header size (desynchronises the stream)',
    input: () => tar(pax([['size', '4096']]), ent({ name: 'a', data: 'short' }), ent({ name: 'b', data: 'b' })),
    expect: refused(),
  },
  {
    name: 'PAX record length longer than the header',
    input: () => tar(meta('x', Buffer.from('99 path=a\n')), ent({ name: 'x', data: 'x' })),
    expect: refused(undefined, /PAX record length out of range/),
  },
  {
    name: 'PAX record length shorter than the record',
    input: () => tar(meta('x', Buffer.from('9 path=../../victim/secret\n')), ent({ name: 'x', data: 'x' })),
    expect: refused(undefined, /PAX record/),
  },
  {
    name: 'PAX record lengths that make records overlap',
    input: () => tar(meta('x', Buffer.from('14 path=safe\n23 path=../victim/pw\n')), ent({ name: 'x', data: 'x' })),
    expect: refused(undefined, /PAX record/),
  },
  {
    name: 'negative PAX size',
    input: () => tar(pax([['size', '-5']]), ent({ name: 'a', data: 'x' })),
    expect: refused(undefined, /invalid PAX size/),
  },
  {
    name: 'xattr name longer than XATTR_NAME_MAX',
    input: () => tar(ent({ name: 'f', data: 'x', xattrs: { [`user.${'n'.repeat(300)}`]: Buffer.from('v') } })),
    expect: refused('f', /ERANGE from fsetxattr/),
  },
  {
    name: 'xattr value larger than XATTR_SIZE_MAX on a large streamed file',
    input: () => tar(ent({ name: 'big', data: Buffer.alloc(2 * MiB, 1), xattrs: { 'user.big': Buffer.alloc(70_000, 1) } })),
    expect: refused('big', /E2BIG from fsetxattr "user\.big"/),
  },

  // ---- depth ----
  {
    name: `${DEEP}-deep directory name fails via maxDepth without a stack overflow (node-tar CVE-2024-28863)`,
    input: () => tar(pax([['path', deepName(DEEP)]]), ent({ name: 'deep', data: 'x' })),
    expect: refused(undefined, /nested deeper than 512 levels/),
  },
  {
    name: `${DEEP}-deep directory chain of entries fails via maxDepth (node-tar CVE-2024-28863)`,
    input: () => {
      const parts: Buffer[] = [];
      for (let i = 1; i <= 600; i++) parts.push(ent({ name: `${'d/'.repeat(i)}`, type: 'dir' }));
      return tar(...parts);
    },
    expect: refused(undefined, /nested deeper than 512 levels/),
  },
  {
    name: `${DEEP}-deep name with maxDepth raised fails on the path length limit`,
    input: () => tar(pax([['path', deepName(DEEP)]]), ent({ name: 'deep', data: 'x' })),
    opts: () => ({ maxDepth: 100_000 }),
    expect: refused(undefined, /longer than 4000 bytes/),
  },
  {
    name: 'custom maxDepth is honoured',
    input: () => tar(ent({ name: 'a/b/c/d/e', data: 'x' })),
    opts: () => ({ maxDepth: 4 }),
    expect: refused(undefined, /nested deeper than 4 levels/),
  },
  {
    name: 'symlink to "." walked more than 40 times',
    input: (c) => tar(ent({ name: 'a', type: 'symlink', linkname: '.' }), ent({ name: `${'a/'.repeat(60)}${c.token}`, data: 'x' })),
    expect: refused(undefined, /ELOOP/),
  },
  {
    name: `a ${PHYSICAL_DEEP}-level physical tree built through symlinks (deeper than the depth limit), then whited out`,
    input: () => tar(...deepTreeEntries(PHYSICAL_DEEP), ent({ name: '.wh.d', data: '' })),
    expect: (f) =>
      contained((c) => {
        if (f === 'naive') expect(exists(r(c, 'd'))).toBe(false);
        if (f === 'overlay') expect(isWhiteoutDev(r(c, 'd'))).toBe(true);
        if (f === 'aufs') expect(exists(r(c, '.wh.d'))).toBe(true);
      }),
  },

  // ---- decompression bombs ----
  {
    name: 'gzip of 2 GiB of zeros stops at maxUncompressedSize (64 MiB)',
    input: () => gzipBomb(2 * GiB),
    opts: () => ({ maxUncompressedSize: 64 * MiB }),
    expect: limit(/exceeds 67108864 bytes/),
  },
  {
    name: 'gzip of a 2 GiB zero file stops at the ratio limit',
    input: () => gzipBomb(2 * GiB, encodeHeader({ name: 'bomb', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 2 * GiB, mtimeSec: 0 })),
    opts: () => ({ maxRatio: 100, ratioFloor: 4 * MiB }),
    expect: limit(/decompression ratio above 100:1/),
  },
  {
    name: 'zstd of 2 GiB of zeros stops at maxUncompressedSize (64 MiB)',
    input: () => zstdBomb(2 * GiB, encodeHeader({ name: 'bomb', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 2 * GiB, mtimeSec: 0 })),
    opts: () => ({ maxUncompressedSize: 64 * MiB }),
    expect: limit(/exceeds 67108864 bytes/),
  },
  {
    name: 'zstd RLE bomb of 2 GiB stops at the ratio limit',
    input: () => zstdBomb(2 * GiB),
    opts: () => ({ ratioFloor: 8 * MiB }),
    expect: limit(/decompression ratio above 2000:1/),
  },
  {
    name: 'PAX header declaring 100 MiB is refused before it is read (Go CVE-2022-2879)',
    input: () => {
      const h = meta('x', Buffer.alloc(0), 100 * MiB);
      return Buffer.concat([h, Buffer.alloc(4096)]);
    },
    expect: limit(/extended header of 104857600 bytes exceeds/),
  },
  {
    name: 'GNU sparse entries are refused (Go CVE-2025-58183, unbounded sparse maps)',
    input: () => tar(patched({ name: 'sparse', data: 'x' }, (h) => (h[156] = 'S'.charCodeAt(0)))),
    expect: refused('sparse', /GNU sparse/),
  },
  {
    name: 'PAX GNU.sparse records are refused (Go CVE-2025-58183)',
    input: () => tar(pax([['GNU.sparse.map', '0,1,'.repeat(1000)], ['GNU.sparse.numblocks', '1000']]), ent({ name: 'sparse', data: 'x' })),
    expect: refused('sparse', /sparse/),
  },

  // ---- xattrs and special bits ----
  {
    name: 'trusted.overlay.* xattrs from the archive are dropped',
    input: () =>
      tar(
        ent({ name: 'd/', type: 'dir', xattrs: { 'trusted.overlay.opaque': Buffer.from('y'), 'trusted.overlay.redirect': Buffer.from('/etc') } }),
        ent({ name: 'f', data: 'x', xattrs: { 'trusted.overlay.metacopy': Buffer.alloc(0), 'trusted.overlay.redirect': Buffer.from('/') } }),
      ),
    expect: contained(async (c, o) => {
      expect(await b.lgetxattr(r(c, 'd'), 'trusted.overlay.opaque')).toBeNull();
      expect(await b.lgetxattr(r(c, 'd'), 'trusted.overlay.redirect')).toBeNull();
      expect(await b.lgetxattr(r(c, 'f'), 'trusted.overlay.metacopy')).toBeNull();
      expect(o.warnings.filter((w) => /ignored overlay xattr/.test(w.message))).toHaveLength(4);
    }),
  },
  {
    name: 'xattrs on a symlink pointing out land on the link, never on its target',
    input: (c) => tar(ent({ name: 's', type: 'symlink', linkname: `${c.victim}/secret`, xattrs: { 'trusted.pwn': Buffer.from('1'), 'user.pwn': Buffer.from('1') } })),
    expect: contained(async (c, o) => {
      expect(await b.lgetxattr(r(c, 's'), 'trusted.pwn')).toEqual(Buffer.from('1'));
      expect(o.warnings.some((w) => w.path === 's' && /user\.pwn/.test(w.message))).toBe(true);
    }),
  },
  {
    name: 'setuid/setgid files keep their bits with the owner from the archive (inline and streamed)',
    input: () =>
      tar(
        ent({ name: 'suid', data: 'x', mode: 0o4755, uid: 1234, gid: 5678 }),
        ent({ name: 'sgid', data: 'x', mode: 0o2711, uid: 0, gid: 42 }),
        ent({ name: 'bigsuid', data: Buffer.alloc(2 * MiB, 2), mode: 0o6750, uid: 77, gid: 88 }),
      ),
    expect: contained((c) => {
      const s = lst(r(c, 'suid'));
      expect([s.mode & 0o7777n, s.uid, s.gid]).toEqual([0o4755n, 1234n, 5678n]);
      const g = lst(r(c, 'sgid'));
      expect([g.mode & 0o7777n, g.uid, g.gid]).toEqual([0o2711n, 0n, 42n]);
      const big = lst(r(c, 'bigsuid'));
      expect([big.mode & 0o7777n, big.uid, big.gid]).toEqual([0o6750n, 77n, 88n]);
    }),
  },

  // ---- public advisories ----
  {
    name: 'Docker CVE-2014-6407: symlink out, then a hardlink through it',
    input: (c) => tar(ent({ name: 'sym', type: 'symlink', linkname: c.victim }), ent({ name: 'hl', type: 'link', linkname: 'sym/secret' }), ent({ name: 'hl', data: 'pwned' })),
    expect: refused('hl', /ENOENT/),
  },
  {
    name: 'Docker CVE-2014-6407: relative symlink out, then a file written through it',
    input: () => tar(ent({ name: 'sym', type: 'symlink', linkname: '../victim/secret' }), ent({ name: 'sym/../x', data: 'x' }), ent({ name: 'hl', type: 'link', linkname: 'sym' }), ent({ name: 'hl', data: 'pwned' })),
    expect: contained((c) => {
      expect(fs.readlinkSync(r(c, 'sym'))).toBe('../victim/secret');
      expect(read(r(c, 'hl'))).toBe('pwned');
      expect(read(r(c, 'x'))).toBe('x');
    }),
  },
  {
    name: 'Docker CVE-2014-9356: absolute symlink is resolved inside the root',
    input: (c) =>
      tar(ent({ name: `${vrel(c)}/`, type: 'dir' }), ent({ name: 'abs', type: 'symlink', linkname: c.victim }), ent({ name: `abs/${c.token}`, data: 'in' }), ent({ name: 'abs/secret', data: 'mine' })),
    expect: contained((c) => {
      expect(read(r(c, vrel(c), c.token))).toBe('in');
      expect(read(r(c, vrel(c), 'secret'))).toBe('mine');
    }),
  },
  {
    name: 'Docker CVE-2014-9356: absolute symlink with ".." hops above "/"',
    input: (c) => tar(ent({ name: 'abs', type: 'symlink', linkname: `/../../..${c.victim}` }), ent({ name: 'abs/secret', data: 'pwned' })),
    expect: refused('abs/secret', /ENOENT/),
  },
  {
    name: 'Docker CVE-2014-9357 (n/a: no decompressor child process is ever run): xz input is refused as not a tar',
    input: () => Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.alloc(2048, 0x41)]),
    expect: refused(undefined, /checksum/),
  },
  {
    name: 'node-tar CVE-2021-32803: dir, then a symlink with the same name, then a write into it',
    input: (c) =>
      tar(
        ent({ name: 'a/', type: 'dir' }),
        ent({ name: 'a/b/', type: 'dir' }),
        ent({ name: 'a', type: 'symlink', linkname: c.victim }),
        ent({ name: `a/b/${c.token}`, data: 'x' }),
      ),
    expect: refused((c) => `a/b/${c.token}`),
  },
  {
    name: 'node-tar CVE-2021-32803: symlink entry with a trailing slash replaces the dir',
    input: (c) => tar(ent({ name: 'a/', type: 'dir' }), patched({ name: 'a', type: 'symlink', linkname: c.victim }, (h) => h.write('a/\0', 0, 'latin1')), ent({ name: 'a/secret', data: 'x' })),
    expect: refused('a/secret', /ENOENT/),
  },
  {
    name: 'node-tar CVE-2021-32804: multiple leading slashes are stripped, the name stays in the root',
    input: (c) => tar(ent({ name: `////${c.victim}/${c.token}`, data: 'in' }), ent({ name: `/${'/'.repeat(10)}x`, data: 'x' })),
    expect: contained((c) => {
      expect(read(r(c, vrel(c), c.token))).toBe('in');
      expect(read(r(c, 'x'))).toBe('x');
    }),
  },
  {
    name: 'node-tar CVE-2021-32804: leading slashes then ".."',
    input: (c) => tar(ent({ name: `////../${c.token}`, data: 'x' })),
    expect: refused((c) => `////../${c.token}`, /escapes/),
  },
  {
    name: 'node-tar CVE-2021-37701: backslashes are plain characters on Linux',
    input: (c) =>
      tar(
        ent({ name: 'a\\b/', type: 'dir' }),
        ent({ name: 'a', type: 'symlink', linkname: c.victim }),
        ent({ name: `a\\b/${c.token}`, data: 'in' }),
        ent({ name: '..\\..\\victim\\secret', data: 'plain' }),
      ),
    expect: contained((c) => {
      expect(read(r(c, 'a\\b', c.token))).toBe('in');
      expect(read(r(c, '..\\..\\victim\\secret'))).toBe('plain');
      expect(isLink(r(c, 'a'))).toBe(true);
    }),
  },
  {
    name: 'node-tar CVE-2021-37712: NFC dir and NFD symlink of the "same" name stay distinct',
    input: (c) =>
      tar(
        ent({ name: 'caf\u00e9/', type: 'dir' }),
        ent({ name: 'cafe\u0301', type: 'symlink', linkname: c.victim }),
        ent({ name: `caf\u00e9/${c.token}`, data: 'nfc' }),
      ),
    expect: contained((c) => {
      expect(read(r(c, 'caf\u00e9', c.token))).toBe('nfc');
      expect(isLink(r(c, 'cafe\u0301'))).toBe(true);
    }),
  },
  {
    name: 'node-tar CVE-2021-37712: NFD symlink after an NFC dir, then a write through the NFD name',
    input: (c) =>
      tar(
        ent({ name: 'caf\u00e9/', type: 'dir' }),
        ent({ name: 'cafe\u0301', type: 'symlink', linkname: c.victim }),
        ent({ name: `cafe\u0301/${c.token}`, data: 'x' }),
      ),
    expect: refused((c) => `cafe\u0301/${c.token}`, /ENOENT/),
  },
  {
    name: 'node-tar CVE-2021-37713: drive-relative names ("c:../x") are plain names on Linux',
    input: (c) => tar(ent({ name: `c:../victim/${c.token}`, data: 'in' }), ent({ name: `c:..\\..\\${c.token}`, data: 'in2' })),
    expect: contained((c) => {
      expect(read(r(c, 'c:..', 'victim', c.token))).toBe('in');
      expect(read(r(c, `c:..\\..\\${c.token}`))).toBe('in2');
    }),
  },
  {
    name: 'CPython CVE-2025-4517: symlinks whose resolution exceeds PATH_MAX cannot reach outside',
    input: (c) => {
      // 15 levels of 250-byte names: the resolved path is far beyond PATH_MAX once the symlinks are expanded,
      // which is where realpath()-based checks stop resolving.
      const long = Array.from({ length: 15 }, (_, i) => `${String(i).padStart(3, '0')}${'x'.repeat(247)}`);
      const parts: Buffer[] = [];
      for (let i = 1; i <= long.length; i++) parts.push(ent({ name: `${long.slice(0, i).join('/')}/`, type: 'dir' }));
      parts.push(ent({ name: 'l', type: 'symlink', linkname: long.join('/') }));
      parts.push(ent({ name: 'l/up', type: 'symlink', linkname: `${'../'.repeat(40)}${c.victim.slice(1)}` }));
      parts.push(ent({ name: `l/up/${c.token}`, data: 'x' }));
      return tar(...parts);
    },
    expect: refused((c) => `l/up/${c.token}`, /ENOENT/),
  },
];

