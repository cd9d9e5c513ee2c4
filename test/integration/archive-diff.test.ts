/**
 * Diff export on real trees: what the tar holds, and round trips through applyLayer that must reproduce the
 * layer exactly (naive: changes → diff → apply → no changes left; overlay: upper → diff → apply in overlay form →
 * the same whiteouts and opaque directories; aufs: branch → diff → apply in aufs form → the same branch).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import { applyLayer, type ApplyWarning } from '../../lib/archive/apply';
import { ChangeKind, type Change } from '../../lib/archive/change';
import { changesDirs } from '../../lib/archive/changes';
import { exportChanges, exportUpper, type DiffWarning } from '../../lib/archive/diff';
import { readTar, type TarHeader } from '../../lib/archive/tar-reader';
import { loadBindings } from '../../lib/native/bindings';
import { FileType, makedev, UmountFlags } from '../../lib/native/constants';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';
import { buildBase, CAP, setMtime, write } from '../support/trees';

const b = loadBindings();
const A = (p: string): Change => ({ path: p, kind: ChangeKind.Add });
const D = (p: string): Change => ({ path: p, kind: ChangeKind.Delete });

async function readBack(stream: Readable): Promise<Array<{ h: TarHeader; data: Buffer }>> {
  const out: Array<{ h: TarHeader; data: Buffer }> = [];
  for await (const e of readTar(stream)) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    out.push({ h: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

/** The parts of a tree a layer must reproduce, per path ('/' left out). */
async function snapshot(root: string, opts: { opaque?: boolean } = {}): Promise<Map<string, Record<string, unknown>>> {
  const xattrs = opts.opaque ? ['security.capability', 'trusted.overlay.opaque'] : ['security.capability'];
  const entries = await b.scanTree(root, { xattrs });
  const firstPathOfInode = new Map<number, string>();
  const out = new Map<string, Record<string, unknown>>();
  for (const e of entries) {
    if (e.path === '/') continue;
    const type = e.mode & FileType.S_IFMT;
    const whiteout = type === FileType.S_IFCHR && e.rdev === 0;
    const rec: Record<string, unknown> = { type };
    if (whiteout) {
      rec.whiteout = true; // kernel-made whiteouts share one inode and carry no meaningful metadata
    } else {
      Object.assign(rec, { mode: e.mode, uid: e.uid, gid: e.gid, rdev: e.rdev, linkname: e.linkname, cap: e.xattrs?.['security.capability']?.toString('hex') });
      if (type !== FileType.S_IFDIR) Object.assign(rec, { size: e.size, mtimeSec: e.mtimeSec });
      if (type === FileType.S_IFREG) rec.sha = createHash('sha256').update(fs.readFileSync(path.join(root, e.path))).digest('hex');
      if (type !== FileType.S_IFDIR && e.nlink > 1) {
        // Hardlink structure: which path this inode was first seen at.
        if (!firstPathOfInode.has(e.ino)) firstPathOfInode.set(e.ino, e.path);
        rec.linkedTo = firstPathOfInode.get(e.ino);
      }
    }
    if (opts.opaque && type === FileType.S_IFDIR) rec.opaque = e.xattrs?.['trusted.overlay.opaque']?.toString() ?? null;
    out.set(e.path, rec);
  }
  return out;
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, security.capability)', 'exportChanges on real trees', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = makeTmp('gd-diff-');
  });
  afterEach(() => removeTmp(tmp));

  it('writes every entry kind the way Docker does', async () => {
    const root = path.join(tmp, 'root');
    await buildBase(root);
    await setMtime(path.join(root, 'etc/hosts'), 1_600_000_000, 987_654_321);
    const changes = [...(await changesDirs(root, null)), D('/etc/gone'), D('/zz')];
    const warnings: DiffWarning[] = [];
    const got = await readBack(exportChanges(root, changes, { whiteoutMtime: 1_234_567_890, onWarning: (w) => warnings.push(w) }));
    expect(warnings).toEqual([]);
    expect(got.map((e) => e.h.name)).toEqual([
      'bin/',
      'bin/ping',
      'bin/suid',
      'bin/tool',
      'dev/',
      'dev/null',
      'etc/',
      'etc/.wh.gone',
      'etc/hosts',
      'etc/motd',
      'etc/ns',
      'etc/passwd',
      'fifo',
      'hard',
      'home/',
      'home/u/',
      'home/u/.profile',
      'lnk',
      'opt/',
      'opt/x',
      'srv/',
      'srv/data/',
      'srv/data/a',
      'srv/data/b/',
      'srv/data/b/c',
      'usr/',
      'usr/share/',
      'usr/share/doc/',
      'usr/share/doc/README',
      'usr/share/misc/',
      'usr/share/misc/magic',
      'var/',
      'var/log/',
      'var/log/keep.log',
      'var/log/old.log',
      '.wh.zz',
    ]);
    const by = new Map(got.map((e) => [e.h.name, e]));
    const h = (n: string): TarHeader => by.get(n)!.h;
    expect([h('etc/hosts').mtimeSec, h('etc/hosts').mtimeNsec, h('etc/hosts').uname, h('etc/hosts').gname]).toEqual([1_600_000_000, 0, '', '']);
    expect(by.get('etc/hosts')!.data.toString()).toBe('127.0.0.1 localhost\n');
    expect(h('bin/suid').mode).toBe(0o4755);
    expect(h('bin/ping').xattrs.get('security.capability')).toEqual(CAP);
    expect([h('hard').type, h('hard').linkname, h('hard').size]).toEqual(['link', 'etc/motd', 0]);
    expect([h('dev/null').type, h('dev/null').devMajor, h('dev/null').devMinor, h('dev/null').mode]).toEqual(['char', 1, 3, 0o666]);
    expect([h('fifo').type, h('fifo').mode]).toEqual(['fifo', 0o600]);
    expect([h('lnk').type, h('lnk').linkname]).toEqual(['symlink', '/etc/hosts']);
    expect([h('home/u/').uid, h('home/u/').gid]).toEqual([1000, 1000]);
    expect([h('etc/.wh.gone').type, h('etc/.wh.gone').mode, h('etc/.wh.gone').size, h('etc/.wh.gone').mtimeSec]).toEqual(['file', 0, 0, 1_234_567_890]);
  });

  it('never reads through a parent that became a symlink out of the root', async () => {
    const root = path.join(tmp, 'root');
    const outside = path.join(tmp, 'outside');
    write(outside, 'f', 'SECRET');
    fs.mkdirSync(root);
    fs.symlinkSync(outside, path.join(root, 'abs'));
    fs.symlinkSync('../outside', path.join(root, 'rel'));
    const warnings: DiffWarning[] = [];
    const got = await readBack(exportChanges(root, [A('/abs/f'), A('/rel/f')], { onWarning: (w) => warnings.push(w) }));
    expect(got).toEqual([]);
    expect(warnings.map((w) => w.path)).toEqual(['/abs/f', '/rel/f']);
  });

  it('round trip: changesDirs → exportChanges → applyLayer onto the parent leaves no changes', async () => {
    const oldRoot = path.join(tmp, 'old');
    const newRoot = path.join(tmp, 'new');
    const applied = path.join(tmp, 'applied');
    await buildBase(oldRoot);
    execFileSync('cp', ['-a', oldRoot, newRoot]);
    execFileSync('cp', ['-a', oldRoot, applied]);
    const n = (rel: string): string => path.join(newRoot, rel);
    fs.writeFileSync(n('etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n');
    write(newRoot, 'etc/newfile', 'new', 0o600);
    fs.chownSync(n('etc/passwd'), 1000, 1001);
    fs.chmodSync(n('bin/tool'), 0o700);
    await b.lsetxattr(n('bin/suid'), 'security.capability', CAP);
    fs.rmSync(n('var/log/old.log'));
    fs.rmSync(n('srv/data'), { recursive: true });
    fs.rmSync(n('opt/x'));
    write(newRoot, 'opt/x/child', 'child');
    fs.rmSync(n('home/u'), { recursive: true });
    write(newRoot, 'home/u', 'now a file');
    write(newRoot, 'newdir/sub/file', 'f');
    fs.linkSync(n('newdir/sub/file'), n('newdir/link'));
    fs.symlinkSync('../etc/passwd', n('newdir/sym'));
    fs.rmSync(n('dev/null'));
    await b.mknod(n('dev/null'), FileType.S_IFCHR | 0o666, makedev(1, 5));
    await b.mknod(n('dev/sda'), FileType.S_IFBLK | 0o660, makedev(8, 0));
    execFileSync('mkfifo', ['-m', '0640', n('newdir/fifo')]);
    fs.chmodSync(n('usr/share'), 0o1777);

    const changes = await changesDirs(newRoot, oldRoot);
    expect(changes.length).toBeGreaterThan(20);
    const warnings: Array<ApplyWarning | DiffWarning> = [];
    const r = await applyLayer(applied, exportChanges(newRoot, changes, { onWarning: (w) => warnings.push(w) }), {
      format: 'naive',
      onWarning: (w) => warnings.push(w),
    });
    expect(warnings).toEqual([]);
    expect(r.entries).toBeGreaterThan(20);
    expect(await changesDirs(newRoot, applied)).toEqual([]);
    expect(await changesDirs(newRoot, applied, { verifyContent: false })).toEqual([]);
    // And the content is really there.
    expect(fs.readFileSync(path.join(applied, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n::1 localhost\n');
    expect(fs.statSync(path.join(applied, 'newdir/link')).ino).toBe(fs.statSync(path.join(applied, 'newdir/sub/file')).ino);
  });

  it('streams a large file in bounded memory, pulled by the consumer', async () => {
    const root = path.join(tmp, 'root');
    fs.mkdirSync(root);
    const size = 48 << 20;
    await b.truncate(path.join(root, 'big'), size, true);
    const s = exportChanges(root, [A('/big')]);
    const first: Buffer = await new Promise((resolve, reject) => {
      s.once('error', reject);
      s.once('readable', () => resolve(s.read() as Buffer));
    });
    expect(first.length).toBeGreaterThan(0);
    // Give the producer every chance to run ahead; it must stop at the stream's high-water mark (+ one chunk).
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
    expect(s.readableLength).toBeLessThanOrEqual(s.readableHighWaterMark + (1 << 20));
    let total = first.length;
    for await (const c of s) total += (c as Buffer).length;
    expect(total).toBe(512 + size + 1024);
  });
});

describeIf(
  !isRoot ? 'needs root (mount, trusted.* xattrs)' : !kernelHasFs('overlay') ? 'kernel has no overlay filesystem' : !haveTool('mkfifo') ? 'mkfifo missing' : null,
  'overlay round trip: upper → exportUpper → applyLayer(overlay)',
  () => {
    let tmp: string;
    let merged: string;
    let mounted = false;
    beforeEach(() => {
      tmp = makeTmp('gd-diff-ovl-');
    });
    afterEach(async () => {
      if (mounted) await b.umount(merged, UmountFlags.MNT_DETACH).catch(() => undefined);
      mounted = false;
      removeTmp(tmp);
    });

    it('reproduces whiteouts, opaque directories and every entry of the upper dir', async () => {
      const [lower, upper, work] = ['lower', 'upper', 'work'].map((d) => path.join(tmp, d)) as [string, string, string];
      merged = path.join(tmp, 'merged');
      await buildBase(lower);
      for (const d of [upper, work, merged]) fs.mkdirSync(d);
      await b.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work},index=off,redirect_dir=off,metacopy=off`);
      mounted = true;
      const m = (rel: string): string => path.join(merged, rel);
      fs.writeFileSync(m('etc/hosts'), 'changed\n');
      fs.rmSync(m('etc/motd')); // whiteout (its hardlink /hard stays)
      fs.rmSync(m('srv/data'), { recursive: true }); // whiteout of a directory
      fs.rmSync(m('home/u'), { recursive: true });
      write(merged, 'home/u/new', 'n', 0o600); // opaque
      fs.rmSync(m('var/log'), { recursive: true });
      fs.mkdirSync(m('var/log'), { mode: 0o750 }); // opaque and empty
      write(merged, 'newdir/a', 'a');
      fs.linkSync(m('newdir/a'), m('newdir/b'));
      fs.symlinkSync('/etc/passwd', m('newdir/sym'));
      execFileSync('mkfifo', ['-m', '0640', m('newdir/fifo')]);
      await b.mknod(m('newdir/tty'), FileType.S_IFCHR | 0o620, makedev(5, 0));
      write(merged, 'newdir/capped', 'cap', 0o755);
      await b.lsetxattr(m('newdir/capped'), 'security.capability', CAP);
      fs.chownSync(m('bin/tool'), 7, 8);
      await b.umount(merged, 0);
      mounted = false;

      // The upper dir holds what Docker's converter sees.
      expect((await b.lgetxattr(path.join(upper, 'home/u'), 'trusted.overlay.opaque'))?.toString()).toBe('y');
      expect(fs.lstatSync(path.join(upper, 'srv/data')).isCharacterDevice()).toBe(true);

      const warnings: Array<ApplyWarning | DiffWarning> = [];
      const diff = await readBack(exportUpper(upper, 'overlay', { onWarning: (w) => warnings.push(w) }));
      const names = diff.map((e) => e.h.name);
      expect(names).toEqual(expect.arrayContaining(['etc/.wh.motd', 'srv/.wh.data', 'home/u/', 'home/u/.wh..wh..opq', 'var/log/', 'var/log/.wh..wh..opq', 'newdir/b']));
      expect(names.indexOf('home/u/.wh..wh..opq')).toBe(names.indexOf('home/u/') + 1);
      expect(diff.find((e) => e.h.name === 'newdir/b')!.h).toMatchObject({ type: 'link', linkname: 'newdir/a' });
      expect(diff.every((e) => e.h.type !== 'char' || e.h.devMajor !== 0 || e.h.devMinor !== 0)).toBe(true);

      const dest = path.join(tmp, 'dest');
      fs.mkdirSync(dest);
      await applyLayer(dest, exportUpper(upper, 'overlay', { onWarning: (w) => warnings.push(w) }), { format: 'overlay', onWarning: (w) => warnings.push(w) });
      expect(warnings).toEqual([]);
      const want = await snapshot(upper, { opaque: true });
      const got = await snapshot(dest, { opaque: true });
      expect([...got.keys()]).toEqual([...want.keys()]);
      for (const [p, rec] of want) expect([p, got.get(p)]).toEqual([p, rec]);
    });
  },
);

describeIf(isRoot ? null : 'needs root (ownership)', 'aufs round trip: branch → exportUpper → applyLayer(aufs)', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = makeTmp('gd-diff-aufs-');
  });
  afterEach(() => removeTmp(tmp));

  it('keeps whiteouts and opaque markers, drops root metadata', async () => {
    const branch = path.join(tmp, 'branch');
    write(branch, '.wh..wh.aufs', '');
    write(branch, '.wh..wh.plnk/123.456', 'stash');
    fs.mkdirSync(path.join(branch, '.wh..wh.orph'));
    write(branch, 'etc/.wh.motd', '', 0o444);
    fs.linkSync(path.join(branch, 'etc/.wh.motd'), path.join(branch, '.wh.gone')); // aufs links whiteouts together
    write(branch, 'home/u/.wh..wh..opq', '', 0o444);
    write(branch, 'home/u/new', 'n');
    write(branch, 'etc/hosts', 'h');
    fs.chownSync(path.join(branch, 'home/u'), 1000, 1000);
    const dest = path.join(tmp, 'dest');
    fs.mkdirSync(dest);
    await applyLayer(dest, exportUpper(branch, 'aufs'), { format: 'aufs' });
    const want = await snapshot(branch);
    for (const meta of ['/.wh..wh.aufs', '/.wh..wh.plnk', '/.wh..wh.plnk/123.456', '/.wh..wh.orph']) want.delete(meta);
    // The hardlinked whiteouts stay linked (the first in walk order after the skipped metadata, /.wh.gone, is the
    // file; /etc/.wh.motd links to it).
    const got = await snapshot(dest);
    expect([...got.keys()]).toEqual([...want.keys()]);
    for (const [p, rec] of want) {
      const { linkedTo: _a, ...w } = rec;
      const { linkedTo: _b, ...g } = got.get(p)!;
      expect([p, g]).toEqual([p, w]);
    }
    expect(fs.statSync(path.join(dest, '.wh.gone')).ino).toBe(fs.statSync(path.join(dest, 'etc/.wh.motd')).ino);
  });
});
