import { checkedBindings } from '../../lib/native/bindings';
import { makedev, major, minor } from '../../lib/native/constants';
import { mockBindings } from '../support/native';

describe('checkedBindings argument validation', () => {
  const raw = mockBindings({ mount: jest.fn(async () => undefined), truncate: jest.fn(async () => undefined) });
  const b = checkedBindings(raw);

  it('passes valid arguments through to the native function', async () => {
    await b.mount('tmpfs', '/mnt/x', 'tmpfs', 0, 'size=1m');
    expect(raw.mount).toHaveBeenCalledWith('tmpfs', '/mnt/x', 'tmpfs', 0, 'size=1m');
  });

  it('rejects non-string paths with a TypeError before native code', async () => {
    await expect(b.mount('tmpfs', 42 as unknown as string, null, 0, null)).rejects.toThrow(TypeError);
    await expect(b.statfs(undefined as unknown as string)).rejects.toThrow(/path must be a string/);
  });

  it('rejects NUL bytes in paths', async () => {
    await expect(b.truncate('/tmp/a\0b', 1)).rejects.toThrow(/NUL/);
  });

  it('rejects negative and non-integer sizes', async () => {
    await expect(b.truncate('/tmp/a', -1)).rejects.toThrow(RangeError);
    await expect(b.truncate('/tmp/a', 1.5)).rejects.toThrow(TypeError);
    await expect(b.fallocate('/tmp/a', 0, 0, Number.MAX_SAFE_INTEGER + 2)).rejects.toThrow(TypeError);
  });

  it('checks nested entries of batched calls', async () => {
    await expect(b.applyEntries(3, [{ op: 'create', path: 'a', type: 'nope' as 'file' }])).rejects.toThrow(/type must be/);
    await expect(b.applyEntries(3, [{ op: 'create', path: 'a', type: 'file', mode: -1 }])).rejects.toThrow(RangeError);
    await expect(
      b.applyEntries(3, [{ op: 'create', path: 'a', type: 'file', xattrs: { 'user.x': 'str' as unknown as Buffer } }]),
    ).rejects.toThrow(/Buffer/);
    expect(raw.applyEntries).not.toHaveBeenCalled();
  });

  it('rejects unknown propagation and resolve modes', async () => {
    await expect(b.makeMount('/x', 'weird' as 'private')).rejects.toThrow(/propagation/);
    await expect(b.openBounded('/x', 'y', { resolve: 'out' as 'in-root' })).rejects.toThrow(/resolve/);
  });
});

describe('dev_t helpers', () => {
  it('match glibc makedev/major/minor', () => {
    expect(makedev(253, 3)).toBe(253 * 256 + 3);
    expect(makedev(7, 0x12345)).toBe(0x12300745);
    for (const [ma, mi] of [[0, 0], [1, 3], [253, 1048575], [4095, 255], [4096, 256], [259, 0x7ffff]]) {
      const d = makedev(ma, mi);
      expect([major(d), minor(d)]).toEqual([ma, mi]);
    }
  });
});
