/**
 * readFiles on the real kernel: contents land in aligned, zero-padded slots; shorter and longer files; paths that
 * are missing, not regular files (directory, fifo — which must not block —, device), a final symlink (never
 * followed), symlinked parents (resolved inside the root, never outside); argument limits.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import type { NativeBindings } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

describeIf(isRoot ? null : 'needs root (device nodes)', 'native readFiles', () => {
  let b: NativeBindings;
  let tmp = '';
  let root = '';
  let fd = -1;

  beforeAll(() => {
    b = loadBindings();
    tmp = makeTmp('gd-readfiles-');
    root = path.join(tmp, 'root');
    const p = (x: string): string => path.join(root, x);
    fs.mkdirSync(p('dir/sub'), { recursive: true });
    fs.writeFileSync(p('dir/a'), 'hello');
    fs.writeFileSync(p('dir/b'), Buffer.alloc(700, 0x62));
    fs.writeFileSync(p('dir/empty'), '');
    fs.writeFileSync(path.join(tmp, 'secret'), 'SECRET');
    fs.symlinkSync('a', p('dir/sym'));
    fs.symlinkSync(tmp, p('out')); // absolute, out of the root: resolved inside it (no /…/secret there)
    fs.symlinkSync('/dir', p('in')); // absolute, to a directory inside the root
    execFileSync('mkfifo', [p('dir/fifo')]);
    execFileSync('mknod', [p('dir/null'), 'c', '1', '3']);
    fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  });

  afterAll(() => {
    if (fd >= 0) fs.closeSync(fd);
    removeTmp(tmp);
  });

  it('reads files into aligned slots, zero-padded, up to the size asked for', async () => {
    const r = await b.readFiles(fd, ['dir/a', 'dir/b', 'dir/empty', 'dir/a', '/dir/b'], [5, 700, 0, 3, 800], { align: 512 });
    expect(r.read).toEqual([5, 700, 0, 3, 700]);
    expect(r.data.length).toBe(512 + 1024 + 0 + 512 + 1024);
    const expected = Buffer.alloc(r.data.length);
    expected.write('hello', 0);
    expected.fill(0x62, 512, 512 + 700);
    expected.write('hel', 1536);
    expected.fill(0x62, 2048, 2048 + 700); // the file is shorter than asked: the rest of its slot stays zero
    expect(r.data.equals(expected)).toBe(true);
  });

  it('packs slots back to back without align, and answers an empty list', async () => {
    const r = await b.readFiles(fd, ['dir/a', 'dir/a'], [5, 2]);
    expect(r.data.toString()).toBe('hellohe');
    const none = await b.readFiles(fd, [], []);
    expect([none.data.length, none.read]).toEqual([0, []]);
  });

  it('reports -1 for what is not a regular file (without blocking on a fifo) and never follows a final symlink', async () => {
    const r = await b.readFiles(fd, ['dir/sub', 'dir/fifo', 'dir/null', 'dir/sym', 'dir/a'], [4, 4, 4, 4, 5]);
    expect(r.read.slice(0, 3)).toEqual([-1, -1, -1]);
    expect(r.read[3]).toMatchObject({ code: 'ELOOP', path: 'dir/sym' });
    expect(typeof (r.read[3] as Error).message).toBe('string'); // an Error (of the addon's realm)
    expect(r.read[4]).toBe(5);
    expect(r.data.subarray(0, 16).equals(Buffer.alloc(16))).toBe(true);
    expect(r.data.subarray(16).toString()).toBe('hello');
  });

  it('reports missing paths as errors and resolves symlinked parents inside the root only', async () => {
    const r = await b.readFiles(fd, ['nope', 'dir/a/x', 'out/secret', 'in/a', '../secret'], [1, 1, 6, 5, 6]);
    expect(r.read[0]).toMatchObject({ code: 'ENOENT', errno: -2, path: 'nope' });
    expect(r.read[1]).toMatchObject({ code: 'ENOTDIR' });
    expect(r.read[2]).toMatchObject({ code: 'ENOENT' }); // tmp/secret exists, but outside the root
    expect(r.read[3]).toBe(5);
    expect(r.read[4]).toMatchObject({ code: 'ENOENT' }); // '..' stops at the root
    expect(r.data.includes('SECRET')).toBe(false);
    expect(r.data.subarray(8, 13).toString()).toBe('hello');
  });

  it('reports every path as failed on a descriptor that is not a directory', async () => {
    const f = fs.openSync(path.join(root, 'dir/a'), 'r');
    try {
      const r = await b.readFiles(f, ['a'], [1]);
      expect(r.read[0]).toMatchObject({ code: 'ENOTDIR' });
    } finally {
      fs.closeSync(f);
    }
  });

  it('rejects bad arguments before any work', async () => {
    // Checked by the TypeScript signature first, and again natively (align, the 256 MiB bound); errors of the
    // addon come from another realm, so they are matched by name.
    await expect(b.readFiles(fd, ['dir/a'], [1, 2])).rejects.toMatchObject({ name: 'RangeError' });
    await expect(b.readFiles(fd, ['dir/a'], [-1])).rejects.toMatchObject({ name: 'RangeError' });
    await expect(b.readFiles(fd, ['dir/a'], [1.5])).rejects.toMatchObject({ name: 'TypeError' });
    await expect(b.readFiles(fd, ['dir/\0a'], [1])).rejects.toMatchObject({ name: 'TypeError' });
    await expect(b.readFiles(fd, ['dir/a'], [1], { align: 0 })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(b.readFiles(fd, ['dir/a', 'dir/b'], [200 << 20, 100 << 20])).rejects.toMatchObject({ name: 'RangeError' });
    await expect(b.readFiles(-1, ['dir/a'], [1])).rejects.toThrow();
  });
});
