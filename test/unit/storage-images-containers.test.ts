/**
 * Image store, container init layer and the Storage facade on an in-memory driver and an in-memory tree
 * (no root needed): ids and references, Docker's rmi rules, names, the init files and their order.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { setupInitLayer } from '../../lib/container/init-layer';
import { registerDriver } from '../../lib/drivers/registry';
import { serializeConfig } from '../../lib/image/config';
import { ImageStore } from '../../lib/image/image-store';
import { LayerStore } from '../../lib/layer/layer-store';
import { Storage } from '../../lib/storage/storage';
import { FakeDriver } from '../support/fake-driver';
import { fakeFsBindings } from '../support/fake-fs-bindings';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const tarA = buildTar([{ name: 'a', data: 'hello' }]);

describe('container init layer', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-init-')));
  afterEach(() => removeTmp(tmp));

  test('an empty layer gets exactly Docker’s init files', async () => {
    const { tree, bindings } = fakeFsBindings();
    await setupInitLayer(tmp, { bindings, uid: 0, gid: 0 });
    const d = { type: 'dir', mode: 0o755, uid: 0, gid: 0 };
    const f = { type: 'file', mode: 0o755, uid: 0, gid: 0, size: 0 };
    expect(Object.fromEntries([...tree.entries()].sort())).toEqual({
      '.dockerenv': f,
      dev: d,
      'dev/console': f,
      'dev/pts': d,
      'dev/shm': d,
      etc: d,
      'etc/hostname': f,
      'etc/hosts': f,
      'etc/mtab': { type: 'symlink', mode: 0o777, linkname: '/proc/mounts', uid: 0, gid: 0 },
      'etc/resolv.conf': f,
      proc: d,
      sys: d,
    });
  });

  test('planted files and symlinks are unlinked before anything is created; directories stay', async () => {
    const { tree, ops, bindings } = fakeFsBindings({
      etc: { type: 'symlink', mode: 0o777, linkname: '/host/etc' },
      dev: { type: 'dir', mode: 0o700 },
      'dev/console': { type: 'char', mode: 0o600 },
      'dev/pts': { type: 'symlink', mode: 0o777, linkname: '../../outside' },
      proc: { type: 'dir', mode: 0o555 },
      sys: { type: 'file', mode: 0o644, size: 3 },
      '.dockerenv': { type: 'dir', mode: 0o700 },
    });
    await setupInitLayer(tmp, { bindings, uid: 0, gid: 0 });
    // The symlinked /etc went before anything was written below it.
    const firstEtc = ops.findIndex((o) => o.path === 'etc' || o.path.startsWith('etc/'));
    expect(ops[firstEtc]).toEqual({ op: 'remove', path: 'etc' });
    expect(ops.filter((o) => o.op === 'remove').map((o) => o.path)).toEqual(['sys', 'etc', 'dev/pts', 'dev/console']);
    // Every removal comes before every creation.
    expect(ops.findIndex((o) => o.op === 'create')).toBe(ops.filter((o) => o.op === 'remove').length);
    expect(tree.get('etc')).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(tree.get('dev')).toMatchObject({ type: 'dir', mode: 0o700 });
    expect(tree.get('dev/pts')).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(tree.get('dev/console')).toMatchObject({ type: 'file', mode: 0o755, size: 0 });
    expect(tree.get('proc')).toMatchObject({ type: 'dir', mode: 0o555 });
    expect(tree.get('sys')).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(tree.get('.dockerenv')).toMatchObject({ type: 'dir', mode: 0o700 });
    expect(tree.get('etc/mtab')).toMatchObject({ type: 'symlink', linkname: '/proc/mounts' });
  });

  test('a removed symlinked directory hides what its lstat saw through it', async () => {
    // lstat of etc/hosts resolves through the etc symlink (inside the root): that entry is not in this layer.
    const { tree, ops, bindings } = fakeFsBindings({
      etc: { type: 'symlink', mode: 0o777, linkname: 'real' },
      'etc/hosts': { type: 'symlink', mode: 0o777, linkname: '/x' },
      'etc/hostname': { type: 'dir', mode: 0o700 },
    });
    await setupInitLayer(tmp, { bindings, uid: 0, gid: 0 });
    expect(ops.filter((o) => o.op === 'remove').map((o) => o.path)).toEqual(['etc']);
    expect(tree.get('etc/hosts')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(tree.get('etc/hostname')).toMatchObject({ type: 'file', mode: 0o755 });
  });

  test('a failing native step is an error with errno details', async () => {
    const { bindings } = fakeFsBindings();
    (bindings.applyEntries as jest.Mock).mockResolvedValueOnce([{ errno: 28, code: 'ENOSPC', syscall: 'mkdirat', fd: -1 }]);
    await expect(setupInitLayer(tmp, { bindings })).rejects.toMatchObject({ code: 'ENOSPC', syscall: 'mkdirat', path: 'dev' });
  });
});

describe('ImageStore', () => {
  let tmp: string;
  let driver: FakeDriver;
  beforeEach(() => {
    tmp = makeTmp('gd-images-');
    fs.mkdirSync(path.join(tmp, 'mnt'));
    driver = new FakeDriver(path.join(tmp, 'mnt'));
  });
  afterEach(() => removeTmp(tmp));

  async function stores(): Promise<{ layers: LayerStore; images: ImageStore }> {
    const layers = await LayerStore.open({ driver, dir: path.join(tmp, 'layerdb'), sync: false });
    const images = await ImageStore.open({ dir: tmp, layers, sync: false });
    return { layers, images };
  }
  const config = (diffIds: string[], extra: Record<string, unknown> = {}): Buffer => serializeConfig({ rootfs: { type: 'layers', diff_ids: diffIds }, ...extra });

  test('id = sha256 of the config; the image holds its top layer', async () => {
    const { layers, images } = await stores();
    const l = await layers.register(Readable.from([tarA]), null);
    const bytes = config([l.diffId]);
    const id = await images.create(bytes);
    expect(id).toBe(sha(bytes));
    expect(fs.readFileSync(path.join(tmp, 'imagedb', 'content', 'sha256', id.slice(7))).equals(bytes)).toBe(true);
    expect(layers.references(l.chainId).handles).toBe(2);
    expect(await images.create(bytes)).toBe(id);
    expect(layers.references(l.chainId).handles).toBe(2);
    await layers.release(l.chainId);
    expect(images.get(id)).toEqual({ id, references: [], layers: [l.chainId], diffIds: [l.diffId], size: tarA.length });
    await expect(images.create(config([sha('missing')]))).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    expect(await images.delete(id)).toEqual([l.chainId]);
    expect(driver.layers.size).toBe(0);
  });

  test('references: Docker’s repositories.json, resolution order, errors', async () => {
    const { layers, images } = await stores();
    const l = await layers.register(Readable.from([tarA]), null);
    const id = await images.create(config([l.diffId]));
    expect(await images.tag(id, 'busybox')).toBe('docker.io/library/busybox:latest');
    await images.tag(id, 'quay.io/x/y:1');
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'repositories.json'), 'utf8'))).toEqual({
      Repositories: { busybox: { 'busybox:latest': id }, 'quay.io/x/y': { 'quay.io/x/y:1': id } },
    });
    for (const r of ['busybox', 'busybox:latest', 'docker.io/library/busybox', 'library/busybox:latest', id, id.slice(7), id.slice(0, 19), id.slice(7, 19), 'quay.io/x/y:1']) {
      expect(images.resolve(r)).toBe(id);
    }
    expect(() => images.resolve('busybox:2')).toThrow(expect.objectContaining({ code: 'ERR_IMAGE_NOT_FOUND' }));
    expect(() => images.resolve(`sha256:${'0'.repeat(64)}`)).toThrow(expect.objectContaining({ code: 'ERR_IMAGE_NOT_FOUND' }));
    expect(() => images.resolve('../../etc/passwd')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_REFERENCE' }));
    await expect(images.tag(id, 'sha256:abc')).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
    expect(await images.untag('busybox')).toBe(id);
    await expect(images.untag('busybox')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    expect(images.referencesOf(id)).toEqual(['quay.io/x/y:1']);
  });

  test('an id prefix matching several images is ambiguous', async () => {
    const { layers, images } = await stores();
    const l = await layers.register(Readable.from([tarA]), null);
    const ids: string[] = [];
    for (let i = 0; i < 17; i++) ids.push(await images.create(config([l.diffId], { n: i })));
    const first = new Map<string, number>();
    for (const id of ids) first.set(id[7]!, (first.get(id[7]!) ?? 0) + 1);
    const [c] = [...first.entries()].find(([, n]) => n > 1)!;
    expect(() => images.resolve(c)).toThrow(expect.objectContaining({ code: 'ERR_AMBIGUOUS_ID' }));
  });

  test('reopen: references and layer handles come back; tampered configs are reported', async () => {
    const { layers, images } = await stores();
    const l = await layers.register(Readable.from([tarA]), null);
    const id = await images.create(config([l.diffId]));
    const id2 = await images.create(config([l.diffId], { x: 1 }));
    await images.tag(id, 'a:1');
    await images.tag(id2, 'b:1');
    fs.appendFileSync(path.join(tmp, 'imagedb', 'content', 'sha256', id2.slice(7)), ' ');
    const again = await stores();
    expect(again.images.list().map((i) => [i.id, i.references])).toEqual([[id, ['docker.io/library/a:1']]]);
    expect(again.images.corrupt.map((c) => c.id)).toEqual([id2]);
    expect(again.images.danglingRefs.map((c) => c.id)).toEqual(['docker.io/library/b:1']);
    expect(again.layers.references(l.chainId).handles).toBe(1);
  });
});

describe('Storage on an in-memory driver', () => {
  let tmp: string;
  let drivers: FakeDriver[];
  beforeAll(() => {
    registerDriver('fake', async (home) => {
      fs.mkdirSync(home, { recursive: true });
      const d = new FakeDriver(home);
      drivers.push(d);
      return d;
    });
  });
  beforeEach(() => {
    tmp = makeTmp('gd-storage-unit-');
    drivers = [];
  });
  afterEach(() => removeTmp(tmp));

  const open = (): Promise<Storage> => Storage.open({ root: tmp, driver: 'fake', bindings: fakeFsBindings().bindings, sync: false });

  test('import, tag, containers, commit, and Docker’s rmi rules', async () => {
    const s = await open();
    const img = await s.importImage(Readable.from([tarA]), { reference: 'base:1' });
    expect(img.references).toEqual(['docker.io/library/base:1']);
    expect(img.diffIds).toEqual([sha(tarA)]);
    await s.tagImage('base:1', 'other');
    expect((await s.getImage('other')).id).toBe(img.id);

    // A reference that is not the last one is only untagged.
    expect(await s.removeImage('other')).toEqual({ untagged: ['docker.io/library/other:latest'], deleted: [], deletedLayers: [] });
    await s.tagImage(img.id, 'other');
    // By id with several references: a soft conflict.
    await expect(s.removeImage(img.id)).rejects.toMatchObject({ code: 'ERR_IMAGE_IN_USE' });

    const c = await s.createContainer('base:1', { name: 'web' });
    expect(c.id).toMatch(/^[0-9a-f]{64}$/);
    expect(c.image).toBe(img.id);
    expect(await s.getContainer('web')).toEqual(c);
    expect(await s.getContainer(c.id.slice(0, 12))).toEqual(c);
    expect(await s.getContainer(`/web`)).toEqual(c);
    await expect(s.createContainer('base:1', { name: 'web' })).rejects.toMatchObject({ code: 'ERR_CONTAINER_NAME_IN_USE' });
    await expect(s.createContainer('base:1', { name: '../x' })).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
    await expect(s.getContainer('../../etc')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    await expect(s.getContainer('nope')).rejects.toMatchObject({ code: 'ERR_CONTAINER_NOT_FOUND' });
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'containers', `${c.id}.json`), 'utf8'))).toMatchObject({ id: c.id, name: 'web', image: img.id, driver: 'fake' });

    const committed = await s.commitContainer('web', { reference: 'child:1', message: 'm' });
    expect(committed.diffIds.slice(0, 1)).toEqual(img.diffIds);
    expect(committed.diffIds).toHaveLength(2);
    expect(committed.parent).toBe(img.id);
    const cfg = await s.imageConfig('child:1');
    expect(cfg.container).toBe(c.id);
    expect(cfg.history?.at(-1)).toMatchObject({ created_by: 'graphdriver commit', comment: 'm' });

    // The parent has a child image: a hard conflict, even forced.
    await expect(s.removeImage(img.id, { force: true })).rejects.toMatchObject({ code: 'ERR_IMAGE_IN_USE' });
    expect(await s.removeImage('child:1')).toMatchObject({ untagged: ['docker.io/library/child:1'], deleted: [committed.id] });
    // Containers use it: removing its last tag leaves it untagged; by id it is refused unless forced.
    await s.removeImage('other');
    expect(await s.removeImage('base:1')).toEqual({ untagged: ['docker.io/library/base:1'], deleted: [], deletedLayers: [] });
    expect((await s.getImage(img.id)).references).toEqual([]);
    await expect(s.removeImage(img.id)).rejects.toMatchObject({ code: 'ERR_IMAGE_IN_USE' });
    expect(await s.removeImage(img.id, { force: true })).toEqual({ untagged: [], deleted: [img.id], deletedLayers: [] });
    // The container still holds the layer; commit works without the image.
    expect(await s.layerReferences(img.layers[0]!)).toEqual({ handles: 0, children: 0, containers: 1 });
    const orphanCommit = await s.commitContainer(c.id);
    expect(orphanCommit.diffIds[0]).toBe(img.diffIds[0]);
    await s.removeImage(orphanCommit.id);
    await s.removeContainer('web');
    expect(await s.listLayers()).toEqual([]);
    expect(await s.listContainers()).toEqual([]);
    expect(drivers[0]!.layers.size).toBe(0);
    expect((await s.verify()).ok).toBe(true);
    await s.close();
    expect(drivers[0]!.cleaned).toBe(true);
    expect(fs.existsSync(path.join(tmp, 'graphdriver.lock'))).toBe(false);
    await expect(s.listImages()).rejects.toMatchObject({ code: 'ERR_STORE_CLOSED' });
  });

  test('one store per root: a second open is ERR_STORE_LOCKED, and the driver is not touched', async () => {
    const s = await open();
    await expect(open()).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED' });
    expect(drivers).toHaveLength(1);
    await s.close();
    const s2 = await open();
    await s2.close();
  });

  test('bad input is a typed error and changes nothing', async () => {
    const s = await open();
    await expect(s.importImage(Readable.from([tarA]), { reference: 'Bad Ref' })).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
    await expect(s.getImage('nope')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    await expect(s.createContainer('nope')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    await expect(s.getLayer('sha256:../../x')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    await expect(s.releaseLayer(`sha256:${'9'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(s.mountContainer('f'.repeat(64))).rejects.toMatchObject({ code: 'ERR_CONTAINER_NOT_FOUND' });
    expect(await s.listLayers()).toEqual([]);
    expect(drivers[0]!.layers.size).toBe(0);
    await s.close();
  });

  test('verify finds orphans and broken metadata, and repairs them', async () => {
    const s = await open();
    const img = await s.importImage(Readable.from([tarA]), { reference: 'base:1' });
    const c = await s.createContainer('base:1');
    const d = drivers[0]!;
    // A layer whose driver layer vanished (the in-memory driver has no on-disk layout: no orphan listing).
    const layer = await s.getLayer(img.layers[0]!);
    d.layers.delete(layer.cacheId);
    const r = await s.verify();
    expect(r.ok).toBe(false);
    expect(r.missingDriverLayers).toEqual([{ kind: 'layer', id: layer.chainId, driverId: layer.cacheId }]);
    const fixed = await s.verify({ repair: true });
    expect(fixed.ok).toBe(true);
    expect(fixed.repaired).toEqual(expect.arrayContaining([`image ${img.id}`, `layer ${layer.chainId}`, `container ${c.id}`]));
    expect(await s.listImages()).toEqual([]);
    expect(await s.listContainers()).toEqual([]);
    await s.close();
  });
});
