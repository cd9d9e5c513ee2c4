/**
 * aufs on this kernel. The kernel here has no aufs, so the driver runs against a test stand-in for the aufs
 * mount (test/support/aufs-standin.ts) that builds the union the kernel would show and bind-mounts it for
 * real: every code path of the driver except the kernel's own union runs for real (mount data and appends,
 * the mount table, busy unmounts, diff directories, whiteouts, the archive engine). The whole conformance suite
 * runs that way, plus aufs-specific checks. A second part runs the same against the kernel's aufs wherever
 * /proc/filesystems lists it, and otherwise prints why it is skipped; a third checks that without aufs the
 * driver refuses cleanly.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import * as tarStream from 'tar-stream';

import { AufsDriver, type AufsDeps } from '../../lib/drivers/aufs';
import { ChangeKind } from '../../lib/drivers/driver';
import { newDriver } from '../../lib/drivers/registry';
import { MountFlags } from '../../lib/native/constants';
import { runDriverConformance } from '../conformance/driver-conformance';
import { mountsUnder } from '../conformance/fstest';
import { AufsStandIn } from '../support/aufs-standin';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

import '../../lib/drivers';

const standInReason = !isRoot ? 'needs root (the stand-in bind-mounts the union)' : null;
const realReason = !isRoot ? 'needs root' : !kernelHasFs('aufs') ? 'the kernel has no aufs (not listed in /proc/filesystems)' : null;

/** One stand-in for the whole file; its staging directories go at the end. */
const standIn = isRoot ? new AufsStandIn() : null;

afterAll(async () => {
  await standIn?.dispose();
});

/** The driver on the stand-in: aufs "present", everything else real. */
function standInDriver(home: string, deps: AufsDeps = {}): Promise<AufsDriver> {
  return AufsDriver.init(home, [], { bindings: standIn!.bindings, ...deps, probe: { hasAufs: async () => true, auplink: async () => null, ...deps.probe } });
}

/** Names (and contents of files) of a tar stream, in order. */
async function tarEntries(stream: Readable): Promise<Array<{ name: string; type: string; data: string }>> {
  const extract = tarStream.extract();
  const out: Array<{ name: string; type: string; data: string }> = [];
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (h, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (c: unknown) => void chunks.push(c as Buffer));
      body.on('end', () => {
        out.push({ name: h.name, type: h.type ?? 'file', data: Buffer.concat(chunks).toString() });
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  stream.pipe(extract);
  await done;
  return out;
}

/** Whether `p` is a mount point whose propagation is private (no shared:/master: tag in mountinfo). */
function mountPropagation(p: string): string | null {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[4] !== p) continue;
    const sep = f.indexOf('-', 6);
    const tags = f.slice(6, sep).filter((t) => t !== '');
    return tags.length === 0 ? 'private' : tags.join(' ');
  }
  return null;
}

