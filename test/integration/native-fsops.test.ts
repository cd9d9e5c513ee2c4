/**
 * Filesystem helpers against the real kernel: mknod (overlay whiteouts, fifos, device nodes), renameat2 with
 * NOREPLACE / EXCHANGE / WHITEOUT, syncfs, and the shape of their errors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FileType, RenameFlags, makedev } from '../../lib/native/constants';
import type { NativeBindings, NativeError } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';

describeIf(isRoot ? null : 'needs root', 'native filesystem helpers', () => {
  let b: NativeBindings;
  let base = '';

  beforeAll(() => {
    b = loadBindings();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-fsops-'));
  });
  afterAll(() => {
    if (base) fs.rmSync(base, { recursive: true, force: true });
  });

  async function rejection(p: Promise<unknown>): Promise<NativeError> {
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    );
    // Not `instanceof Error`: native errors come from node's realm, jest runs tests in another one.
    if (typeof e !== 'object' || e === null) throw new Error('expected the call to reject');
    return e as NativeError;
  }

  describe('mknod', () => {
    it('creates an overlay whiteout (char device 0:0)', async () => {
      const p = path.join(base, 'whiteout');
      await b.mknod(p, FileType.S_IFCHR, 0);
      const st = fs.lstatSync(p);
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe(0);
    });

    it('creates a fifo with the requested permissions', async () => {
      const p = path.join(base, 'fifo');
      const old = process.umask(0);
      try {
        await b.mknod(p, FileType.S_IFIFO | 0o640, 0);
      } finally {
        process.umask(old);
      }
      const st = fs.lstatSync(p);
      expect(st.isFIFO()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o640);
    });

    it('creates a device node with the given dev_t', async () => {
      const p = path.join(base, 'null');
      const dev = makedev(1, 3);
      await b.mknod(p, FileType.S_IFCHR | 0o600, dev);
      const st = fs.lstatSync(p);
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe(dev);
    });

    it('creates a block device with a large minor number', async () => {
      const p = path.join(base, 'blk');
      const dev = makedev(259, 70000);
      await b.mknod(p, FileType.S_IFBLK | 0o600, dev);
      expect(fs.lstatSync(p).rdev).toBe(dev);
    });

    it('fails with EEXIST and a Node-style error', async () => {
      const p = path.join(base, 'whiteout');
      const e = await rejection(b.mknod(p, FileType.S_IFCHR, 0));
      expect(e).toMatchObject({ code: 'EEXIST', errno: -os.constants.errno.EEXIST, syscall: 'mknod', path: p });
      expect(e.message).toContain(p);
    });

    it('fails with ENOENT under a missing directory', async () => {
      const p = path.join(base, 'missing', 'x');
      await expect(b.mknod(p, FileType.S_IFIFO | 0o600, 0)).rejects.toMatchObject({ code: 'ENOENT', path: p });
    });
  });

  describe('renameat2', () => {
    let dir = '';
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(base, 'rename-'));
      fs.writeFileSync(path.join(dir, 'a'), 'A');
      fs.writeFileSync(path.join(dir, 'b'), 'B');
    });

    it('renames with flags 0, replacing the destination', async () => {
      await b.renameat2(path.join(dir, 'a'), path.join(dir, 'b'), 0);
      expect(fs.readdirSync(dir)).toEqual(['b']);
      expect(fs.readFileSync(path.join(dir, 'b'), 'utf8')).toBe('A');
    });

    it('RENAME_NOREPLACE fails with EEXIST naming both paths and changes nothing', async () => {
      const a = path.join(dir, 'a');
      const bb = path.join(dir, 'b');
      const e = await rejection(b.renameat2(a, bb, RenameFlags.RENAME_NOREPLACE));
      expect(e).toMatchObject({ code: 'EEXIST', errno: -os.constants.errno.EEXIST, syscall: 'renameat2', path: a, dest: bb });
      expect(e.message).toContain(`'${a}' -> '${bb}'`);
      expect(fs.readFileSync(a, 'utf8')).toBe('A');
      expect(fs.readFileSync(bb, 'utf8')).toBe('B');
    });

    it('RENAME_NOREPLACE succeeds when the destination is free', async () => {
      await b.renameat2(path.join(dir, 'a'), path.join(dir, 'c'), RenameFlags.RENAME_NOREPLACE);
      expect(fs.readdirSync(dir).sort()).toEqual(['b', 'c']);
    });

    it('RENAME_EXCHANGE swaps a file and a directory atomically', async () => {
      fs.mkdirSync(path.join(dir, 'd'));
      fs.writeFileSync(path.join(dir, 'd', 'inner'), 'I');
      await b.renameat2(path.join(dir, 'a'), path.join(dir, 'd'), RenameFlags.RENAME_EXCHANGE);
      expect(fs.readFileSync(path.join(dir, 'd'), 'utf8')).toBe('A');
      expect(fs.readFileSync(path.join(dir, 'a', 'inner'), 'utf8')).toBe('I');
    });

    it('RENAME_EXCHANGE fails with ENOENT when the destination is missing', async () => {
      await expect(
        b.renameat2(path.join(dir, 'a'), path.join(dir, 'zz'), RenameFlags.RENAME_EXCHANGE),
      ).rejects.toMatchObject({ code: 'ENOENT', syscall: 'renameat2' });
      expect(fs.readFileSync(path.join(dir, 'a'), 'utf8')).toBe('A');
    });

    it('RENAME_WHITEOUT leaves a whiteout at the source', async () => {
      await b.renameat2(path.join(dir, 'a'), path.join(dir, 'moved'), RenameFlags.RENAME_WHITEOUT);
      const st = fs.lstatSync(path.join(dir, 'a'));
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe(0);
      expect(fs.readFileSync(path.join(dir, 'moved'), 'utf8')).toBe('A');
    });

    it('rejects contradictory flags with EINVAL', async () => {
      await expect(
        b.renameat2(path.join(dir, 'a'), path.join(dir, 'b'), RenameFlags.RENAME_NOREPLACE | RenameFlags.RENAME_EXCHANGE),
      ).rejects.toMatchObject({ code: 'EINVAL' });
    });
  });

  describe('syncfs', () => {
    it('syncs the filesystem of a directory and of a file', async () => {
      const f = path.join(base, 'sync-file');
      fs.writeFileSync(f, 'data');
      await expect(b.syncfs(base)).resolves.toBeUndefined();
      await expect(b.syncfs(f)).resolves.toBeUndefined();
    });

    it('does not block on a fifo', async () => {
      const p = path.join(base, 'sync-fifo');
      await b.mknod(p, FileType.S_IFIFO | 0o600, 0);
      await expect(b.syncfs(p)).resolves.toBeUndefined();
    });

    it('fails with ENOENT for a missing path', async () => {
      const p = path.join(base, 'nope');
      await expect(b.syncfs(p)).rejects.toMatchObject({ code: 'ENOENT', errno: -os.constants.errno.ENOENT, syscall: 'open', path: p });
    });
  });

  it('argument errors are TypeErrors before native code', async () => {
    await expect(b.mknod('', FileType.S_IFCHR, 0)).rejects.toThrow(TypeError);
    await expect(b.renameat2('/a', '/b', -1)).rejects.toThrow();
    await expect(b.syncfs(42 as unknown as string)).rejects.toThrow(TypeError);
  });
});
