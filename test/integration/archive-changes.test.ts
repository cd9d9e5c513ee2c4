/**
 * Changes on real trees: naive (two directories, the second a `cp -a` copy of the first, then mutated) and
 * native (the upper dir of a real overlay mount, compared with the naive result on the mounted tree).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ChangeKind, type Change } from '../../lib/archive/change';
import { changesDirs, changesUpper, diffSize } from '../../lib/archive/changes';
import { loadBindings } from '../../lib/native/bindings';
import { FileType, makedev, UmountFlags } from '../../lib/native/constants';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';
import { buildBase, CAP, setMtime, write } from '../support/trees';

const b = loadBindings();
const CAP2 = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x30, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

const C = (p: string): Change => ({ path: p, kind: ChangeKind.Modify });
const A = (p: string): Change => ({ path: p, kind: ChangeKind.Add });
const D = (p: string): Change => ({ path: p, kind: ChangeKind.Delete });

describeIf(isRoot ? null : 'needs root (ownership, device nodes, security.capability)', 'changesDirs on real trees', () => {
  let tmp: string;
  let oldRoot: string;
  let newRoot: string;
  beforeEach(async () => {
    tmp = makeTmp('gd-changes-');
    oldRoot = path.join(tmp, 'old');
    newRoot = path.join(tmp, 'new');
    await buildBase(oldRoot);
    execFileSync('cp', ['-a', oldRoot, newRoot]);
  });
  afterEach(() => removeTmp(tmp));

  it('a cp -a copy has no changes', async () => {
    expect(await b.lgetxattr(path.join(newRoot, 'bin/ping'), 'security.capability')).toEqual(CAP);
    expect(await changesDirs(newRoot, oldRoot)).toEqual([]);
  });

  it('reports exactly what changed, by Docker’s rules', async () => {
    const n = (rel: string): string => path.join(newRoot, rel);
    fs.writeFileSync(n('etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n'); // content (size)
    write(newRoot, 'etc/newfile', 'new'); // add
    fs.chownSync(n('etc/passwd'), 1000, 1000); // owner
    await setMtime(n('etc/motd'), 1_500_000_000, 5); // mtime only; /hard is the same inode
    fs.chmodSync(n('bin/tool'), 0o700); // mode
    await b.lsetxattr(n('bin/ping'), 'security.capability', CAP2); // capability only
    fs.rmSync(n('var/log/old.log')); // delete a file
    fs.rmSync(n('srv/data'), { recursive: true }); // delete a directory: one Delete
    fs.rmSync(n('opt/x'));
    write(newRoot, 'opt/x/child', 'child'); // file replaced by a directory
    fs.rmSync(n('home/u'), { recursive: true });
    write(newRoot, 'home/u', 'now a file'); // directory replaced by a file
    await setMtime(n('usr/share'), 1_400_000_000, 0); // directory mtime only: no change
    write(newRoot, 'newdir/sub/file', 'f'); // new directory: whole subtree
    fs.rmSync(n('dev/null'));
    await b.mknod(n('dev/null'), FileType.S_IFCHR | 0o666, makedev(1, 5)); // rdev
    // Same second, one side without nanoseconds: equal (tar keeps whole seconds).
    await setMtime(path.join(oldRoot, 'etc/ns'), 1_600_000_000, 0);
    await setMtime(n('etc/ns'), 1_600_000_000, 123_456_789);

    const changes = await changesDirs(newRoot, oldRoot);
    expect(changes).toEqual([
      C('/bin'),
      C('/bin/ping'),
      C('/bin/tool'),
      C('/dev'),
      C('/dev/null'),
      C('/etc'),
      C('/etc/hosts'),
      C('/etc/motd'),
      A('/etc/newfile'),
      C('/etc/passwd'),
      C('/hard'),
      C('/home'),
      C('/home/u'),
      A('/newdir'),
      A('/newdir/sub'),
      A('/newdir/sub/file'),
      C('/opt'),
      C('/opt/x'),
      A('/opt/x/child'),
      C('/srv'),
      D('/srv/data'),
      C('/var'),
      C('/var/log'),
      D('/var/log/old.log'),
    ]);

    // Size: added/modified non-directories; /etc/motd and /hard are one inode, counted once.
    const hosts = '127.0.0.1 localhost\n::1 localhost\n'.length;
    const want = 'ELF ping'.length + 'ELF tool'.length + 0 + hosts + 'hello\n'.length + 3 + 'root:x:0:0:root:/root:/bin/sh\n'.length + 'now a file'.length + 1 + 5;
    expect(await diffSize(changes, newRoot)).toBe(want);
    const scan = await b.scanTree(newRoot);
    expect(await diffSize(changes, newRoot, { entries: scan })).toBe(want);
  });

  it('a same-size rewrite within the second of a tar-applied file is found by content (docker#21555)', async () => {
    // The parent's file came from a tar (whole seconds); the child rewrote it within that second.
    await setMtime(path.join(oldRoot, 'etc/hosts'), 1_600_000_000, 0);
    fs.writeFileSync(path.join(newRoot, 'etc/hosts'), '127.0.0.2 localhost\n');
    await setMtime(path.join(newRoot, 'etc/hosts'), 1_600_000_000, 42);
    // Same for a symlink retargeted with a same-length target.
    await setMtime(path.join(oldRoot, 'lnk'), 1_600_000_000, 0);
    fs.rmSync(path.join(newRoot, 'lnk'));
    fs.symlinkSync('/etc/hostz', path.join(newRoot, 'lnk'));
    await setMtime(path.join(newRoot, 'lnk'), 1_600_000_000, 42);
    expect(await changesDirs(newRoot, oldRoot)).toEqual([C('/etc'), C('/etc/hosts'), C('/lnk')]);
    // Docker's rule alone misses both.
    expect(await changesDirs(newRoot, oldRoot, { verifyContent: false })).toEqual([]);
    // Unchanged content in the same situation is no change.
    fs.writeFileSync(path.join(newRoot, 'etc/hosts'), '127.0.0.1 localhost\n');
    await setMtime(path.join(newRoot, 'etc/hosts'), 1_600_000_000, 42);
    expect(await changesDirs(newRoot, oldRoot)).toEqual([C('/lnk')]);
  });

  it('with no parent every entry is an Add', async () => {
    const changes = await changesDirs(oldRoot, null);
    const all = (await b.scanTree(oldRoot)).filter((e) => e.path !== '/').map((e) => e.path);
    expect(changes.map((c) => c.path)).toEqual(all);
    expect(changes.every((c) => c.kind === ChangeKind.Add)).toBe(true);
  });
});

describeIf(
  !isRoot ? 'needs root (mount)' : !kernelHasFs('overlay') ? 'kernel has no overlay filesystem' : !haveTool('mkfifo') ? 'mkfifo missing' : null,
  'changesUpper on a real overlay upper dir',
  () => {
    let tmp: string;
    let lower: string;
    let upper: string;
    let work: string;
    let merged: string;
    let mounted = false;
    beforeEach(async () => {
      tmp = makeTmp('gd-changes-ovl-');
      [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => path.join(tmp, d)) as [string, string, string, string];
      await buildBase(lower);
      for (const d of [upper, work, merged]) fs.mkdirSync(d);
      await b.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work},index=off,redirect_dir=off,metacopy=off`);
      mounted = true;
    });
    afterEach(async () => {
      if (mounted) await b.umount(merged, UmountFlags.MNT_DETACH).catch(() => undefined);
      mounted = false;
      removeTmp(tmp);
    });

    it('matches Docker’s native rules, and the naive result on the mounted tree', async () => {
      const m = (rel: string): string => path.join(merged, rel);
      fs.writeFileSync(m('etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n'); // copy-up of /etc and /etc/hosts
      write(merged, 'var/log/new.log', 'new'); // add in a copied-up directory
      fs.rmSync(m('srv/data/a')); // whiteout
      fs.rmSync(m('home/u'), { recursive: true });
      write(merged, 'home/u/new', 'n'); // re-created: opaque directory hiding the lower /home/u
      write(merged, 'newdir/f', 'f'); // new directory
      fs.chmodSync(m('bin/tool'), 0o700); // metadata copy-up
      fs.rmSync(m('usr/share/doc'), { recursive: true }); // whiteout of a directory

      const naive = await changesDirs(merged, lower);
      expect(naive).toEqual([
        C('/bin'),
        C('/bin/tool'),
        C('/etc'),
        C('/etc/hosts'),
        C('/home'),
        C('/home/u'),
        D('/home/u/.profile'),
        A('/home/u/new'),
        A('/newdir'),
        A('/newdir/f'),
        C('/srv'),
        C('/srv/data'),
        D('/srv/data/a'),
        C('/usr'),
        C('/usr/share'),
        D('/usr/share/doc'),
        C('/var'),
        C('/var/log'),
        A('/var/log/new.log'),
      ]);

      await b.umount(merged, 0);
      mounted = false;
      // The kernel left what Docker expects in the upper dir.
      const wh = fs.lstatSync(path.join(upper, 'srv/data/a'));
      expect([wh.isCharacterDevice(), wh.rdev]).toEqual([true, 0]);
      expect(await b.lgetxattr(path.join(upper, 'home/u'), 'trusted.overlay.opaque')).toEqual(Buffer.from('y'));

      const native = await changesUpper(upper, [lower], 'overlay');
      // Directories copied up only for their children (/etc, /bin, /var, /srv, /usr) keep the lower times and are
      // not reported; /home/u is opaque, so the lower /home/u/.profile it hides is a Delete.
      expect(native).toEqual([
        C('/bin/tool'),
        C('/etc/hosts'),
        C('/home'),
        C('/home/u'),
        D('/home/u/.profile'),
        A('/home/u/new'),
        A('/newdir'),
        A('/newdir/f'),
        C('/srv/data'),
        D('/srv/data/a'),
        C('/usr/share'),
        D('/usr/share/doc'),
        C('/var/log'),
        A('/var/log/new.log'),
      ]);
      // Everything native reports, naive reports too, with the same kind.
      const byPath = new Map(naive.map((c) => [c.path, c.kind]));
      for (const c of native) expect([c.path, byPath.get(c.path)]).toEqual([c.path, c.kind]);
    });

    it('looks through a stack of lowers: deleted and re-added is Add, present in a deeper layer is Modify', async () => {
      await b.umount(merged, 0);
      mounted = false;
      // Stack: lower (deepest) ← mid ← top upper. mid deletes /etc/motd and makes /usr/share opaque.
      const mid = path.join(tmp, 'mid');
      fs.mkdirSync(path.join(mid, 'etc'), { recursive: true });
      await b.mknod(path.join(mid, 'etc/motd'), FileType.S_IFCHR, 0);
      fs.mkdirSync(path.join(mid, 'usr/share'), { recursive: true });
      await b.lsetxattr(path.join(mid, 'usr/share'), 'trusted.overlay.opaque', Buffer.from('y'));
      write(mid, 'usr/share/only-mid', 'm');
      fs.rmSync(upper, { recursive: true });
      fs.rmSync(work, { recursive: true });
      fs.mkdirSync(upper);
      fs.mkdirSync(work);
      await b.mount('overlay', merged, 'overlay', 0, `lowerdir=${mid}:${lower},upperdir=${upper},workdir=${work},index=off,redirect_dir=off,metacopy=off`);
      mounted = true;
      write(merged, 'etc/motd', 'back'); // gone in mid: Add
      write(merged, 'etc/passwd', 'root::0:0::/:/bin/sh\n'); // from the deepest layer: Modify
      expect(fs.existsSync(path.join(merged, 'usr/share/misc'))).toBe(false); // hidden by mid's opaque dir
      write(merged, 'usr/share/misc/x', 'x'); // misc hidden by mid's opaque /usr/share: Add
      await b.umount(merged, 0);
      mounted = false;
      const native = await changesUpper(upper, [mid, lower], 'overlay');
      expect(native).toEqual([C('/etc'), A('/etc/motd'), C('/etc/passwd'), C('/usr/share'), A('/usr/share/misc'), A('/usr/share/misc/x')]);
    });
  },
);