describeIf(standInReason, 'aufs through the test stand-in: layout, deep unions, native whiteouts, busy unmounts', () => {
  let root: string;
  let home: string;
  let d: AufsDriver;
  const sleeps: number[] = [];

  beforeEach(async () => {
    root = makeTmp('gd-aufs-it-');
    home = path.join(root, 'aufs');
    sleeps.length = 0;
    d = await standInDriver(home, {
      sleep: async (ms) => {
        sleeps.push(ms);
        await new Promise((r) => setTimeout(r, ms));
      },
    });
  });

  afterEach(async () => {
    await d.cleanup().catch(() => undefined);
    for (const m of (await mountsUnder(root)).sort((a, b) => b.length - a.length)) await standIn!.bindings.umount(m, 2).catch(() => undefined);
    removeTmp(root);
  });

  it("Docker's layout; the home is a private mount; base layers are not mounted, others are, until the last put", async () => {
    expect(fs.readdirSync(home).sort()).toEqual(['diff', 'layers', 'mnt']);
    expect(mountPropagation(home)).toBe('private');
    await d.create('base', null);
    await d.create('mid', 'base');
    await d.createReadWrite('top', 'mid');
    expect(fs.readFileSync(path.join(home, 'layers', 'top'), 'utf8')).toBe('mid\nbase\n');
    expect(await d.get('base')).toBe(path.join(home, 'diff', 'base'));
    fs.writeFileSync(path.join(home, 'diff', 'base', 'f'), 'from base');
    const mnt = await d.get('top');
    expect(mnt).toBe(path.join(home, 'mnt', 'top'));
    expect(await mountsUnder(home)).toEqual([home, mnt]);
    expect(fs.readFileSync(path.join(mnt, 'f'), 'utf8')).toBe('from base');
    fs.writeFileSync(path.join(mnt, 'g'), 'from top');
    expect(await d.get('top')).toBe(mnt);
    await d.put('top');
    expect(await mountsUnder(home)).toEqual([home, mnt]);
    await d.put('top');
    await d.put('base');
    expect(await mountsUnder(home)).toEqual([home]);
    // written back into the layer's own diff directory, next to the metadata aufs keeps at a branch root
    expect(fs.readFileSync(path.join(home, 'diff', 'top', 'g'), 'utf8')).toBe('from top');
    expect(fs.readdirSync(path.join(home, 'diff', 'top')).sort()).toEqual(['.wh..wh.aufs', '.wh..wh.orph', '.wh..wh.plnk', 'g']);
    expect(await d.status()).toEqual([
      ['Root Dir', home],
      ['Backing Filesystem', expect.any(String)],
      ['Dirs', '3'],
      ['Dirperm1 Supported', 'true'],
    ]);
    await d.cleanup();
    expect(await mountsUnder(home)).toEqual([]);
  });

  it('200 layers with Docker-length ids: one mount and MS_REMOUNT appends, each under a page; every layer shows through', async () => {
    const ids = Array.from({ length: 200 }, () => randomBytes(32).toString('hex'));
    for (const [i, id] of ids.entries()) {
      await d.create(id, i === 0 ? null : ids[i - 1]);
      // The layers' own files, written where applyDiff writes them.
      const diff = d.diffDir(id);
      fs.writeFileSync(path.join(diff, `f-${i}`), `layer ${i}`);
      if (i === 150) fs.writeFileSync(path.join(diff, 'f-7'), 'replaced in 150');
      if (i === 120) fs.writeFileSync(path.join(diff, '.wh.f-50'), '');
    }
    const top = ids[199]!;
    const mnt = await d.get(top);
    const calls = standIn!.calls.filter((c) => c.target === mnt);
    expect(calls[0]!.flags).toBe(0);
    expect(calls.length).toBeGreaterThan(4);
    for (const c of calls.slice(1)) expect(c.flags).toBe(MountFlags.MS_REMOUNT);
    for (const c of calls) expect(Buffer.byteLength(c.data!)).toBeLessThanOrEqual(4095);
    // every ancestor exactly once, nearest first
    const named = calls.map((c) => c.data!).join(',').match(/[0-9a-f]{64}(?==r[ow])/g);
    expect(named).toEqual([...ids].reverse());
    const names = fs.readdirSync(mnt).sort();
    expect(names).toHaveLength(199);
    expect(names).not.toContain('f-50');
    for (let i = 0; i < 200; i++) {
      if (i === 50) continue;
      expect(fs.readFileSync(path.join(mnt, `f-${i}`), 'utf8')).toBe(i === 7 ? 'replaced in 150' : `layer ${i}`);
    }
    await d.put(top);
    expect(await mountsUnder(home)).toEqual([home]);
  });

  it('whiteouts stay aufs files: applyDiff keeps them, the union honours them, diff exports them without aufs metadata', async () => {
    await d.create('base', null);
    await d.applyDiff(
      'base',
      null,
      Readable.from([
        buildTar([
          { name: 'dir/', type: 'dir' },
          { name: 'dir/x', data: 'x' },
          { name: 'dir/y', data: 'y' },
          { name: 'keep', data: 'keep' },
          { name: 'etc/', type: 'dir' },
          { name: 'etc/hosts', data: 'hosts' },
        ]),
      ]),
    );
    await d.create('child', 'base');
    const tar = buildTar([
      { name: '.wh.keep' },
      { name: 'dir/', type: 'dir', mtimeSec: 1700000001 },
      { name: 'dir/.wh..wh..opq' },
      { name: 'dir/z', data: 'zzz' },
      { name: 'etc/', type: 'dir' },
      { name: 'etc/hosts', data: 'new hosts' },
    ]);
    const applied = await d.applyDiff('child', 'base', Readable.from([tar]));
    expect(applied).toBe(3 + 9);
    const diff = d.diffDir('child');
    expect(fs.existsSync(path.join(diff, '.wh.keep'))).toBe(true);
    expect(fs.existsSync(path.join(diff, 'dir', '.wh..wh..opq'))).toBe(true);

    const mnt = await d.get('child');
    expect(fs.readdirSync(mnt).sort()).toEqual(['dir', 'etc']);
    expect(fs.readdirSync(path.join(mnt, 'dir'))).toEqual(['z']);
    expect(fs.readFileSync(path.join(mnt, 'etc', 'hosts'), 'utf8')).toBe('new hosts');
    await d.put('child');
    // the union wrote aufs's metadata into the branch root: it is not part of the layer
    expect(fs.existsSync(path.join(diff, '.wh..wh.aufs'))).toBe(true);

    const entries = await tarEntries(await d.diff('child', 'base'));
    expect(entries.map((e) => e.name)).toEqual(['.wh.keep', 'dir/', 'dir/.wh..wh..opq', 'dir/z', 'etc/', 'etc/hosts']);
    expect(await d.changes('child', 'base')).toEqual([
      { path: '/dir', kind: ChangeKind.Modify },
      { path: '/dir/x', kind: ChangeKind.Delete },
      { path: '/dir/y', kind: ChangeKind.Delete },
      { path: '/dir/z', kind: ChangeKind.Add },
      { path: '/etc/hosts', kind: ChangeKind.Modify },
      { path: '/keep', kind: ChangeKind.Delete },
    ]);
    expect(await d.diffSize('child', 'base')).toBe(12);

    // committed as a sibling layer, the diff reproduces the same tree
    await d.create('copy', 'base');
    await d.applyDiff('copy', 'base', await d.diff('child', 'base'));
    const a = await d.get('copy');
    expect(fs.readdirSync(path.join(a, 'dir'))).toEqual(['z']);
    expect(fs.existsSync(path.join(a, 'keep'))).toBe(false);
    await d.put('copy');
  });

  it('changes made through the union are written as aufs would: deletions of lower files become .wh. files', async () => {
    await d.create('base', null);
    const b0 = await d.get('base');
    fs.mkdirSync(path.join(b0, 'etc'));
    fs.writeFileSync(path.join(b0, 'etc', 'a'), 'a');
    fs.writeFileSync(path.join(b0, 'etc', 'b'), 'b');
    await d.put('base');
    await d.createReadWrite('c', 'base');
    const mnt = await d.get('c');
    fs.rmSync(path.join(mnt, 'etc', 'a'));
    fs.writeFileSync(path.join(mnt, 'etc', 'new'), 'new');
    await d.put('c');
    expect(fs.readdirSync(path.join(d.diffDir('c'), 'etc')).sort()).toEqual(['.wh.a', 'new']);
    expect(await d.changes('c', 'base')).toEqual([
      { path: '/etc', kind: ChangeKind.Modify },
      { path: '/etc/a', kind: ChangeKind.Delete },
      { path: '/etc/new', kind: ChangeKind.Add },
    ]);
    // against no parent, a layer with a parent compares the mounted trees (Docker's naive fallback)
    expect(await d.changes('c', null)).toEqual([
      { path: '/etc', kind: ChangeKind.Add },
      { path: '/etc/b', kind: ChangeKind.Add },
      { path: '/etc/new', kind: ChangeKind.Add },
    ]);
  });

  it('EBUSY for real: a file open in the union keeps it mounted through 5 attempts 100 ms apart; a later put unmounts', async () => {
    await d.create('base', null);
    await d.createReadWrite('c', 'base');
    const mnt = await d.get('c');
    fs.writeFileSync(path.join(mnt, 'open'), 'held');
    const fd = fs.openSync(path.join(mnt, 'open'), 'r');
    try {
      const e = await d.put('c').then(
        () => null,
        (x: { code?: string }) => x,
      );
      expect(e?.code).toBe('EBUSY');
      expect(sleeps).toEqual([100, 100, 100, 100]);
      expect(await mountsUnder(home)).toEqual([home, mnt]);
    } finally {
      fs.closeSync(fd);
    }
    // the failed put kept its reference: remove refuses, a later put retries and unmounts
    expect((await d.remove('c').catch((x: { code?: string }) => x)) as { code?: string }).toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    await d.put('c');
    expect(await mountsUnder(home)).toEqual([home]);
    expect(fs.readFileSync(path.join(d.diffDir('c'), 'open'), 'utf8')).toBe('held');
  });

  it('bad input: a layers file naming a missing parent, a missing diff dir: clear errors, nothing mounted or removed', async () => {
    await d.create('a', null);
    await d.create('b', 'a');
    await d.create('c', 'b');
    fs.writeFileSync(path.join(home, 'layers', 'c'), 'b\nghost\n');
    fs.rmdirSync(path.join(home, 'diff', 'b'));
    const d2 = await standInDriver(home);
    try {
      const before = fs.readdirSync(path.join(home, 'diff')).sort();
      const eb = await d2.get('b').then(
        () => null,
        (x: Error & { code?: string }) => x,
      );
      expect(eb?.code).toBe('ERR_LAYER_CORRUPT');
      expect(eb?.message).toContain('diff directory');
      const ec = await d2.get('c').then(
        () => null,
        (x: Error & { code?: string }) => x,
      );
      expect(ec?.code).toBe('ERR_LAYER_CORRUPT');
      expect(await mountsUnder(home)).toEqual([home]);
      expect(fs.readdirSync(path.join(home, 'diff')).sort()).toEqual(before);
      expect(fs.readdirSync(path.join(home, 'layers')).sort()).toEqual(['a', 'b', 'c']);
    } finally {
      await d2.cleanup();
    }
  });
});

