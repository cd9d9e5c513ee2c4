/**
 * The removeTree wrapper of lib/drivers/vfs: the native call when the bindings have it, fs.rm when they do not
 * (no bindings, an object without the method, or an addon built before it: ERR_NATIVE_MISSING), and never fs.rm
 * after a real native failure (that would delete through the mount the native call refused to enter).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { removeTree } from '../../lib/drivers/vfs/remove-tree';
import type { NativeBindings } from '../../lib/native/types';
import { mockBindings } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';

describe('vfs removeTree wrapper', () => {
  let tmp: string;
  let tree: string;

  beforeEach(() => {
    tmp = makeTmp('gd-rmtree-unit-');
    tree = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(tree, 'a/b'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'a/b/f'), 'x');
  });

  afterEach(() => {
    removeTmp(tmp);
  });

  it('uses the native call when the bindings have it (and does not touch the tree itself)', async () => {
    const b = mockBindings({ removeTree: jest.fn(async () => ({ entries: 4 })) });
    await removeTree(tree, b);
    expect(b.removeTree).toHaveBeenCalledTimes(1);
    expect(b.removeTree).toHaveBeenCalledWith(tree);
    // The mock removed nothing: proof that no fs.rm ran as well.
    expect(fs.existsSync(path.join(tree, 'a/b/f'))).toBe(true);
  });

  it('falls back to fs.rm when the addon has no removeTree (ERR_NATIVE_MISSING, the mock default)', async () => {
    const b = mockBindings();
    await removeTree(tree, b);
    expect(b.removeTree).toHaveBeenCalledTimes(1);
    expect(fs.existsSync(tree)).toBe(false);
  });

  it('falls back to fs.rm without bindings or with bindings lacking the method', async () => {
    await removeTree(tree);
    expect(fs.existsSync(tree)).toBe(false);

    fs.mkdirSync(path.join(tree, 'c'), { recursive: true });
    const old = mockBindings() as Partial<NativeBindings>;
    delete old.removeTree;
    await removeTree(tree, old as NativeBindings);
    expect(fs.existsSync(tree)).toBe(false);
  });

  it('rethrows a native failure without retrying with fs.rm', async () => {
    const exdev = Object.assign(new Error(`EXDEV: cross-device link, removeTree '${tree}/a'`), {
      code: 'EXDEV', errno: -18, syscall: 'removeTree', path: `${tree}/a`,
    });
    const b = mockBindings({ removeTree: jest.fn(async () => Promise.reject(exdev)) });
    await expect(removeTree(tree, b)).rejects.toBe(exdev);
    expect(fs.existsSync(path.join(tree, 'a/b/f'))).toBe(true);
  });

  it('a missing target is fine on the fs.rm path too', async () => {
    await expect(removeTree(path.join(tmp, 'missing'), mockBindings())).resolves.toBeUndefined();
  });
});
