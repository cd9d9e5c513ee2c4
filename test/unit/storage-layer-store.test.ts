/**
 * The layer store's logic on an in-memory driver: chain ids, Docker's layerdb files, sharing and reference
 * counts, rollback of interrupted work at open, hashing of the whole stream, typed errors.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';

import { chainIdOf, chainIds, EMPTY_LAYER_DIFF_ID } from '../../lib/layer/digest';
import { LayerStore } from '../../lib/layer/layer-store';
import { FakeDriver } from '../support/fake-driver';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const tarA = buildTar([{ name: 'a/', type: 'dir' }, { name: 'a/file', data: 'hello' }]);
const tarB = buildTar([{ name: 'b', data: 'world' }]);
const tarC = buildTar([{ name: 'c', data: 'third' }]);

describe('LayerStore', () => {
  let tmp: string;
  let driver: FakeDriver;
  let dir: string;

  beforeEach(() => {
    tmp = makeTmp('gd-layerstore-');
    fs.mkdirSync(path.join(tmp, 'mnt'));
    driver = new FakeDriver(path.join(tmp, 'mnt'));
    dir = path.join(tmp, 'layerdb');
  });
  afterEach(() => removeTmp(tmp));

  const open = (d: FakeDriver = driver): Promise<LayerStore> => LayerStore.open({ driver: d, dir, sync: false });
  const read = (chain: string, f: string): string => fs.readFileSync(path.join(dir, 'sha256', chain.slice(7), f), 'utf8');

  test('chain ids follow the OCI rule', () => {
    const d1 = sha('one');
    const d2 = sha('two');
    expect(chainIdOf(null, d1)).toBe(d1);
    expect(chainIdOf(d1, d2)).toBe(sha(`${d1} ${d2}`));
    expect(chainIds([d1, d2, d1])).toEqual([d1, sha(`${d1} ${d2}`), sha(`${sha(`${d1} ${d2}`)} ${d1}`)]);
    expect(EMPTY_LAYER_DIFF_ID).toBe(sha(Buffer.alloc(1024)));
  });

  test('register writes Docker layerdb files and a driver layer', async () => {
    const s = await open();
    const base = await s.register(Readable.from([tarA]), null);
    expect(base.diffId).toBe(sha(tarA));
    expect(base.chainId).toBe(base.diffId);
    expect(base.parent).toBeNull();
    expect(base.existed).toBe(false);
    expect(base.cacheId).toMatch(/^[0-9a-f]{64}$/);
    expect(base.size).toBe(tarA.length);
    expect(read(base.chainId, 'diff')).toBe(base.diffId);
    expect(read(base.chainId, 'cache-id')).toBe(base.cacheId);
    expect(read(base.chainId, 'size')).toBe(String(tarA.length));
    expect(fs.existsSync(path.join(dir, 'sha256', base.chainId.slice(7), 'parent'))).toBe(false);
    expect(driver.layers.get(base.cacheId)?.data.equals(tarA)).toBe(true);

    const child = await s.register(Readable.from([tarB]), base.chainId);
    expect(child.chainId).toBe(sha(`${base.chainId} ${sha(tarB)}`));
    expect(read(child.chainId, 'parent')).toBe(base.chainId);
    expect(driver.layers.get(child.cacheId)?.parent).toBe(base.cacheId);
    expect(s.stack(child.chainId).map((l) => l.chainId)).toEqual([base.chainId, child.chainId]);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  test('compressed input: the diffID is the digest of the uncompressed tar', async () => {
    const s = await open();
    const l = await s.register(Readable.from([gzipSync(tarA)]), null);
    expect(l.diffId).toBe(sha(tarA));
    expect(driver.layers.get(l.cacheId)?.data.equals(tarA)).toBe(true);
  });

  test('a tar compressed twice is refused', async () => {
    const s = await open();
    await expect(s.register(Readable.from([gzipSync(gzipSync(tarA))]), null)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    expect(driver.layers.size).toBe(0);
    expect(s.list()).toEqual([]);
  });

  test('the digest covers bytes the driver did not read', async () => {
    driver.readLimit = 512;
    const s = await open();
    const withTail = Buffer.concat([tarA, Buffer.alloc(4096)]);
    const l = await s.register(Readable.from([withTail.subarray(0, 700), withTail.subarray(700)]), null);
    expect(l.diffId).toBe(sha(withTail));
  });

  test('registering the same chain twice shares one layer', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    const b = await s.register(Readable.from([tarA]), null);
    expect(b.existed).toBe(true);
    expect(b.cacheId).toBe(a.cacheId);
    expect(driver.layers.size).toBe(1);
    expect(s.references(a.chainId)).toEqual({ handles: 2, children: 0, containers: 0 });
    expect(await s.release(a.chainId)).toEqual([]);
    expect(await s.release(a.chainId)).toEqual([a.chainId]);
    expect(driver.layers.size).toBe(0);
    expect(fs.readdirSync(path.join(dir, 'sha256'))).toEqual([]);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  test('a layer lives while a child needs it, and goes with the child', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    const b = await s.register(Readable.from([tarB]), a.chainId);
    expect(await s.release(a.chainId)).toEqual([]);
    expect(s.has(a.chainId)).toBe(true);
    await expect(s.release(a.chainId)).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    expect(await s.release(b.chainId)).toEqual([b.chainId, a.chainId]);
    expect(s.list()).toEqual([]);
    expect(driver.layers.size).toBe(0);
  });

  test('a digest mismatch registers nothing', async () => {
    const s = await open();
    await expect(s.register(Readable.from([tarA]), null, { expectedDiffId: sha(tarB) })).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(s.list()).toEqual([]);
    expect(driver.layers.size).toBe(0);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  test('a failing apply registers nothing and keeps the error', async () => {
    const s = await open();
    driver.failApply = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    await expect(s.register(Readable.from([tarA]), null)).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(s.list()).toEqual([]);
    expect(driver.layers.size).toBe(0);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  test('an input stream that fails registers nothing', async () => {
    const s = await open();
    const bad = new Readable({
      read() {
        this.push(tarA.subarray(0, 600));
        this.destroy(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' }));
      },
    });
    await expect(s.register(bad, null)).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(s.list()).toEqual([]);
    expect(driver.layers.size).toBe(0);
  });

  test('extra metadata files are published with the layer; bad names are refused', async () => {
    const s = await open();
    const l = await s.register(Readable.from([tarA]), null, { extraFiles: async (d) => ({ 'tar-split.json.gz': `x${d}` }) });
    expect(read(l.chainId, 'tar-split.json.gz')).toBe(`x${l.diffId}`);
    await expect(s.register(Readable.from([tarB]), null, { extraFiles: async () => ({ '../evil': 'x' }) })).rejects.toThrow(/invalid layer metadata file name/);
    await expect(s.register(Readable.from([tarB]), null, { extraFiles: async () => ({ diff: 'x' }) })).rejects.toThrow(/invalid layer metadata file name/);
    expect(s.list().map((x) => x.chainId)).toEqual([l.chainId]);
  });

  test('onData sees the uncompressed stream', async () => {
    const s = await open();
    const seen: Buffer[] = [];
    await s.register(Readable.from([gzipSync(tarA)]), null, { onData: (c) => seen.push(Buffer.from(c)) });
    expect(Buffer.concat(seen).equals(tarA)).toBe(true);
  });

  test('invalid ids are typed errors, before any path is built', async () => {
    const s = await open();
    await expect(s.register(Readable.from([tarA]), 'sha256:../../etc')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    expect(() => s.get('../x')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ID' }));
    expect(() => s.get(`sha256:${'0'.repeat(64)}`)).toThrow(expect.objectContaining({ code: 'ERR_LAYER_NOT_FOUND' }));
    await expect(s.register(Readable.from([tarA]), `sha256:${'1'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(s.release(`sha256:${'2'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(s.createRWLayer('../../x', null)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    expect(driver.layers.size).toBe(0);
  });

  test('reopen recomputes references from the metadata', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    const b = await s.register(Readable.from([tarB]), a.chainId);
    const c = await s.register(Readable.from([tarC]), a.chainId);
    await s.createRWLayer('f'.repeat(64), b.chainId);
    const s2 = await open();
    expect(s2.list()).toEqual(s.list());
    expect(s2.references(a.chainId)).toEqual({ handles: 0, children: 2, containers: 0 });
    expect(s2.references(b.chainId)).toEqual({ handles: 0, children: 0, containers: 1 });
    expect(s2.unreferencedLayers()).toEqual([c.chainId]);
    expect(s2.getRWLayer('f'.repeat(64))).toEqual(s.getRWLayer('f'.repeat(64)));
    expect(await s2.pruneUnreferenced()).toEqual([c.chainId]);
    expect(s2.has(a.chainId)).toBe(true);
  });

  test('open rolls back interrupted registrations and deletions', async () => {
    const s = await open();
    const kept = await s.register(Readable.from([tarA]), null);
    // A registration that crashed after creating its driver layer: write set with the cache id.
    const ws = path.join(dir, 'tmp', 'write-set-abc');
    fs.mkdirSync(ws);
    fs.writeFileSync(path.join(ws, 'cache-id'), 'd'.repeat(64));
    await driver.create('d'.repeat(64), null);
    // A crash before the driver layer existed.
    fs.mkdirSync(path.join(dir, 'tmp', 'write-set-def'));
    fs.writeFileSync(path.join(dir, 'tmp', 'write-set-def', 'cache-id'), 'e'.repeat(64));
    // A container creation that crashed after both layers were made.
    const ms = path.join(dir, 'tmp', 'mount-set-1');
    fs.mkdirSync(ms);
    fs.writeFileSync(path.join(ms, 'mount-id'), 'm'.repeat(10));
    fs.writeFileSync(path.join(ms, 'init-id'), `${'m'.repeat(10)}-init`);
    await driver.createReadWrite(`${'m'.repeat(10)}-init`, kept.cacheId);
    await driver.createReadWrite('m'.repeat(10), `${'m'.repeat(10)}-init`);
    // A write set that must not remove a live layer even if it names it (defensive).
    fs.mkdirSync(path.join(dir, 'tmp', 'remove-x'));
    fs.writeFileSync(path.join(dir, 'tmp', 'remove-x', 'cache-id'), kept.cacheId);

    const s2 = await open();
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
    expect([...driver.layers.keys()]).toEqual([kept.cacheId]);
    expect(s2.list().map((l) => l.chainId)).toEqual([kept.chainId]);
    expect(s2.corrupt).toEqual([]);
  });

  test('metadata that does not add up is reported, not used', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    const b = await s.register(Readable.from([tarB]), a.chainId);
    fs.writeFileSync(path.join(dir, 'sha256', a.chainId.slice(7), 'diff'), sha('other'));
    fs.mkdirSync(path.join(dir, 'sha256', 'not-a-chain'));
    const s2 = await open();
    expect(s2.list()).toEqual([]);
    expect(s2.corrupt.map((c) => [path.basename(c.path), c.reason]).sort()).toEqual(
      [
        [a.chainId.slice(7), 'chain id does not match its parent and diff'],
        [b.chainId.slice(7), `parent ${a.chainId} does not exist`],
        ['not-a-chain', 'not a chain id'],
      ].sort(),
    );
  });

  test('container layers: init then rw on it, Docker mounts files, release deletes both', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    const roots: string[] = [];
    const id = 'a'.repeat(64);
    const rw = await s.createRWLayer(id, a.chainId, { init: async (root) => void roots.push(root), storageOpt: { size: '1G' } });
    expect(rw.initId).toBe(`${rw.mountId}-init`);
    expect(rw.mountId).toMatch(/^[0-9a-f]{64}$/);
    expect(driver.calls.filter((c) => c.startsWith('createReadWrite'))).toEqual([`createReadWrite ${rw.initId} ${a.cacheId}`, `createReadWrite ${rw.mountId} ${rw.initId}`]);
    expect(driver.layers.get(rw.initId)?.opts).toEqual({ storageOpt: { size: '1G' } });
    expect(roots).toEqual([path.join(driver.base, rw.initId)]);
    expect(driver.mounts.size).toBe(0);
    const m = path.join(dir, 'mounts', id);
    expect(fs.readFileSync(path.join(m, 'mount-id'), 'utf8')).toBe(rw.mountId);
    expect(fs.readFileSync(path.join(m, 'init-id'), 'utf8')).toBe(rw.initId);
    expect(fs.readFileSync(path.join(m, 'parent'), 'utf8')).toBe(a.chainId);
    expect(s.references(a.chainId).containers).toBe(1);
    await expect(s.createRWLayer(id, a.chainId)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    // The image's handle goes; the container still holds the layer.
    expect(await s.release(a.chainId)).toEqual([]);
    expect(await s.releaseRWLayer(id)).toEqual([a.chainId]);
    expect(driver.layers.size).toBe(0);
    expect(fs.readdirSync(path.join(dir, 'mounts'))).toEqual([]);
  });

  test('a failed init leaves no container layers', async () => {
    const s = await open();
    const a = await s.register(Readable.from([tarA]), null);
    await expect(
      s.createRWLayer('b'.repeat(64), a.chainId, {
        init: async () => {
          throw new Error('init failed');
        },
      }),
    ).rejects.toThrow('init failed');
    expect([...driver.layers.keys()]).toEqual([a.cacheId]);
    expect(s.listRWLayers()).toEqual([]);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
    expect(s.references(a.chainId)).toEqual({ handles: 1, children: 0, containers: 0 });
  });

  test('a mounted container layer is not released, and stays published', async () => {
    const s = await open();
    const id = 'c'.repeat(64);
    const rw = await s.createRWLayer(id, null);
    await driver.get(rw.mountId);
    await expect(s.releaseRWLayer(id)).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    expect(s.getRWLayer(id)).not.toBeNull();
    expect(fs.existsSync(path.join(dir, 'mounts', id, 'mount-id'))).toBe(true);
    await driver.put(rw.mountId);
    await s.releaseRWLayer(id);
    expect(driver.layers.size).toBe(0);
  });

  test('concurrent registrations of one chain end with one layer and two handles', async () => {
    const s = await open();
    const [x, y] = await Promise.all([s.register(Readable.from([tarA]), null), s.register(Readable.from([tarA]), null)]);
    expect(x.chainId).toBe(y.chainId);
    expect([x.existed, y.existed].sort()).toEqual([false, true]);
    expect(driver.layers.size).toBe(1);
    expect(s.references(x.chainId).handles).toBe(2);
  });
});