describeIf(kernelHasFs('aufs') ? 'the kernel has aufs' : null, 'aufs where the kernel has none', () => {
  it('newDriver({ name: "aufs" }) is NotSupportedError and leaves nothing behind', async () => {
    const root = makeTmp('gd-aufs-none-');
    try {
      const e = await newDriver({ name: 'aufs', root }).then(
        () => null,
        (x: Error & { code?: string }) => x,
      );
      expect(e?.code).toBe('ERR_DRIVER_NOT_SUPPORTED');
      expect(e?.message).toContain('aufs');
      expect(fs.readdirSync(root)).toEqual([]);
    } finally {
      removeTmp(root);
    }
  });
});

runDriverConformance('aufs', (home) => standInDriver(home), { deepChain: 128, skip: standInReason, label: 'test stand-in for the aufs mount' });

describeIf(realReason, 'aufs on the real kernel', () => {
  let root: string;
  let d: AufsDriver;

  beforeEach(async () => {
    root = makeTmp('gd-aufs-real-');
    d = await AufsDriver.init(path.join(root, 'aufs'));
  });

  afterEach(async () => {
    await d.cleanup().catch(() => undefined);
    removeTmp(root);
  });

  it('the kernel union: an aufs mount on mnt/<id>; a deletion through it is a .wh. file in the diff directory', async () => {
    await d.create('base', null);
    fs.writeFileSync(path.join(d.diffDir('base'), 'gone'), 'x');
    fs.writeFileSync(path.join(d.diffDir('base'), 'kept'), 'y');
    await d.createReadWrite('c', 'base');
    const mnt = await d.get('c');
    const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mnt);
    expect(line).toContain(' - aufs ');
    fs.rmSync(path.join(mnt, 'gone'));
    await d.put('c');
    expect(fs.existsSync(path.join(d.diffDir('c'), '.wh.gone'))).toBe(true);
    expect(await d.changes('c', 'base')).toEqual([{ path: '/gone', kind: ChangeKind.Delete }]);
    expect((await tarEntries(await d.diff('c', 'base'))).map((e) => e.name)).toEqual(['.wh.gone']);
  });

  it('127 branches mount (126 ancestors), appended beyond the first page', async () => {
    let parent: string | null = null;
    const ids: string[] = [];
    for (let i = 0; i < 127; i++) {
      const id = randomBytes(32).toString('hex');
      await d.create(id, parent);
      fs.writeFileSync(path.join(d.diffDir(id), `f-${i}`), String(i));
      ids.push(id);
      parent = id;
    }
    const mnt = await d.get(ids[126]!);
    expect(fs.readdirSync(mnt).filter((n) => n.startsWith('f-'))).toHaveLength(127);
    await d.put(ids[126]!);
  });
});

runDriverConformance('aufs', (home) => AufsDriver.init(home), { deepChain: 126, skip: realReason, label: 'real kernel' });
