import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';

import { compress as zstdCompress } from 'zstd-napi';

import { applyLayer, type ApplyWarning, type WhiteoutFormat } from '../../lib/archive/apply';
import { InvalidArchiveError } from '../../lib/errors';
import { loadBindings } from '../../lib/native/bindings';
import { buildTar, chunked, once, type TestEntry } from '../support/tar-builder';
import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

const b = loadBindings();
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

async function apply(root: string, entries: TestEntry[] | Buffer, format: WhiteoutFormat = 'naive', extra = {}) {
  const tar = Buffer.isBuffer(entries) ? entries : buildTar(entries);
  const warnings: ApplyWarning[] = [];
  const r = await applyLayer(root, chunked(tar, 4096), { format, onWarning: (w) => warnings.push(w), ...extra });
  return { ...r, warnings, tar };
}

function lst(p: string): fs.BigIntStats {
  return fs.lstatSync(p, { bigint: true });
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs)', 'applyLayer (real filesystem)', () => {
  let tmp: string;
  let root: string;
  beforeEach(() => {
    tmp = makeTmp('gd-apply-');
    root = path.join(tmp, 'root');
    fs.mkdirSync(root);
  });
  afterEach(() => removeTmp(tmp));

  it('creates every entry type with owners, modes, times and xattrs, and reports size and diffID', async () => {
    const r = await apply(root, [
      { name: 'etc/', type: 'dir', mode: 0o755, mtimeSec: 1600000000 },
      { name: 'etc/hosts', data: '127.0.0.1 localhost\n', uid: 1, gid: 2, mode: 0o640, mtimeSec: 1600000001 },
      { name: 'bin/', type: 'dir', mode: 0o1705, uid: 1, gid: 2 },
      { name: 'bin/ping', data: 'ELF', mode: 0o4755, xattrs: { 'security.capability': CAP, 'trusted.x': Buffer.from('y') } },
      { name: 'bin/sg', data: 'x', mode: 0o2711, gid: 5 },
      { name: 'lnk', type: 'symlink', linkname: '/etc/hosts', uid: 3, gid: 4 },
      { name: 'hard', type: 'link', linkname: 'etc/hosts' },
      { name: 'dev/', type: 'dir' },
      { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
      { name: 'dev/loop0', type: 'block', devMajor: 7, devMinor: 0, mode: 0o660 },
      { name: 'fifo', type: 'fifo', mode: 0o600 },
    ]);
    expect(r.entries).toBe(11);
    expect(r.size).toBe(20 + 3 + 1);
    expect(r.diffId).toBe('sha256:' + createHash('sha256').update(r.tar).digest('hex'));

    const hosts = lst(path.join(root, 'etc/hosts'));
    expect([hosts.uid, hosts.gid, hosts.mode & 0o7777n, hosts.mtimeMs]).toEqual([1n, 2n, 0o640n, 1600000001000n]);
    expect(fs.readFileSync(path.join(root, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n');
    expect(lst(path.join(root, 'etc')).mtimeMs).toBe(1600000000000n);
    const bin = lst(path.join(root, 'bin'));
    expect([bin.mode & 0o7777n, bin.uid, bin.gid]).toEqual([0o1705n, 1n, 2n]);
    expect(lst(path.join(root, 'bin/ping')).mode & 0o7777n).toBe(0o4755n);
    expect(lst(path.join(root, 'bin/sg')).mode & 0o7777n).toBe(0o2711n);
    expect(await b.lgetxattr(path.join(root, 'bin/ping'), 'security.capability')).toEqual(CAP);
    expect(await b.lgetxattr(path.join(root, 'bin/ping'), 'trusted.x')).toEqual(Buffer.from('y'));
    expect(fs.readlinkSync(path.join(root, 'lnk'))).toBe('/etc/hosts');
    expect([lst(path.join(root, 'lnk')).uid, lst(path.join(root, 'lnk')).gid]).toEqual([3n, 4n]);
    expect(lst(path.join(root, 'hard')).ino).toBe(hosts.ino);
    const dn = lst(path.join(root, 'dev/null'));
    expect(dn.isCharacterDevice()).toBe(true);
    expect(dn.rdev).toBe(BigInt(1 * 256 + 3));
    expect(lst(path.join(root, 'dev/loop0')).isBlockDevice()).toBe(true);
    expect(lst(path.join(root, 'fifo')).isFIFO()).toBe(true);
  });

  it('accepts gzip and zstd input and hashes the uncompressed stream', async () => {
    const tar = buildTar([{ name: 'a', data: 'hello' }]);
    const want = 'sha256:' + createHash('sha256').update(tar).digest('hex');
    for (const [i, input] of [gzipSync(tar), zstdCompress(tar)].entries()) {
      const dir = path.join(tmp, `c${i}`);
      fs.mkdirSync(dir);
      const r = await applyLayer(dir, once(input));
      expect(r.diffId).toBe(want);
      expect(fs.readFileSync(path.join(dir, 'a'), 'utf8')).toBe('hello');
    }
  });

  it('creates missing parent directories 0755 and replaces existing paths unless both are directories', async () => {
    fs.mkdirSync(path.join(root, 'keep'));
    fs.writeFileSync(path.join(root, 'keep/old'), 'old');
    fs.mkdirSync(path.join(root, 'wasdir/sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'wasfile'), 'f');
    await apply(root, [
      { name: 'deep/er/file', data: 'x' },
      { name: 'keep/', type: 'dir', mode: 0o700 },
      { name: 'wasdir', data: 'now a file' },
      { name: 'wasfile/', type: 'dir' },
      { name: 'wasfile/child', data: 'c' },
    ]);
    expect(lst(path.join(root, 'deep')).mode & 0o7777n).toBe(0o755n);
    expect(fs.readFileSync(path.join(root, 'keep/old'), 'utf8')).toBe('old');
    expect(lst(path.join(root, 'keep')).mode & 0o7777n).toBe(0o700n);
    expect(fs.readFileSync(path.join(root, 'wasdir'), 'utf8')).toBe('now a file');
    expect(fs.readFileSync(path.join(root, 'wasfile/child'), 'utf8')).toBe('c');
  });

  it('naive format: .wh.X removes X recursively, opaque dirs lose what this layer did not write', async () => {
    fs.mkdirSync(path.join(root, 'gone/sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'gone/sub/f'), '1');
    fs.writeFileSync(path.join(root, 'file'), '1');
    fs.mkdirSync(path.join(root, 'opq/old'), { recursive: true });
    fs.writeFileSync(path.join(root, 'opq/old.txt'), '1');
    await apply(root, [
      { name: '.wh.gone', data: '' },
      { name: '.wh.file', data: '' },
      { name: 'opq/', type: 'dir' },
      { name: 'opq/new.txt', data: 'n' },
      { name: 'opq/.wh..wh..opq', data: '' },
      { name: '.wh.never-existed', data: '' },
    ]);
    expect(fs.existsSync(path.join(root, 'gone'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'file'))).toBe(false);
    expect(fs.readdirSync(path.join(root, 'opq'))).toEqual(['new.txt']);
  });

  it('naive format: four layers of cumulative whiteouts', async () => {
    await apply(root, [{ name: 'a/', type: 'dir' }, { name: 'a/1', data: '1' }, { name: 'a/2', data: '2' }, { name: 'b', data: 'b' }]);
    await apply(root, [{ name: 'a/.wh.1', data: '' }, { name: 'c', data: 'c' }]);
    await apply(root, [{ name: 'a/1', data: 'again' }, { name: '.wh.b', data: '' }, { name: '.wh.c', data: '' }]);
    await apply(root, [{ name: 'a/.wh..wh..opq', data: '' }, { name: 'b', data: 'b2' }]);
    expect(fs.readdirSync(root).sort()).toEqual(['a', 'b']);
    expect(fs.readdirSync(path.join(root, 'a'))).toEqual([]);
    expect(fs.readFileSync(path.join(root, 'b'), 'utf8')).toBe('b2');
  });

  it('overlay format: whiteouts become char 0/0 devices and opaque dirs get trusted.overlay.opaque=y', async () => {
    await apply(
      root,
      [
        { name: 'd/', type: 'dir' },
        { name: 'd/.wh..wh..opq', data: '' },
        { name: 'd/f', data: 'x' },
        { name: 'e/.wh.gone', data: '' },
        { name: 'evil', data: 'x', xattrs: { 'trusted.overlay.redirect': Buffer.from('/etc') } },
      ],
      'overlay',
    );
    const wh = lst(path.join(root, 'e/gone'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0n);
    expect(await b.lgetxattr(path.join(root, 'd'), 'trusted.overlay.opaque')).toEqual(Buffer.from('y'));
    expect(fs.existsSync(path.join(root, 'd/.wh..wh..opq'))).toBe(false);
    expect(await b.lgetxattr(path.join(root, 'evil'), 'trusted.overlay.redirect')).toBeNull();
  });

  it('aufs format: whiteout files are kept, root .wh..wh.* metadata is skipped', async () => {
    await apply(
      root,
      [
        { name: '.wh..wh.aufs', data: '' },
        { name: '.wh..wh.plnk/', type: 'dir' },
        { name: 'd/', type: 'dir' },
        { name: 'd/.wh..wh..opq', data: '' },
        { name: '.wh.gone', data: '' },
      ],
      'aufs',
    );
    expect(fs.readdirSync(root).sort()).toEqual(['.wh.gone', 'd']);
    expect(fs.existsSync(path.join(root, 'd/.wh..wh..opq'))).toBe(true);
  });

  it('resolves hardlinks to aufs .wh..wh.plnk targets and removes the stash', async () => {
    await apply(root, [
      { name: '.wh..wh.plnk/', type: 'dir' },
      { name: '.wh..wh.plnk/1234.5678', data: 'linked', mode: 0o600 },
      { name: 'x/', type: 'dir' },
      { name: 'x/a', type: 'link', linkname: '.wh..wh.plnk/1234.5678' },
      { name: 'x/b', type: 'link', linkname: '.wh..wh.plnk/1234.5678' },
    ]);
    expect(fs.readFileSync(path.join(root, 'x/a'), 'utf8')).toBe('linked');
    expect(lst(path.join(root, 'x/a')).ino).toBe(lst(path.join(root, 'x/b')).ino);
    expect(fs.readdirSync(root)).toEqual(['x']);
  });

  it('streams large files and keeps long zero runs sparse', async () => {
    const size = 8 << 20;
    const data = Buffer.alloc(size);
    data.write('head', 0);
    data.write('tail', size - 4);
    const r = await apply(root, [{ name: 'big', data, mode: 0o600, uid: 7, gid: 8 }]);
    expect(r.size).toBe(size);
    const st = lst(path.join(root, 'big'));
    expect(st.size).toBe(BigInt(size));
    expect(Number(st.blocks) * 512).toBeLessThan(size / 4);
    expect([st.uid, st.gid, st.mode & 0o7777n]).toEqual([7n, 8n, 0o600n]);
    const back = fs.readFileSync(path.join(root, 'big'));
    expect(back.equals(data)).toBe(true);
  });

  it('sets directory times after all children are written', async () => {
    await apply(root, [
      { name: 'd/', type: 'dir', mtimeSec: 1000 },
      { name: 'd/a', data: 'a' },
      { name: 'd/b/', type: 'dir', mtimeSec: 2000 },
      { name: 'd/b/c', data: 'c' },
    ]);
    expect(lst(path.join(root, 'd')).mtimeMs).toBe(1000000n);
    expect(lst(path.join(root, 'd/b')).mtimeMs).toBe(2000000n);
  });

  describe('hostile archives never touch anything outside the root', () => {
    let victim: string;
    beforeEach(() => {
      victim = path.join(tmp, 'victim');
      fs.mkdirSync(victim);
      fs.writeFileSync(path.join(victim, 'secret'), 'secret');
    });
    const victimIntact = (): void => {
      expect(fs.readdirSync(victim)).toEqual(['secret']);
      expect(fs.readFileSync(path.join(victim, 'secret'), 'utf8')).toBe('secret');
      expect(lst(path.join(victim, 'secret')).nlink).toBe(1n);
    };

    it.each<[string, TestEntry[]]>([
      ['.. in a name', [{ name: '../victim/pwned', data: 'x' }]],
      ['.. after a folded prefix', [{ name: 'a/../../victim/pwned', data: 'x' }]],
      ['hardlink to a file outside', [{ name: 'h', type: 'link', linkname: '../victim/secret' }]],
      ['whiteout naming ..', [{ name: '.wh...', data: '' }]],
    ])('%s is refused with ERR_INVALID_ARCHIVE', async (_n, entries) => {
      await expect(apply(root, entries)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
      victimIntact();
    });

    it.each<[string, TestEntry[]]>([
      ['write through a relative symlinked parent', [{ name: 'evil', type: 'symlink', linkname: '../victim' }, { name: 'evil/pwned', data: 'x' }]],
      ['write through an absolute symlinked parent', [{ name: 'evil', type: 'symlink', linkname: '/' }, { name: 'evil/pwned', data: 'x' }]],
      ['symlink chain', [{ name: 'l1', type: 'symlink', linkname: 'l2' }, { name: 'l2', type: 'symlink', linkname: '../../..@VICTIM@' }, { name: 'l1/pwned', data: 'x' }]],
      ['whiteout through a symlinked parent', [{ name: 'evil', type: 'symlink', linkname: '@VICTIM@' }, { name: 'evil/.wh.secret', data: '' }]],
      ['hardlink through a symlinked dir', [{ name: 'evil', type: 'symlink', linkname: '@VICTIM@' }, { name: 'h', type: 'link', linkname: 'evil/secret' }]],
      ['absolute name', [{ name: '@VICTIM@/pwned', data: 'x' }]],
      ['opaque marker in a symlinked dir', [{ name: 'evil', type: 'symlink', linkname: '@VICTIM@' }, { name: 'evil/.wh..wh..opq', data: '' }]],
    ])('%s stays inside the root (applied there or refused)', async (_n, entries) => {
      const real = entries.map((e) => ({
        ...e,
        name: e.name.replace('@VICTIM@', victim),
        ...(e.linkname ? { linkname: e.linkname.replace('@VICTIM@', victim) } : {}),
      }));
      await apply(root, real).catch((e: unknown) => {
        expect(e).toBeInstanceOf(InvalidArchiveError);
      });
      victimIntact();
    });
  });
});
