/**
 * The shared driver conformance suite. Every graph driver runs it against the real kernel:
 *
 *   runDriverConformance('vfs', (home) => VfsDriver.init(home), { deepChain: 128 });
 *
 * It reproduces Docker's graphtest (daemon/graphdriver/graphtest: create empty, create base, snapshot, deep layer
 * read, diff/apply, changes, set quota) and the layer cases of containerd's snapshotter suite (remove directory in
 * lower layer, move file from lower layer, chown, directory permission on commit, deleted files in child, rename,
 * layer file update, root permission, remove intermediate layer, 128 layers), plus concurrency, bad input and
 * cleanup checks. A "commit" is done the way Docker commits a container: the read-write layer's diff against its
 * parent is applied to a new layer created on the same parent.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as fsSync from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { ChangeKind, type Change, type Driver } from '../../lib/drivers/driver';
import { sortChanges } from '../../lib/archive/change';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import { makeTmp, removeTmp } from '../support/tmp';
import {
  apply,
  chown,
  createDir,
  createFile,
  diffTrees,
  link,
  mountsUnder,
  randomContent,
  removeAll,
  rename,
  type Applier,
} from './fstest';

/** Options of {@link runDriverConformance}. */
export interface ConformanceOptions {
  /** Layers in the deep-chain tests (Docker's DeepLayerRead and containerd's 128 layers mount): 128 for overlay2. */
  deepChain: number;
  /** The driver supports the `size` storage option here (DriverTestSetQuota); otherwise it must refuse it clearly. */
  quota?: boolean;
  /** Files in the diff/apply test (default 300, three directories). */
  diffApplyFiles?: number;
  /** When not null, the whole suite is skipped and this reason printed. */
  skip?: string | null;
  /** Directory in which each test makes its temp root (default: the OS temp dir), e.g. a mounted test filesystem. */
  tmpBase?: () => string;
  /** Extra words for the suite title (e.g. the backing filesystem). */
  label?: string;
}

const isRoot = process.geteuid?.() === 0;

function newId(): string {
  return randomBytes(32).toString('hex');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<Error> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(Error);
  expect((err as { code?: string }).code).toBe(code);
  return err as Error;
}

