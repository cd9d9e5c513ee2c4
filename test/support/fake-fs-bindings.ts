/**
 * Mocked native bindings backed by an in-memory tree, enough for code that works through lstatMany and
 * applyEntries on a root fd (the container init layer). Paths are root-relative, '/'-separated.
 */
import type { ApplyEntry, ApplyResult, NativeBindings, ScanEntry } from '../../lib/native/types';
import { mockBindings } from './native';

export interface FakeNode {
  type: 'dir' | 'file' | 'symlink' | 'char';
  mode: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  size?: number;
}

const TYPE_BITS: Record<FakeNode['type'], number> = { dir: 0o040000, file: 0o100000, symlink: 0o120000, char: 0o020000 };

function ok(): ApplyResult {
  return { errno: 0, code: '', syscall: '', fd: -1 };
}

function fail(code: string, errno: number, syscall: string): ApplyResult {
  return { errno, code, syscall, fd: -1 };
}

/** A tree plus bindings operating on it; `ops` records every applied entry in order. */
export function fakeFsBindings(initial: Record<string, FakeNode> = {}): { tree: Map<string, FakeNode>; ops: ApplyEntry[]; bindings: NativeBindings } {
  const tree = new Map<string, FakeNode>(Object.entries(initial));
  const ops: ApplyEntry[] = [];
  const parentOf = (p: string): string => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
  const parentIsDir = (p: string): boolean => {
    const parent = parentOf(p);
    return parent === '' || tree.get(parent)?.type === 'dir';
  };
  const bindings = mockBindings({
    lstatMany: jest.fn(async (_fd: number, paths: string[]) =>
      paths.map((p): ScanEntry | null => {
        const n = tree.get(p);
        if (!n) return null;
        return {
          path: p,
          mode: TYPE_BITS[n.type] | n.mode,
          uid: n.uid ?? 0,
          gid: n.gid ?? 0,
          size: n.size ?? 0,
          blocks: 0,
          mtimeSec: 0,
          mtimeNsec: 0,
          atimeSec: 0,
          atimeNsec: 0,
          ctimeSec: 0,
          ctimeNsec: 0,
          rdev: 0,
          dev: 1,
          ino: 1,
          nlink: 1,
          ...(n.linkname !== undefined ? { linkname: n.linkname } : {}),
        };
      }),
    ),
    applyEntries: jest.fn(async (_fd: number, entries: ApplyEntry[]) =>
      entries.map((e): ApplyResult => {
        ops.push(e);
        if (e.op === 'remove') {
          for (const k of [...tree.keys()]) if (k === e.path || k.startsWith(`${e.path}/`)) tree.delete(k);
          return ok();
        }
        if (e.op !== 'create') return fail('EINVAL', 22, 'op');
        if (!parentIsDir(e.path)) return fail('ENOENT', 2, 'openat2');
        if (tree.has(e.path) && e.noReplace) return fail('EEXIST', 17, 'mkdirat');
        const n: FakeNode = { type: e.type === 'dir' ? 'dir' : e.type === 'symlink' ? 'symlink' : 'file', mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644) };
        if (e.type === 'symlink') {
          n.mode = 0o777;
          n.linkname = e.linkname ?? '';
        }
        if (e.uid !== undefined) n.uid = e.uid;
        if (e.gid !== undefined) n.gid = e.gid;
        if (e.data !== undefined) n.size = e.data.length;
        tree.set(e.path, n);
        return ok();
      }),
    ),
  });
  return { tree, ops, bindings };
}
