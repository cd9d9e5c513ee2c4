/**
 * Extended attributes on the real kernel, never following symlinks: user.* / trusted.* / security.capability,
 * overlay's opaque marker, XATTR_CREATE / XATTR_REPLACE, large values and error shapes.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { XattrFlags } from '../../lib/native/constants';
import type { NativeBindings, NativeError } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';

/** A VFS_CAP_REVISION_2 security.capability value: magic_etc, then permitted/inheritable for both 32-bit halves. */
function capabilityV2(permittedLow: number, effective: boolean): Buffer {
  const VFS_CAP_REVISION_2 = 0x02000000;
  const VFS_CAP_FLAGS_EFFECTIVE = 0x000001;
  const b = Buffer.alloc(20);
  b.writeUInt32LE(VFS_CAP_REVISION_2 | (effective ? VFS_CAP_FLAGS_EFFECTIVE : 0), 0);
  b.writeUInt32LE(permittedLow, 4); // permitted[0]
  b.writeUInt32LE(0, 8); // inheritable[0]
  b.writeUInt32LE(0, 12); // permitted[1]
  b.writeUInt32LE(0, 16); // inheritable[1]
  return b;
}

describeIf(isRoot ? null : 'needs root', 'native xattrs', () => {
  let b: NativeBindings;
  let base = '';
  let file = '';
  let link = '';
  let dir = '';

  beforeAll(() => {
    b = loadBindings();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-xattr-'));
    file = path.join(base, 'file');
    link = path.join(base, 'link');
    dir = path.join(base, 'dir');
    fs.writeFileSync(file, 'content');
    fs.symlinkSync('file', link);
    fs.mkdirSync(dir);
  });
  afterAll(() => {
    if (base) fs.rmSync(base, { recursive: true, force: true });
  });

  it('sets, gets, lists and removes user.* and trusted.* on a file', async () => {
    await b.lsetxattr(file, 'user.one', Buffer.from('1'));
    await b.lsetxattr(file, 'trusted.two', Buffer.from([0, 1, 2, 255]));
    await b.lsetxattr(file, 'user.empty', Buffer.alloc(0));
    expect(await b.lgetxattr(file, 'user.one')).toEqual(Buffer.from('1'));
    expect(await b.lgetxattr(file, 'trusted.two')).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(await b.lgetxattr(file, 'user.empty')).toEqual(Buffer.alloc(0));
    expect((await b.llistxattr(file)).sort()).toEqual(expect.arrayContaining(['trusted.two', 'user.empty', 'user.one']));
    await b.lremovexattr(file, 'user.one');
    expect(await b.lgetxattr(file, 'user.one')).toBeNull();
    expect(await b.llistxattr(file)).not.toContain('user.one');
  });

  it('resolves null for a missing attribute', async () => {
    expect(await b.lgetxattr(file, 'user.does-not-exist')).toBeNull();
    expect(await b.lgetxattr(file, 'trusted.does-not-exist')).toBeNull();
  });

  it('acts on a symlink itself, not on its target', async () => {
    await b.lsetxattr(link, 'trusted.onlink', Buffer.from('link'));
    await b.lsetxattr(file, 'trusted.onlink', Buffer.from('target'));
    expect(await b.lgetxattr(link, 'trusted.onlink')).toEqual(Buffer.from('link'));
    expect(await b.lgetxattr(file, 'trusted.onlink')).toEqual(Buffer.from('target'));
    expect(await b.llistxattr(link)).toContain('trusted.onlink');
    await b.lremovexattr(link, 'trusted.onlink');
    expect(await b.lgetxattr(link, 'trusted.onlink')).toBeNull();
    expect(await b.lgetxattr(file, 'trusted.onlink')).toEqual(Buffer.from('target'));
  });

  it('refuses user.* on a symlink with EPERM', async () => {
    await expect(b.lsetxattr(link, 'user.x', Buffer.from('v'))).rejects.toMatchObject({
      code: 'EPERM',
      errno: -os.constants.errno.EPERM,
      syscall: 'lsetxattr',
      path: link,
    });
  });

  it('round-trips a v2 security.capability', async () => {
    const capNetBindService = 1 << 10;
    const cap = capabilityV2(capNetBindService, true);
    await b.lsetxattr(file, 'security.capability', cap);
    expect(await b.lgetxattr(file, 'security.capability')).toEqual(cap);
    expect(await b.llistxattr(file)).toContain('security.capability');
    await b.lremovexattr(file, 'security.capability');
    expect(await b.lgetxattr(file, 'security.capability')).toBeNull();
  });

  it('marks a directory overlay-opaque', async () => {
    await b.lsetxattr(dir, 'trusted.overlay.opaque', Buffer.from('y'));
    expect((await b.lgetxattr(dir, 'trusted.overlay.opaque'))?.toString()).toBe('y');
    expect(await b.llistxattr(dir)).toEqual(['trusted.overlay.opaque']);
  });

  it('honours XATTR_CREATE and XATTR_REPLACE', async () => {
    await b.lsetxattr(file, 'user.flags', Buffer.from('first'), XattrFlags.XATTR_CREATE);
    const e = (await b.lsetxattr(file, 'user.flags', Buffer.from('second'), XattrFlags.XATTR_CREATE).catch((x: unknown) => x)) as NativeError;
    expect(e).toMatchObject({ code: 'EEXIST', syscall: 'lsetxattr', path: file });
    expect(e.message).toContain('user.flags');
    expect(await b.lgetxattr(file, 'user.flags')).toEqual(Buffer.from('first'));
    await b.lsetxattr(file, 'user.flags', Buffer.from('third'), XattrFlags.XATTR_REPLACE);
    expect(await b.lgetxattr(file, 'user.flags')).toEqual(Buffer.from('third'));
    await expect(b.lsetxattr(file, 'user.never', Buffer.from('x'), XattrFlags.XATTR_REPLACE)).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it('round-trips a 4000-byte value', async () => {
    const big = path.join(base, 'big');
    fs.writeFileSync(big, '');
    const value = Buffer.alloc(4000);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7) % 256;
    await b.lsetxattr(big, 'user.big', value);
    expect(await b.lgetxattr(big, 'user.big')).toEqual(value);
  });

  it('lists many attributes', async () => {
    const many = path.join(base, 'many');
    fs.writeFileSync(many, '');
    const names = Array.from({ length: 40 }, (_, i) => `user.attr-${i}`);
    for (const n of names) await b.lsetxattr(many, n, Buffer.from(n));
    expect((await b.llistxattr(many)).sort()).toEqual([...names].sort());
  });

  it('reports errors on missing paths and attributes', async () => {
    const missing = path.join(base, 'missing');
    await expect(b.lgetxattr(missing, 'user.x')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'lgetxattr', path: missing });
    await expect(b.llistxattr(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'llistxattr', path: missing });
    await expect(b.lremovexattr(file, 'user.never')).rejects.toMatchObject({ code: 'ENODATA', syscall: 'lremovexattr', path: file });
    await expect(b.lsetxattr(file, 'bogus.namespace', Buffer.from('x'))).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
  });

  it('rejects bad arguments with TypeErrors', async () => {
    await expect(b.lsetxattr(file, 'user.x', 'str' as unknown as Buffer)).rejects.toThrow(TypeError);
    await expect(b.lgetxattr(file, '')).rejects.toThrow(TypeError);
  });
});
