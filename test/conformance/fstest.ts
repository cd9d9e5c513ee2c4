/**
 * Small file-tree toolkit for the driver conformance suite: appliers that change a tree (as containerd's
 * continuity fstest does), deterministic content, and a strict tree comparison.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { loadBindings } from '../../lib/native/bindings';

const execFileP = promisify(execFile);

/** One change to a tree rooted at the given directory. */
export type Applier = (root: string) => Promise<void>;

function at(root: string, p: string): string {
  return path.join(root, p);
}

/** mkdir with exactly `mode` (whatever the umask). */
export const createDir =
  (p: string, mode: number): Applier =>
  async (root) => {
    await fs.mkdir(at(root, p), { recursive: true });
    await fs.chmod(at(root, p), mode);
  };

/** Writes a file (replacing any) with exactly `mode`. */
export const createFile =
  (p: string, content: Buffer | string, mode: number): Applier =>
  async (root) => {
    await fs.writeFile(at(root, p), content, { mode });
    await fs.chmod(at(root, p), mode);
  };

/** rm -rf. */
export const removeAll =
  (p: string): Applier =>
  (root) =>
    fs.rm(at(root, p), { recursive: true, force: true });

/** lchown. */
export const chown =
  (p: string, uid: number, gid: number): Applier =>
  (root) =>
    fs.lchown(at(root, p), uid, gid);

/**
 * rename(2); where the kernel refuses with EXDEV (overlayfs without redirect_dir, for a directory coming from a
 * lower layer) it falls back to copy-and-delete, as mv(1) does.
 */
export const rename =
  (from: string, to: string): Applier =>
  async (root) => {
    try {
      await fs.rename(at(root, from), at(root, to));
    } catch (e) {
      if ((e as { code?: string }).code !== 'EXDEV') throw e;
      await execFileP('cp', ['-a', '--', at(root, from), at(root, to)]);
      await fs.rm(at(root, from), { recursive: true, force: true });
    }
  };

/** link(2): `to` becomes a hardlink of `from`. */
export const link =
  (from: string, to: string): Applier =>
  (root) =>
    fs.link(at(root, from), at(root, to));

/** symlink(2). */
export const symlink =
  (target: string, p: string): Applier =>
  (root) =>
    fs.symlink(target, at(root, p));

/** The appliers in order. */
export const apply =
  (...ops: Applier[]): Applier =>
  async (root) => {
    for (const op of ops) await op(root);
  };

/** Deterministic pseudo-random bytes for a seed (xorshift32), like graphtest's randomContent. */
export function randomContent(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  ino: number;
  nlink: number;
  content?: Buffer;
  target?: string;
  xattrs: Record<string, string>;
}

/** xattrs that a mount or the system adds by itself, not part of the layer content. */
function ignoredXattr(name: string): boolean {
  return name === 'security.selinux' || name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');
}

function typeOf(mode: number): string {
  switch (mode & 0o170000) {
    case 0o040000:
      return 'dir';
    case 0o100000:
      return 'file';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return 'char';
    case 0o060000:
      return 'block';
    case 0o010000:
      return 'fifo';
    case 0o140000:
      return 'socket';
    default:
      return 'unknown';
  }
}

/** Reads a tree into a map from '/'-rooted path to its content and metadata (the root itself excluded). */
export async function readTree(root: string): Promise<Map<string, Node>> {
  const b = loadBindings();
  const out = new Map<string, Node>();
  async function walk(dir: string, rel: string): Promise<void> {
    const names = (await fs.readdir(dir)).filter((n) => !(rel === '' && n === 'lost+found')).sort();
    for (const name of names) {
      const full = path.join(dir, name);
      const p = `${rel}/${name}`;
      const st = await fs.lstat(full);
      const type = typeOf(st.mode);
      const xattrs: Record<string, string> = {};
      if (type !== 'symlink') {
        for (const x of await b.llistxattr(full)) {
          if (ignoredXattr(x)) continue;
          const v = await b.lgetxattr(full, x);
          xattrs[x] = v === null ? '' : v.toString('hex');
        }
      }
      const node: Node = {
        type,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: type === 'dir' ? 0 : st.size,
        rdev: st.rdev,
        ino: st.ino,
        nlink: st.nlink,
        xattrs,
      };
      if (type === 'file') node.content = await fs.readFile(full);
      if (type === 'symlink') node.target = await fs.readlink(full);
      out.set(p, node);
      if (type === 'dir') await walk(full, p);
    }
  }
  await walk(root, '');
  return out;
}

/** Groups of paths sharing an inode (hardlinks), as sorted path lists, sorted. */
function linkGroups(tree: Map<string, Node>): string[] {
  const byIno = new Map<number, string[]>();
  for (const [p, n] of tree) {
    if (n.type === 'dir' || n.nlink < 2) continue;
    const g = byIno.get(n.ino) ?? [];
    g.push(p);
    byIno.set(n.ino, g);
  }
  return [...byIno.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort().join(' = '))
    .sort();
}

/**
 * Compares two trees as continuity's CheckDirectoryEqual does (type, permission bits, owner, size, content,
 * symlink target, device number, xattrs, hardlink groups; not times). Returns the differences, empty when equal.
 */
export async function diffTrees(expectedRoot: string, actualRoot: string): Promise<string[]> {
  const [exp, act] = await Promise.all([readTree(expectedRoot), readTree(actualRoot)]);
  const problems: string[] = [];
  for (const [p, e] of exp) {
    const a = act.get(p);
    if (!a) {
      problems.push(`missing ${p}`);
      continue;
    }
    if (a.type !== e.type) problems.push(`${p}: type ${a.type}, expected ${e.type}`);
    if (a.mode !== e.mode) problems.push(`${p}: mode ${a.mode.toString(8)}, expected ${e.mode.toString(8)}`);
    if (a.uid !== e.uid || a.gid !== e.gid) problems.push(`${p}: owner ${a.uid}:${a.gid}, expected ${e.uid}:${e.gid}`);
    if (a.size !== e.size) problems.push(`${p}: size ${a.size}, expected ${e.size}`);
    if (e.content && a.content && !e.content.equals(a.content)) problems.push(`${p}: content differs`);
    if (a.target !== e.target) problems.push(`${p}: symlink target ${a.target}, expected ${e.target}`);
    if ((e.type === 'char' || e.type === 'block') && a.rdev !== e.rdev) problems.push(`${p}: rdev ${a.rdev}, expected ${e.rdev}`);
    if (JSON.stringify(a.xattrs) !== JSON.stringify(e.xattrs)) problems.push(`${p}: xattrs ${JSON.stringify(a.xattrs)}, expected ${JSON.stringify(e.xattrs)}`);
  }
  for (const p of act.keys()) if (!exp.has(p)) problems.push(`unexpected ${p}`);
  const [ge, ga] = [linkGroups(exp), linkGroups(act)];
  if (JSON.stringify(ge) !== JSON.stringify(ga)) problems.push(`hardlinks ${JSON.stringify(ga)}, expected ${JSON.stringify(ge)}`);
  return problems;
}

/** Mount points at or below `dir` (from /proc/self/mountinfo, octal escapes decoded). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return info
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m === dir || m.startsWith(prefix));
}
