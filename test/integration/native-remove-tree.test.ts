/**
 * removeTree on the real kernel: every kind of entry goes (0555/0000 directories and chattr +i/+a included),
 * nothing outside the tree is touched through symlinks or hardlinks, mounts below the tree are not entered,
 * very deep and very wide trees work, and a caller without root removes its own tree and gets a Node-style error
 * for what it may not remove.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FileType, makedev, MountFlags, UmountFlags } from '../../lib/native/constants';
import type { NativeBindings } from '../../lib/native/types';
import { describeIf, haveTool, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const NOBODY = 65534;

/** Number of entries below and including `p`, counted with lstat (what removeTree must report). */
function countEntries(p: string): number {
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return 1;
  return 1 + fs.readdirSync(p).reduce((n, name) => n + countEntries(path.join(p, name)), 0);
}

/** Whether chattr +i works on the filesystem of `dir` (tmpfs since 6.0, ext4, xfs, btrfs). */
function chattrWorks(dir: string): boolean {
  if (!haveTool('chattr')) return false;
  const probe = path.join(dir, 'chattr-probe');
  fs.writeFileSync(probe, '');
  try {
    execFileSync('chattr', ['+i', probe], { stdio: 'ignore' });
    execFileSync('chattr', ['-i', probe], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(probe, { force: true });
  }
}

/** Builds a directory chain `depth` levels deep under `top` (`top/d/d/...`) with short paths only: each round
 *  moves the chain one level down by renames, so no path ever exceeds PATH_MAX. Resolves to the entry count. */
function deepChain(top: string, depth: number): number {
  fs.mkdirSync(top);
  fs.mkdirSync(path.join(top, 'd'));
  fs.writeFileSync(path.join(top, 'd', 'leaf'), 'bottom');
  let entries = 3;  // top, d, leaf
  for (let i = 1; i < depth; i++) {
    const n = path.join(top, 'n');
    fs.mkdirSync(n);
    fs.renameSync(path.join(top, 'd'), path.join(n, 'd'));
    if (i % 500 === 0) {
      fs.writeFileSync(path.join(n, 'f'), String(i));
      entries++;
    }
    fs.renameSync(n, path.join(top, 'd'));
    entries++;
  }
  return entries;
}

describeIf(isRoot ? null : 'needs root (device nodes, mounts, chattr, setuid child)', 'native removeTree', () => {
  let b: NativeBindings;
  let tmp: string;
  const mounted: string[] = [];

  beforeAll(() => {
    b = loadBindings();
  });

  beforeEach(() => {
    tmp = makeTmp('gd-rmtree-');
  });

  afterEach(async () => {
    for (const m of mounted.splice(0).reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
    // A failed test can leave chattr'd entries that the plain rm below could not remove.
    if (haveTool('chattr')) spawnSync('chattr', ['-R', '-f', '-i', '-a', tmp], { stdio: 'ignore' });
    removeTmp(tmp);
  });

  async function mountTmpfs(dir: string): Promise<void> {
    await b.mount('tmpfs', dir, 'tmpfs', 0, 'size=4m');
    mounted.push(dir);
  }

  async function bindMount(source: string, target: string): Promise<void> {
    await b.mount(source, target, null, MountFlags.MS_BIND, null);
    mounted.push(target);
  }

  it('removes files, directories, symlinks, fifos, devices, whiteouts, hardlinks and 0555/0000 directories, touching nothing outside', async () => {
    const outside = path.join(tmp, 'outside');
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'keep'), 'outside data');
    fs.writeFileSync(path.join(outside, 'linked'), 'hardlinked from inside');

    const t = path.join(tmp, 'tree');
    const p = (x: string): string => path.join(t, x);
    fs.mkdirSync(p('etc/deep/er'), { recursive: true });
    fs.writeFileSync(p('etc/hosts'), '127.0.0.1 localhost\n');
    fs.writeFileSync(p('etc/deep/er/f'), 'deep');
    fs.symlinkSync(outside, p('to-outside'));
    fs.symlinkSync(path.join(outside, 'keep'), p('etc/to-outside-file'));
    fs.symlinkSync('/nonexistent/dangling', p('dangling'));
    fs.linkSync(path.join(outside, 'linked'), p('hardlink-out'));
    fs.writeFileSync(p('a'), 'a');
    fs.linkSync(p('a'), p('etc/hardlink-in'));
    execFileSync('mkfifo', [p('fifo')]);
    await b.mknod(p('null'), FileType.S_IFCHR | 0o666, makedev(1, 3));
    await b.mknod(p('loop'), FileType.S_IFBLK | 0o600, makedev(7, 200));
    await b.mknod(p('etc/whiteout'), FileType.S_IFCHR, 0);
    fs.mkdirSync(p('ro/sub'), { recursive: true });
    fs.writeFileSync(p('ro/sub/file'), 'x');
    fs.chmodSync(p('ro/sub'), 0o555);
    fs.chmodSync(p('ro'), 0o555);
    fs.mkdirSync(p('none'));
    fs.writeFileSync(p('none/file'), 'x');
    fs.chmodSync(p('none'), 0);
    fs.mkdirSync(p('empty'));

    const expected = countEntries(t);
    await expect(b.removeTree(t)).resolves.toEqual({ entries: expected });
    expect(fs.existsSync(t)).toBe(false);
    expect(fs.readFileSync(path.join(outside, 'keep'), 'utf8')).toBe('outside data');
    expect(fs.statSync(path.join(outside, 'linked')).nlink).toBe(1);
    expect(fs.readdirSync(outside).sort()).toEqual(['keep', 'linked']);
  });

  it('resolves { entries: 0 } for a missing path or a missing parent', async () => {
    await expect(b.removeTree(path.join(tmp, 'missing'))).resolves.toEqual({ entries: 0 });
    await expect(b.removeTree(path.join(tmp, 'no/such/parent'))).resolves.toEqual({ entries: 0 });
    expect(fs.existsSync(tmp)).toBe(true);
  });

  it('refuses "..", "." and empty names before touching anything', async () => {
    fs.mkdirSync(path.join(tmp, 'x'));
    await expect(b.removeTree(`${tmp}/x/..`)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'removeTree' });
    await expect(b.removeTree(`${tmp}/x/.`)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(b.removeTree('')).rejects.toThrow(TypeError);
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(true);
  });

  it('unlinks only the link when the top is a symlink (also written with a trailing slash), or a file', async () => {
    const target = path.join(tmp, 'target');
    fs.mkdirSync(path.join(target, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(target, 'sub', 'f'), 'kept');
    fs.symlinkSync(target, path.join(tmp, 'link'));
    fs.symlinkSync(target, path.join(tmp, 'link2'));
    await expect(b.removeTree(path.join(tmp, 'link'))).resolves.toEqual({ entries: 1 });
    await expect(b.removeTree(`${path.join(tmp, 'link2')}//`)).resolves.toEqual({ entries: 1 });
    expect(fs.existsSync(path.join(tmp, 'link'))).toBe(false);
    expect(fs.existsSync(path.join(tmp, 'link2'))).toBe(false);
    expect(fs.readFileSync(path.join(target, 'sub', 'f'), 'utf8')).toBe('kept');

    fs.writeFileSync(path.join(tmp, 'file'), 'x');
    await expect(b.removeTree(path.join(tmp, 'file'))).resolves.toEqual({ entries: 1 });
    expect(fs.existsSync(path.join(tmp, 'file'))).toBe(false);
  });

  it('does not enter a tmpfs mounted below the tree: EXDEV naming it, its content survives, the rest is removed', async () => {
    const t = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(t, 'a/mnt'), { recursive: true });
    fs.mkdirSync(path.join(t, 'b/c'), { recursive: true });
    fs.writeFileSync(path.join(t, 'a/other'), 'x');
    fs.writeFileSync(path.join(t, 'b/c/f'), 'x');
    await mountTmpfs(path.join(t, 'a/mnt'));
    fs.writeFileSync(path.join(t, 'a/mnt/precious'), 'someone else\'s data');

    await expect(b.removeTree(t)).rejects.toMatchObject({ code: 'EXDEV', syscall: 'removeTree', path: path.join(t, 'a/mnt') });
    expect(fs.readFileSync(path.join(t, 'a/mnt/precious'), 'utf8')).toBe('someone else\'s data');
    // Everything but the mount point and its ancestors is gone.
    expect(fs.readdirSync(t)).toEqual(['a']);
    expect(fs.readdirSync(path.join(t, 'a'))).toEqual(['mnt']);

    await b.umount(path.join(t, 'a/mnt'), 0);
    mounted.pop();
    await expect(b.removeTree(t)).resolves.toEqual({ entries: 3 });
    expect(fs.existsSync(t)).toBe(false);
  });

  it('does not enter a bind mount from the same filesystem (same st_dev, other mount)', async () => {
    const data = path.join(tmp, 'data');
    fs.mkdirSync(data);
    fs.writeFileSync(path.join(data, 'precious'), 'keep me');
    const t = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(t, 'x/bind'), { recursive: true });
    fs.writeFileSync(path.join(t, 'x/f'), 'x');
    await bindMount(data, path.join(t, 'x/bind'));
    expect(fs.statSync(path.join(t, 'x/bind')).dev).toBe(fs.statSync(t).dev);

    await expect(b.removeTree(t)).rejects.toMatchObject({ code: 'EXDEV', path: path.join(t, 'x/bind') });
    expect(fs.readFileSync(path.join(data, 'precious'), 'utf8')).toBe('keep me');
    expect(fs.readdirSync(path.join(t, 'x'))).toEqual(['bind']);
  });

  it('refuses a top that is itself a mount point and removes nothing', async () => {
    const t = path.join(tmp, 'mnt');
    fs.mkdirSync(t);
    await mountTmpfs(t);
    fs.writeFileSync(path.join(t, 'f'), 'x');
    await expect(b.removeTree(t)).rejects.toMatchObject({ code: 'EXDEV', path: t });
    expect(fs.readFileSync(path.join(t, 'f'), 'utf8')).toBe('x');
  });

  it('removes a tree 5000 directories deep (deeper than PATH_MAX and the open-fd window)', async () => {
    const t = path.join(tmp, 'deep');
    const expected = deepChain(t, 5000);
    await expect(b.removeTree(t)).resolves.toEqual({ entries: expected });
    expect(fs.existsSync(t)).toBe(false);
  });

  it('removes a flat directory of 20,000 files', async () => {
    const t = path.join(tmp, 'flat');
    fs.mkdirSync(t);
    for (let i = 0; i < 20000; i++) fs.writeFileSync(path.join(t, `file-${i}`), '');
    await expect(b.removeTree(t)).resolves.toEqual({ entries: 20001 });
    expect(fs.existsSync(t)).toBe(false);
  });

  // chattr support depends on the filesystem of the temp dir; probed at run time, the reason printed when absent.
  const chattrReason = ((): string | null => {
    if (!isRoot) return 'needs root';
    const probeDir = makeTmp('gd-rmtree-probe-');
    try {
      return chattrWorks(probeDir) ? null : 'chattr +i does not work on the temp dir filesystem (or chattr is missing)';
    } finally {
      removeTmp(probeDir);
    }
  })();
  describeIf(chattrReason, 'immutable and append-only entries', () => {
    it('clears chattr +i/+a on files and directories and removes them', async () => {
      const t = path.join(tmp, 'tree');
      fs.mkdirSync(path.join(t, 'append'), { recursive: true });
      fs.writeFileSync(path.join(t, 'append/in-append-dir'), 'x');
      fs.mkdirSync(path.join(t, 'immdir'));
      fs.writeFileSync(path.join(t, 'immdir/in-immutable-dir'), 'x');
      fs.mkdirSync(path.join(t, 'immempty'));
      fs.writeFileSync(path.join(t, 'immutable'), 'x');
      fs.writeFileSync(path.join(t, 'appendonly'), 'x');
      execFileSync('chattr', ['+i', path.join(t, 'immutable'), path.join(t, 'immdir'), path.join(t, 'immempty')]);
      execFileSync('chattr', ['+a', path.join(t, 'appendonly'), path.join(t, 'append')]);
      let code: unknown;
      try {
        fs.unlinkSync(path.join(t, 'immutable'));
      } catch (e) {
        code = (e as NodeJS.ErrnoException).code;
      }
      expect(code).toBe('EPERM');  // the flags really are in effect

      const expected = countEntries(t);
      await expect(b.removeTree(t)).resolves.toEqual({ entries: expected });
      expect(fs.existsSync(t)).toBe(false);
    });

    it('clears chattr +i on a top that is a file', async () => {
      const f = path.join(tmp, 'immutable');
      fs.writeFileSync(f, 'x');
      execFileSync('chattr', ['+i', f]);
      await expect(b.removeTree(f)).resolves.toEqual({ entries: 1 });
      expect(fs.existsSync(f)).toBe(false);
    });
  });

  describeIf(haveTool('setpriv') ? null : 'setpriv (util-linux) is missing', 'as an unprivileged user', () => {
    const addon = process.env.GRAPHDRIVER_ADDON ?? path.resolve(__dirname, '../../build/Release/graphdriver.node');

    /** Runs removeTree(target) in a child running as nobody; resolves to the result or the error fields. */
    function removeAsNobody(target: string): Record<string, unknown> {
      const script = `
        const b = require(${JSON.stringify(addon)});
        b.removeTree(${JSON.stringify(target)}).then(
          (r) => console.log(JSON.stringify({ ok: r })),
          (e) => console.log(JSON.stringify({ err: { code: e.code, errno: e.errno, syscall: e.syscall, path: e.path } })));`;
      const out = execFileSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', script], {
        encoding: 'utf8',
      });
      return JSON.parse(out.trim()) as Record<string, unknown>;
    }

    /** A directory owned by nobody (so that it may remove entries from it). */
    function nobodyHome(): string {
      fs.chmodSync(tmp, 0o755);
      const home = path.join(tmp, 'home');
      fs.mkdirSync(home);
      fs.chownSync(home, NOBODY, NOBODY);
      return home;
    }

    /** A tree owned by nobody with 0555 and 0000 directories (which nobody must make writable itself). */
    function ownTree(t: string): number {
      fs.mkdirSync(path.join(t, 'ro/deeper'), { recursive: true });
      fs.writeFileSync(path.join(t, 'ro/deeper/f'), 'x');
      fs.writeFileSync(path.join(t, 'ro/g'), 'x');
      fs.mkdirSync(path.join(t, 'none'));
      fs.writeFileSync(path.join(t, 'none/f'), 'x');
      fs.symlinkSync('/etc/passwd', path.join(t, 'ro/link'));
      execFileSync('chown', ['-R', '-h', `${NOBODY}:${NOBODY}`, t]);
      fs.chmodSync(path.join(t, 'ro/deeper'), 0o555);
      fs.chmodSync(path.join(t, 'ro'), 0o555);
      fs.chmodSync(path.join(t, 'none'), 0);
      return countEntries(t);
    }

    it('removes its own tree with 0555 and 0000 directories', () => {
      const t = path.join(nobodyHome(), 'own');
      fs.mkdirSync(t);
      const expected = ownTree(t);
      expect(removeAsNobody(t)).toEqual({ ok: { entries: expected } });
      expect(fs.existsSync(t)).toBe(false);
      expect(fs.existsSync('/etc/passwd')).toBe(true);
    });

    it('rejects Node-style with the path of an entry it may not remove (a root-owned 0555 directory)', () => {
      const t = path.join(nobodyHome(), 'mixed');
      fs.mkdirSync(t);
      ownTree(t);
      const rootDir = path.join(t, 'rootdir');
      fs.mkdirSync(rootDir);
      fs.writeFileSync(path.join(rootDir, 'f'), 'x');
      fs.chmodSync(rootDir, 0o555);
      expect(removeAsNobody(t)).toEqual({ err: { code: 'EACCES', errno: -13, syscall: 'unlinkat', path: path.join(rootDir, 'f') } });
      expect(fs.readFileSync(path.join(rootDir, 'f'), 'utf8')).toBe('x');
    });
  });
});