/** Registers the conformance tests for one driver. `makeDriver(home)` opens the driver at `home` (may be called twice per test, for restarts). */
export function runDriverConformance(name: string, makeDriver: (home: string) => Promise<Driver>, opts: ConformanceOptions): void {
  const title = `${name} driver conformance${opts.label ? ` (${opts.label})` : ''}`;
  if (opts.skip) {
    describe(title, () => {
      // eslint-disable-next-line no-console
      console.warn(`SKIPPED: ${title}: ${opts.skip}`);
      it.skip(`${title} (cannot run here: ${opts.skip})`, () => undefined);
    });
    return;
  }

  describe(title, () => {
    // Deep chains, 32-way concurrency and second-boundary waits after diffs take longer than jest's default.
    jest.setTimeout(600_000);
    let root = '';
    let home: string;
    let driver: Driver;
    let drivers: Driver[] = [];

    /** Opens the driver (again) at the same home, e.g. to simulate a restart. */
    async function open(): Promise<Driver> {
      const d = await makeDriver(home);
      drivers.push(d);
      return d;
    }

    beforeEach(async () => {
      root = opts.tmpBase ? fsSync.mkdtempSync(path.join(opts.tmpBase(), `gd-conf-${name}-`)) : makeTmp(`gd-conf-${name}-`);
      home = path.join(root, name);
      drivers = [];
      driver = await open();
    });

    afterEach(async () => {
      if (root === '') return;
      for (const d of drivers) await d.cleanup().catch(() => undefined);
      // A failed test may leave mounts behind: detach them so the temp dir can go.
      const left = (await mountsUnder(root)).sort((a, b) => b.length - a.length);
      for (const m of left) await loadBindings().umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
      removeTmp(root);
      root = '';
    });

    // ---- helpers in the spirit of graphtest/testutil.go ----

    async function withLayer<T>(id: string, fn: (dir: string) => Promise<T>): Promise<T> {
      const dir = await driver.get(id);
      try {
        return await fn(dir);
      } finally {
        await driver.put(id);
      }
    }

    const addFile = (id: string, name: string, content: Buffer | string): Promise<void> =>
      withLayer(id, (dir) => fs.writeFile(path.join(dir, name), content, { mode: 0o755 }));

    const checkFile = (id: string, name: string, content: Buffer | string): Promise<void> =>
      withLayer(id, async (dir) => {
        expect(await fs.readFile(path.join(dir, name))).toEqual(Buffer.from(content));
      });

    const checkFileRemoved = (id: string, name: string): Promise<void> =>
      withLayer(id, async (dir) => {
        await expect(fs.lstat(path.join(dir, name))).rejects.toMatchObject({ code: 'ENOENT' });
      });

    /**
     * graphtest addManyFiles. With `past`, the files get an mtime an hour ago, as files of an image layer have:
     * file times come from a coarse clock (one tick is several milliseconds), and a same-size rewrite within the
     * same tick is invisible to any mtime-based comparison, Docker's included.
     */
    async function addManyFiles(id: string, count: number, seed: number, past = false): Promise<void> {
      const then = new Date(Date.now() - 3600_000);
      await withLayer(id, async (dir) => {
        for (let i = 0; i < count; i += 100) {
          const sub = path.join(dir, `directory-${i}`);
          await fs.mkdir(sub, { recursive: true, mode: 0o755 });
          for (let j = 0; i + j < count && j < 100; j++) {
            const file = path.join(sub, `file-${i + j}`);
            await fs.writeFile(file, randomContent(64, seed + i + j), { mode: 0o755 });
            if (past) await fs.utimes(file, then, then);
          }
        }
      });
    }

    async function checkManyFiles(id: string, count: number, seed: number): Promise<void> {
      await withLayer(id, async (dir) => {
        for (let i = 0; i < count; i += 100) {
          for (let j = 0; i + j < count && j < 100; j++) {
            const got = await fs.readFile(path.join(dir, `directory-${i}`, `file-${i + j}`));
            expect(got.equals(randomContent(64, seed + i + j))).toBe(true);
          }
        }
      });
    }

    /** graphtest changeManyFiles: modifies, adds and deletes files, returning the expected change list. */
    async function changeManyFiles(id: string, count: number, seed: number): Promise<Change[]> {
      return withLayer(id, async (dir) => {
        const changes: Change[] = [];
        for (let i = 0; i < count; i += 100) {
          const archiveRoot = `/directory-${i}`;
          await fs.mkdir(path.join(dir, archiveRoot), { recursive: true, mode: 0o755 });
          for (let j = 0; i + j < count && j < 100; j++) {
            if (j === 0) changes.push({ path: archiveRoot, kind: ChangeKind.Modify });
            switch (j % 3) {
              case 0: {
                const p = `${archiveRoot}/file-${i + j}`;
                await fs.writeFile(path.join(dir, p), randomContent(64, seed + i + j), { mode: 0o755 });
                changes.push({ path: p, kind: ChangeKind.Modify });
                break;
              }
              case 1: {
                const p = `${archiveRoot}/file-${seed}-${i + j}`;
                await fs.writeFile(path.join(dir, p), randomContent(64, seed + i + j), { mode: 0o755 });
                changes.push({ path: p, kind: ChangeKind.Add });
                break;
              }
              default: {
                const p = `${archiveRoot}/file-${i + j}`;
                await fs.rm(path.join(dir, p));
                changes.push({ path: p, kind: ChangeKind.Delete });
              }
            }
          }
        }
        return changes;
      });
    }

    /** graphtest addManyLayers/addLayerFiles: a chain of `count` layers on `base`, each recording itself. */
    async function addManyLayers(base: string, count: number): Promise<string> {
      let last = base;
      for (let i = 1; i <= count; i++) {
        const next = newId();
        await driver.create(next, last);
        await withLayer(next, async (dir) => {
          await fs.writeFile(path.join(dir, 'top-id'), next, { mode: 0o755 });
          const layerDir = path.join(dir, `layer-${i}`);
          await fs.mkdir(layerDir, { recursive: true, mode: 0o755 });
          await fs.writeFile(path.join(layerDir, 'layer-id'), next, { mode: 0o755 });
          await fs.writeFile(path.join(layerDir, 'parent-id'), last, { mode: 0o755 });
        });
        last = next;
      }
      return last;
    }

    async function checkManyLayers(top: string, count: number): Promise<void> {
      await withLayer(top, async (dir) => {
        let expected = await fs.readFile(path.join(dir, 'top-id'), 'utf8');
        expect(expected).toBe(top);
        for (let i = count; i > 0; i--) {
          const layerDir = path.join(dir, `layer-${i}`);
          expect(await fs.readFile(path.join(layerDir, 'layer-id'), 'utf8')).toBe(expected);
          expected = await fs.readFile(path.join(layerDir, 'parent-id'), 'utf8');
        }
      });
    }

    /** graphtest createBase: a read-write base layer with a sticky 0705 dir owned 1:2 and a setuid 0222 file. */
    async function createBase(id: string): Promise<void> {
      const old = process.umask(0);
      try {
        await driver.createReadWrite(id, null);
        await withLayer(id, async (dir) => {
          const subdir = path.join(dir, 'a subdir');
          await fs.mkdir(subdir, { mode: 0o1705 });
          await fs.chmod(subdir, 0o1705);
          await fs.lchown(subdir, 1, 2);
          const file = path.join(dir, 'a file');
          await fs.writeFile(file, 'Some data', { mode: 0o4222 });
          await fs.chmod(file, 0o4222);
        });
      } finally {
        process.umask(old);
      }
    }

    async function verifyFile(p: string, type: 'dir' | 'file', perm: number, uid: number, gid: number): Promise<void> {
      const st = await fs.stat(p);
      expect(type === 'dir' ? st.isDirectory() : st.isFile()).toBe(true);
      expect((st.mode & 0o7777).toString(8)).toBe(perm.toString(8));
      expect([st.uid, st.gid]).toEqual([uid, gid]);
    }

    async function verifyBase(id: string): Promise<void> {
      await withLayer(id, async (dir) => {
        await verifyFile(path.join(dir, 'a subdir'), 'dir', 0o1705, 1, 2);
        await verifyFile(path.join(dir, 'a file'), 'file', 0o4222, 0, 0);
        const names = (await fs.readdir(dir)).filter((n) => n !== 'lost+found');
        expect(names.sort()).toEqual(['a file', 'a subdir']);
      });
    }

    /**
     * containerd's checkSnapshots: each applier runs in a read-write layer on top of the previous committed
     * layer and on a flat directory; the read-write layer, and the committed layer made from its diff, must
     * both equal the flat directory.
     */
    async function checkSnapshots(...appliers: Applier[]): Promise<void> {
      const flat = path.join(root, `flat-${newId().slice(0, 8)}`);
      await fs.mkdir(flat);
      let parent: string | null = null;
      for (const [i, a] of appliers.entries()) {
        const rw = `rw-${i}-${newId().slice(0, 12)}`;
        await driver.createReadWrite(rw, parent);
        await withLayer(rw, (dir) => a(dir));
        await a(flat);
        const rwDiff = await withLayer(rw, (dir) => diffTrees(flat, dir));
        expect({ layer: i + 1, view: 'read-write', problems: rwDiff }).toEqual({ layer: i + 1, view: 'read-write', problems: [] });

        const committed = `c-${i}-${newId().slice(0, 12)}`;
        await driver.create(committed, parent);
        const tar = await driver.diff(rw, parent);
        await driver.applyDiff(committed, parent, tar);
        await driver.remove(rw);
        const cDiff = await withLayer(committed, (dir) => diffTrees(flat, dir));
        expect({ layer: i + 1, view: 'committed', problems: cDiff }).toEqual({ layer: i + 1, view: 'committed', problems: [] });
        parent = committed;
      }
    }

    const needsRoot = isRoot ? it : it.skip;

    // ---- Docker graphtest ----

    describe('graphtest', () => {
      it('creates an empty layer: an empty 0755 root-owned directory (DriverTestCreateEmpty)', async () => {
        await driver.create('empty', null);
        expect(await driver.exists('empty')).toBe(true);
        const dir = await driver.get('empty');
        const st = await fs.stat(dir);
        expect(st.isDirectory()).toBe(true);
        expect((st.mode & 0o7777).toString(8)).toBe('755');
        if (isRoot) expect([st.uid, st.gid]).toEqual([0, 0]);
        else expect(st.uid).toBe(process.geteuid?.());
        expect((await fs.readdir(dir)).filter((n) => n !== 'lost+found')).toEqual([]);
        await driver.put('empty');
        await driver.remove('empty');
        expect(await driver.exists('empty')).toBe(false);
      });

      needsRoot('creates a base layer keeping sticky/setuid modes and owners (DriverTestCreateBase)', async () => {
        await createBase('Base');
        await verifyBase('Base');
        await driver.remove('Base');
        expect(await driver.exists('Base')).toBe(false);
      });

      needsRoot('a snapshot of the base layer sees identical content (DriverTestCreateSnap)', async () => {
        await createBase('Base');
        await driver.create('Snap', 'Base');
        await verifyBase('Snap');
        await driver.remove('Snap');
        await driver.remove('Base');
      });

      it(`reads through a chain of ${opts.deepChain} layers (DriverTestDeepLayerRead)`, async () => {
        const base = newId();
        await driver.create(base, null);
        await addFile(base, 'testfile.txt', 'test content');
        const top = await addManyLayers(base, opts.deepChain);
        await checkManyLayers(top, opts.deepChain);
        await checkFile(top, 'testfile.txt', 'test content');
      });

      it('diff of a layer applied to a sibling reproduces content and removals, applyDiff size == diffSize (DriverTestDiffApply)', async () => {
        const fileCount = opts.diffApplyFiles ?? 300;
        const base = newId();
        const upper = newId();
        const deleteFile = 'file-remove.txt';
        const deleteFileContent = 'This file should get removed in upper!';
        const deleteDir = 'var/lib';

        await driver.create(base, null);
        await addManyFiles(base, fileCount, 3, true);
        await addFile(base, deleteFile, deleteFileContent);
        await withLayer(base, (dir) => fs.mkdir(path.join(dir, deleteDir), { recursive: true, mode: 0o755 }).then(() => undefined));

        await driver.create(upper, base);
        await addManyFiles(upper, fileCount, 6);
        await withLayer(upper, async (dir) => {
          await fs.rm(path.join(dir, deleteFile), { recursive: true, force: true });
          await fs.rm(path.join(dir, deleteDir), { recursive: true, force: true });
        });

        const diffSize = await driver.diffSize(upper, null);
        expect(diffSize).toBe(fileCount * 64);

        const diff = newId();
        await driver.create(diff, base);
        await checkManyFiles(diff, fileCount, 3);
        await checkFile(diff, deleteFile, deleteFileContent);

        const tar = await readAll(await driver.diff(upper, base));
        const applied = await driver.applyDiff(diff, base, Readable.from([tar]));
        expect(applied).toBe(diffSize);

        await checkManyFiles(diff, fileCount, 6);
        await checkFileRemoved(diff, deleteFile);
        await checkFileRemoved(diff, deleteDir);
        await withLayer(diff, async (dir) => expect((await fs.stat(path.join(dir, 'var'))).isDirectory()).toBe(true));
        // the diff released both layers: they can go right away
        await driver.remove(upper);
        await driver.remove(diff);
        await driver.remove(base);
      });

      it('reports exactly the changes made (DriverTestChanges, 20 files)', async () => {
        const base = newId();
        const upper = newId();
        await driver.create(base, null);
        await addManyFiles(base, 20, 3, true);
        await driver.create(upper, base);
        const expected = await changeManyFiles(upper, 20, 6);
        const changes = await driver.changes(upper, base);
        // sorted by path as returned, and equal to what was done
        expect(changes).toEqual(sortChanges([...changes]));
        expect(changes).toEqual(sortChanges(expected));
        expect(changes).toHaveLength(21);
      });

      if (opts.quota) {
        needsRoot('limits a layer to its size storage option (DriverTestSetQuota)', async () => {
          await createBase('Base');
          const layer = `${name}Test`;
          await driver.createReadWrite(layer, 'Base', { storageOpt: { size: '50M' } });
          await withLayer(layer, async (dir) => {
            const quota = 50 * 1024 * 1024;
            await fs.writeFile(path.join(dir, 'smallfile'), randomContent(quota / 2, 1));
            const err = await fs.writeFile(path.join(dir, 'bigfile'), randomContent(quota, 2)).then(
              () => null,
              (e: { code?: string; errno?: number }) => e,
            );
            // libuv in Node 20 has no name for EDQUOT (122): its code is then 'UNKNOWN', so compare the errno too.
            expect(err?.code === 'EDQUOT' || err?.code === 'ENOSPC' || err?.errno === -122).toBe(true);
            await fs.rm(path.join(dir, 'bigfile'), { force: true });
          });
        });
      } else {
        it('refuses the size storage option clearly where quotas are unavailable, creating nothing', async () => {
          await driver.create('base', null);
          const err = await rejectsWithCode(driver.createReadWrite('sized', 'base', { storageOpt: { size: '50M' } }), 'ERR_INVALID_OPTION');
          expect(err.message).toMatch(/size/);
          expect(await driver.exists('sized')).toBe(false);
        });
      }
    });

    // ---- containerd snapshotter suite (layer cases) ----

    describe('containerd snapshotter cases', () => {
      it('root permission: a new layer root is 0755 (checkRootPermission)', async () => {
        await driver.createReadWrite('preparing', null);
        await withLayer('preparing', async (dir) => {
          expect(((await fs.stat(dir)).mode & 0o777).toString(8)).toBe('755');
        });
      });

      it('layer file update (checkLayerFileUpdate, docker#21555)', async () => {
        await checkSnapshots(
          apply(createDir('/etc', 0o700), createFile('/etc/hosts', 'mydomain 10.0.0.1', 0o644), createFile('/etc/profile', 'PATH=/usr/bin', 0o644)),
          apply(
            createFile('/etc/hosts', 'mydomain 10.0.0.2', 0o644),
            createFile('/etc/profile', 'PATH=/usr/bin', 0o666),
            createDir('/root', 0o700),
            createFile('/root/.bashrc', 'PATH=/usr/sbin:/usr/bin', 0o644),
          ),
        );
      });

      it('remove directory in lower layer (checkRemoveDirectoryInLowerLayer, docker#25244)', async () => {
        await checkSnapshots(
          apply(createDir('/lib', 0o700), createFile('/lib/hidden', '', 0o644)),
          apply(removeAll('/lib'), createDir('/lib', 0o700), createFile('/lib/not-hidden', '', 0o644)),
          apply(createFile('/lib/newfile', '', 0o644)),
        );
      });

      needsRoot('chown (checkChown, docker#20240/#24913/#28391)', async () => {
        await checkSnapshots(
          apply(createDir('/opt', 0o700), createDir('/opt/a', 0o700), createDir('/opt/a/b', 0o700), createFile('/opt/a/b/file.txt', 'hello', 0o644)),
          apply(chown('/opt', 1, 1), chown('/opt/a', 1, 1), chown('/opt/a/b', 1, 1), chown('/opt/a/b/file.txt', 1, 1)),
        );
      });

      it('rename (checkRename, docker#25409)', async () => {
        await checkSnapshots(
          apply(createDir('/dir1', 0o700), createDir('/somefiles', 0o700), createFile('/somefiles/f1', 'was here first!', 0o644), createFile('/somefiles/f2', 'nothing interesting', 0o644)),
          apply(
            rename('/dir1', '/dir2'),
            createFile('/somefiles/f1-overwrite', 'new content 1', 0o644),
            rename('/somefiles/f1-overwrite', '/somefiles/f1'),
            rename('/somefiles/f2', '/somefiles/f3'),
          ),
        );
      });

      needsRoot('directory permission on commit (checkDirectoryPermissionOnCommit, docker#27298)', async () => {
        await checkSnapshots(
          apply(
            createDir('/dir1', 0o700),
            createDir('/dir2', 0o700),
            createDir('/dir3', 0o700),
            createDir('/dir4', 0o700),
            createFile('/dir4/f1', '...', 0o644),
            createDir('/dir5', 0o700),
            createFile('/dir5/f1', '...', 0o644),
            chown('/dir1', 1, 1),
            chown('/dir2', 1, 1),
            chown('/dir3', 1, 1),
            chown('/dir5', 1, 1),
            chown('/dir5/f1', 1, 1),
          ),
          apply(chown('/dir2', 0, 0), removeAll('/dir3'), chown('/dir4', 1, 1), chown('/dir4/f1', 1, 1)),
          apply(createDir('/dir3', 0o700), chown('/dir3', 1, 1), removeAll('/dir5'), createDir('/dir5', 0o700), chown('/dir5', 1, 1)),
        );
      });

      it('deleted files in child (checkDeletedFilesInChildSnapshot)', async () => {
        await checkSnapshots(
          apply(createFile('/foo', 'foo\n', 0o777), createFile('/foobar', 'foobar\n', 0o777)),
          apply(removeAll('/foobar')),
          apply(),
        );
      });

      it('move file from lower layer (checkFileFromLowerLayer)', async () => {
        await checkSnapshots(
          apply(createDir('/dir1', 0o700), createFile('/dir1/f1', 'Hello', 0o644), createDir('dir2', 0o700), createFile('dir2/f2', '...', 0o644)),
          apply(createDir('/dir3', 0o700), createFile('/dir3/f1', 'Hello', 0o644), removeAll('/dir1'), link('dir2/f2', 'dir3/f2'), removeAll('dir2/f2')),
        );
      });

      it('refuses to remove an intermediate layer while children exist (checkRemoveIntermediateSnapshot)', async () => {
        await driver.create('base', null);
        await addFile('base', 'f', 'base');
        await driver.create('intermediate', 'base');
        await driver.createReadWrite('top', 'intermediate');
        await rejectsWithCode(driver.remove('intermediate'), 'ERR_LAYER_IN_USE');
        await rejectsWithCode(driver.remove('base'), 'ERR_LAYER_IN_USE');
        expect(await driver.exists('intermediate')).toBe(true);
        await checkFile('intermediate', 'f', 'base');
        await checkFile('top', 'f', 'base');
        // still refused after a restart of the driver
        await driver.cleanup();
        driver = await open();
        await rejectsWithCode(driver.remove('intermediate'), 'ERR_LAYER_IN_USE');
        await driver.remove('top');
        await driver.remove('intermediate');
        await driver.remove('base');
        expect(await driver.exists('base')).toBe(false);
      });

      it(`mounts ${opts.deepChain} layers, each equal to the flat tree (check128LayersMount)`, async () => {
        const flat = path.join(root, 'flat');
        await fs.mkdir(flat);
        const appliers: Applier[] = [
          apply(
            createFile('/bottom', 'way at the bottom\n', 0o777),
            createFile('/overwriteme', 'FIRST!\n', 0o777),
            createDir('/ADDHERE', 0o755),
            createDir('/ONLYME', 0o755),
            createFile('/ONLYME/bottom', 'bye!\n', 0o777),
          ),
        ];
        for (let i = 1; i < opts.deepChain; i++) {
          appliers.push(
            apply(
              createFile('/overwriteme', `${i} WAS HERE!\n`, 0o777),
              createFile(`/ADDHERE/file-${i}`, 'same\n', 0o755),
              removeAll('/ONLYME'),
              createDir('/ONLYME', 0o755),
              createFile(`/ONLYME/file-${i}`, 'only me!\n', 0o777),
            ),
          );
        }
        let parent: string | null = null;
        for (const [i, a] of appliers.entries()) {
          const id = `layer-${i}`;
          await driver.create(id, parent);
          await withLayer(id, async (dir) => {
            expect({ layer: i, before: await diffTrees(flat, dir) }).toEqual({ layer: i, before: [] });
            await a(flat);
            await a(dir);
            expect({ layer: i, after: await diffTrees(flat, dir) }).toEqual({ layer: i, after: [] });
          });
          parent = id;
        }
        const view = newId();
        await driver.createReadWrite(view, parent);
        expect(await withLayer(view, (dir) => diffTrees(flat, dir))).toEqual([]);
      });
    });

    // ---- diff/changes details ----

    describe('diff and changes', () => {
      it('a layer without parent diffs as all of its content, and applies onto an empty layer', async () => {
        await driver.create('base', null);
        await withLayer('base', async (dir) => {
          await apply(createDir('/etc', 0o755), createFile('/etc/hosts', 'hosts\n', 0o644), createFile('/bin-x', randomContent(5000, 9), 0o755))(dir);
        });
        const changes = await driver.changes('base', null);
        expect(changes).toEqual([
          { path: '/bin-x', kind: ChangeKind.Add },
          { path: '/etc', kind: ChangeKind.Add },
          { path: '/etc/hosts', kind: ChangeKind.Add },
        ]);
        const size = await driver.diffSize('base', null);
        expect(size).toBe(5006);
        await driver.create('copy', null);
        const applied = await driver.applyDiff('copy', null, await driver.diff('base', null));
        expect(applied).toBe(size);
        const [a, b] = [await driver.get('base'), await driver.get('copy')];
        try {
          expect(await diffTrees(a, b)).toEqual([]);
        } finally {
          await driver.put('base');
          await driver.put('copy');
        }
      });

      it('a diff stream destroyed before it is read releases the layers', async () => {
        await driver.create('base', null);
        await addFile('base', 'a', 'a');
        await driver.create('child', 'base');
        await addFile('child', 'b', randomContent(1 << 20, 4));
        const stream = await driver.diff('child', 'base');
        await rejectsWithCode(driver.remove('child'), 'ERR_LAYER_IN_USE');
        const closed = new Promise((resolve) => stream.once('close', resolve));
        stream.destroy();
        await closed;
        await driver.remove('child');
        await driver.remove('base');
      });

      it('changes of an unchanged snapshot are empty', async () => {
        await driver.create('base', null);
        await addManyFiles('base', 150, 1);
        await driver.create('snap', 'base');
        expect(await driver.changes('snap', 'base')).toEqual([]);
        expect(await driver.diffSize('snap', 'base')).toBe(0);
      });
    });

    // ---- reference counts and concurrency ----

    describe('get/put and concurrency', () => {
      it('32 parallel get/put on one id share the layer; the counts balance', async () => {
        await driver.create('shared', null);
        const paths = await Promise.all(
          Array.from({ length: 32 }, async (_, i) => {
            const dir = await driver.get('shared');
            await fs.writeFile(path.join(dir, `f-${i}`), String(i));
            await driver.put('shared');
            return dir;
          }),
        );
        expect(new Set(paths).size).toBe(1);
        await withLayer('shared', async (dir) => {
          expect((await fs.readdir(dir)).filter((n) => n.startsWith('f-'))).toHaveLength(32);
        });
        // all released: a put now is an error, and remove works
        await rejectsWithCode(driver.put('shared'), 'ERR_NOT_MOUNTED');
        await driver.remove('shared');
      });

      it('32 outstanding gets keep the layer in use until the last put', async () => {
        await driver.create('busy', null);
        await Promise.all(Array.from({ length: 32 }, () => driver.get('busy')));
        await rejectsWithCode(driver.remove('busy'), 'ERR_LAYER_IN_USE');
        await Promise.all(Array.from({ length: 31 }, () => driver.put('busy')));
        await rejectsWithCode(driver.remove('busy'), 'ERR_LAYER_IN_USE');
        await driver.put('busy');
        await driver.remove('busy');
        expect(await driver.exists('busy')).toBe(false);
      });

      it('32 parallel creates on different ids from one parent, then 32 parallel removes', async () => {
        await driver.create('parent', null);
        await addManyFiles('parent', 120, 5);
        const ids = Array.from({ length: 32 }, (_, i) => `child-${i}`);
        await Promise.all(ids.map((id, i) => (i % 2 ? driver.create(id, 'parent') : driver.createReadWrite(id, 'parent'))));
        for (const id of ids) expect(await driver.exists(id)).toBe(true);
        await Promise.all(ids.map((id) => checkManyFiles(id, 120, 5)));
        await rejectsWithCode(driver.remove('parent'), 'ERR_LAYER_IN_USE');
        await Promise.all(ids.map((id) => driver.remove(id)));
        for (const id of ids) expect(await driver.exists(id)).toBe(false);
        await driver.remove('parent');
      });
    });

    // ---- bad input ----

    describe('bad input', () => {
      it('create on an existing id fails with nothing changed', async () => {
        await driver.create('dup', null);
        await addFile('dup', 'keep', 'me');
        await rejectsWithCode(driver.create('dup', null), 'ERR_LAYER_EXISTS');
        await rejectsWithCode(driver.createReadWrite('dup', null), 'ERR_LAYER_EXISTS');
        await checkFile('dup', 'keep', 'me');
      });

      it('a missing parent is LayerNotFound and nothing is created', async () => {
        await rejectsWithCode(driver.create('orphan', 'no-such-parent'), 'ERR_LAYER_NOT_FOUND');
        expect(await driver.exists('orphan')).toBe(false);
      });

      it('unknown ids are LayerNotFound for get and remove, false for exists', async () => {
        await rejectsWithCode(driver.get('nope'), 'ERR_LAYER_NOT_FOUND');
        await rejectsWithCode(driver.remove('nope'), 'ERR_LAYER_NOT_FOUND');
        expect(await driver.exists('nope')).toBe(false);
      });

      it('put without get is NotMounted', async () => {
        await driver.create('x', null);
        await rejectsWithCode(driver.put('x'), 'ERR_NOT_MOUNTED');
      });

      it('invalid ids are refused before touching anything', async () => {
        for (const bad of ['', '..', '../escape', 'a/b', '.hidden', '-dash', 'nul\0byte', 'x'.repeat(129)]) {
          await rejectsWithCode(driver.create(bad, null), 'ERR_INVALID_ID');
          await rejectsWithCode(driver.get(bad), 'ERR_INVALID_ID');
          await rejectsWithCode(driver.remove(bad), 'ERR_INVALID_ID');
        }
        await driver.create('ok', null);
        await rejectsWithCode(driver.create('child', '../ok'), 'ERR_INVALID_ID');
        expect(fsSync.readdirSync(root)).toEqual([name]);
      });

      it('an unknown storage option is refused, naming it', async () => {
        const err = await rejectsWithCode(driver.createReadWrite('opt', null, { storageOpt: { bogus: '1' } }), 'ERR_INVALID_OPTION');
        expect(err.message).toContain('bogus');
        expect(await driver.exists('opt')).toBe(false);
      });

      it('status is an ordered list of string pairs; metadata is an object or null', async () => {
        const st = await driver.status();
        expect(Array.isArray(st)).toBe(true);
        for (const pair of st) {
          expect(pair).toHaveLength(2);
          expect(typeof pair[0]).toBe('string');
          expect(typeof pair[1]).toBe('string');
        }
        await driver.create('m', null);
        const md = await driver.getMetadata('m');
        expect(md === null || typeof md === 'object').toBe(true);
      });
    });

    // ---- cleanup and restart ----

    describe('cleanup', () => {
      it('cleanup() leaves no mounts under the home, and layers survive a restart', async () => {
        await driver.create('a', null);
        await addFile('a', 'data', 'persisted');
        await driver.create('b', 'a');
        await driver.createReadWrite('c', 'b');
        await driver.get('b');
        await driver.get('c');
        await driver.get('c');
        await driver.cleanup();
        expect(await mountsUnder(home)).toEqual([]);

        driver = await open();
        for (const id of ['a', 'b', 'c']) expect(await driver.exists(id)).toBe(true);
        await checkFile('c', 'data', 'persisted');
        await driver.remove('c');
        await driver.remove('b');
        await driver.remove('a');
        await driver.cleanup();
        expect(await mountsUnder(home)).toEqual([]);
      });
    });
  });
}
