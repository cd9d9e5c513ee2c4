/**
 * pushImage against the in-process fake registry, from a Storage on the in-memory driver (the layers' exact tars
 * come from a stub of LayerStore.tarStream that returns what the driver was given): monolithic and chunked
 * uploads, resume of a cut chunked upload, existing blobs skipped, cross-repository mounts, round trip through
 * pull, progress, and refusals.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';

import { registerDriver } from '../../lib/drivers/registry';
import { DistributionMetadata } from '../../lib/registry/distribution-metadata';
import { pullImage } from '../../lib/registry/pull';
import { pushImage, type PushOptions, type PushProgress, type PushSource } from '../../lib/registry/push';
import { Storage } from '../../lib/storage/storage';
import { FakeDriver } from '../support/fake-driver';
import { fakeFsBindings } from '../support/fake-fs-bindings';
import { FakeRegistry, MT, publishImage, sha } from '../support/fake-registry';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const fast = { retry: { baseDelayMs: 1, maxDelayMs: 5 } };

function layerTar(name: string, size = 1000): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i * 32 < size; i++) blocks.push(createHash('sha256').update(`${name}/${i}`).digest());
  return buildTar([
    { name: `${name}/`, type: 'dir' },
    { name: `${name}/file`, data: Buffer.concat(blocks).subarray(0, size) },
  ]);
}

interface Manifest {
  mediaType: string;
  config: { mediaType: string; digest: string; size: number };
  layers: Array<{ mediaType: string; digest: string; size: number }>;
}

describe('pushImage', () => {
  let tmp: string;
  let reg: FakeRegistry;
  let drivers: FakeDriver[];
  let storage: Storage;
  let source: PushSource;
  let tarStreams: string[];

  beforeAll(() => {
    registerDriver('fake', async (home) => {
      fs.mkdirSync(home, { recursive: true });
      const d = new FakeDriver(home);
      drivers.push(d);
      return d;
    });
  });
  beforeEach(async () => {
    tmp = makeTmp('gd-push-unit-');
    drivers = [];
    tarStreams = [];
    reg = new FakeRegistry();
    await reg.start();
    storage = await Storage.open({ root: tmp, driver: 'fake', bindings: fakeFsBindings().bindings, sync: false });
    const driver = drivers[drivers.length - 1]!;
    source = {
      layers: {
        tarStream: async (chainId: string) => {
          tarStreams.push(chainId);
          return Readable.from([driver.layers.get(storage.layerStore.get(chainId).cacheId)!.data]);
        },
      },
      images: storage.imageStore,
      spoolDir: storage.layerStore.tmpDir,
      distribution: new DistributionMetadata(`${storage.imageStore.dir}/distribution`),
    };
  });
  afterEach(async () => {
    await storage.close().catch(() => undefined);
    await reg.stop();
    removeTmp(tmp);
  });

  /** A local image made of `tars`, tagged `ref`. */
  async function localImage(ref: string, tars: Buffer[]): Promise<string> {
    let parent: string | null = null;
    const diffIds: string[] = [];
    for (const t of tars) {
      const l = await storage.registerLayer(Readable.from([t]), parent);
      // The child holds its parent from now on.
      if (parent !== null) await storage.releaseLayer(parent);
      parent = l.chainId;
      diffIds.push(l.diffId);
    }
    const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }));
    const img = await storage.createImage(cfg, { reference: ref });
    if (parent !== null) await storage.releaseLayer(parent);
    return img.id;
  }

  const manifestOf = (repo: string, tag: string): Manifest => JSON.parse(reg.manifests.get(repo)!.get(tag)!.bytes.toString('utf8')) as Manifest;
  const push = (ref: string, o: PushOptions = {}): ReturnType<typeof pushImage> => pushImage(source, ref, { ...fast, ...o });

  test('monolithic push: gzip blobs of the exact tars, config, Docker schema 2 manifest, progress', async () => {
    const tars = [layerTar('a'), layerTar('b')];
    const id = await localImage(`${reg.host}/team/app:v1`, tars);
    const events: PushProgress[] = [];
    const r = await push(`${reg.host}/team/app:v1`, { onProgress: (p) => events.push(p) });
    const m = manifestOf('team/app', 'v1');
    expect(r).toEqual({ reference: `${reg.host}/team/app:v1`, digest: sha(reg.manifests.get('team/app')!.get('v1')!.bytes), size: reg.manifests.get('team/app')!.get('v1')!.bytes.length, mediaType: MT.dockerManifest });
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.config).toEqual({ mediaType: MT.dockerConfig, size: expect.any(Number), digest: id });
    expect(m.layers.map((l) => l.mediaType)).toEqual([MT.dockerGzip, MT.dockerGzip]);
    expect(m.layers.map((l) => gunzipSync(reg.blobs.get(l.digest)!))).toEqual(tars);
    expect(m.layers.map((l) => l.size)).toEqual(m.layers.map((l) => reg.blobs.get(l.digest)!.length));
    expect(reg.requests.filter((q) => q.method === 'PATCH')).toEqual([]);
    for (let i = 0; i < 2; i++) {
      const mine = events.filter((e) => e.index === i).map((e) => e.phase);
      expect(mine[0]).toBe('waiting');
      expect(mine).toContain('pushing');
      expect(mine[mine.length - 1]).toBe('done');
    }
    // Pushing the same image again uploads nothing.
    const before = reg.requests.length;
    const again: PushProgress[] = [];
    await push(`${reg.host}/team/app:v1`, { onProgress: (p) => again.push(p) });
    expect(reg.requests.slice(before).filter((q) => q.method === 'PUT' || q.method === 'PATCH').map((q) => q.path)).toEqual(['/v2/team/app/manifests/v1']);
    expect(again.filter((e) => e.phase === 'already exists').map((e) => e.index).sort()).toEqual([0, 1]);
  });

  test('chunked upload, resumed after a connection cut mid-chunk', async () => {
    const tars = [layerTar('big', 300000)];
    await localImage(`${reg.host}/chunky:latest`, tars);
    reg.uploadCut = { after: 30000, times: 1 };
    await push(`${reg.host}/chunky:latest`, { chunkSize: 64 * 1024 });
    const m = manifestOf('chunky', 'latest');
    expect(gunzipSync(reg.blobs.get(m.layers[0]!.digest)!)).toEqual(tars[0]);
    const patches = reg.requests.filter((q) => q.method === 'PATCH');
    expect(patches.length).toBeGreaterThan(4);
    expect(patches[0]!.contentRange).toBe('0-65535');
    // After the cut, the client asked where the upload stood and went on from the byte the registry had.
    const statusAt = reg.requests.findIndex((q) => q.method === 'GET' && q.path.includes('/blobs/uploads/'));
    expect(statusAt).toBeGreaterThan(0);
    expect(reg.requests[statusAt + 1]).toMatchObject({ method: 'PATCH', contentRange: expect.stringMatching(/^30000-/) });
  });

  test('layers known from a pull are mounted from their repository, or skipped where they already are', async () => {
    const tars = [layerTar('m1'), layerTar('m2')];
    const pub = publishImage(reg, 'library-src/base', 'latest', tars);
    await storage.pullImage(`${reg.host}/library-src/base`, fast);
    const events: PushProgress[] = [];
    await push(`${reg.host}/other/copy:1`, { image: `${reg.host}/library-src/base`, onProgress: (p) => events.push(p) });
    // Layers go concurrently: events of different layers come in any order.
    expect(events.filter((e) => e.phase === 'mounted').sort((a, b) => a.index - b.index)).toEqual([
      expect.objectContaining({ index: 0, digest: pub.blobDigests[0], from: `${reg.host}/library-src/base` }),
      expect.objectContaining({ index: 1, digest: pub.blobDigests[1], from: `${reg.host}/library-src/base` }),
    ]);
    // The original blobs (digests of the pull) are in the new manifest; nothing was compressed or uploaded.
    expect(manifestOf('other/copy', '1').layers.map((l) => l.digest)).toEqual(pub.blobDigests);
    expect(tarStreams).toEqual([]);
    expect(reg.requests.filter((q) => q.method === 'POST' && q.path.includes('mount=')).map((q) => q.status)).toEqual([201, 201]);
    // The same tag again: every blob is already there.
    const again: PushProgress[] = [];
    await push(`${reg.host}/other/copy:1`, { image: `${reg.host}/library-src/base`, onProgress: (p) => again.push(p) });
    expect(again.filter((e) => e.phase === 'already exists').map((e) => e.index).sort()).toEqual([0, 1]);
  });

  test('a pushed image pulls back into another store as the same image', async () => {
    const tars = [layerTar('r1'), layerTar('r2'), layerTar('r3')];
    const id = await localImage(`${reg.host}/round:trip`, tars);
    await push(`${reg.host}/round:trip`, { format: 'oci' });
    expect(manifestOf('round', 'trip').mediaType).toBe(MT.ociManifest);
    expect(manifestOf('round', 'trip').layers.map((l) => l.mediaType)).toEqual([MT.ociGzip, MT.ociGzip, MT.ociGzip]);
    await storage.removeImage(id);
    expect(await storage.listLayers()).toEqual([]);
    const r = await pullImage({ layers: storage.layerStore, images: storage.imageStore, spoolDir: storage.layerStore.tmpDir }, `${reg.host}/round:trip`, fast);
    expect(r.image.id).toBe(id);
    expect(r.digest).toBe(sha(reg.manifests.get('round')!.get('trip')!.bytes));
  });

  test('the same layer twice in an image is uploaded once', async () => {
    const t = layerTar('dup');
    // A layer whose tar repeats lower down (e.g. an empty layer) is a different chain with the same diffID.
    await localImage(`${reg.host}/dup:x`, [t, layerTar('mid'), t]);
    await push(`${reg.host}/dup:x`);
    const m = manifestOf('dup', 'x');
    expect(m.layers[0]!.digest).toBe(m.layers[2]!.digest);
    expect(tarStreams).toHaveLength(2);
  });

  test('bearer auth with credentials for push; anonymous tokens cannot push', async () => {
    await reg.stop();
    reg = new FakeRegistry({ auth: 'bearer', users: { alice: 'secret' }, anonymousPull: ['*'] });
    await reg.start();
    await localImage(`${reg.host}/private/app:1`, [layerTar('p1')]);
    await expect(push(`${reg.host}/private/app:1`)).rejects.toMatchObject({ code: 'ERR_REGISTRY_AUTH' });
    await push(`${reg.host}/private/app:1`, { credentials: { username: 'alice', password: 'secret' } });
    expect(manifestOf('private/app', '1').layers).toHaveLength(1);
    // Tokens are reused for the requests of the push (one per scope set, not one per request).
    expect(reg.tokenRequests).toBeLessThan(6);
  });

  test('a registry that computes another digest fails the push with ERR_DIGEST_MISMATCH', async () => {
    await localImage(`${reg.host}/bad:1`, [layerTar('b1')]);
    reg.corruptUploads = true;
    await expect(push(`${reg.host}/bad:1`)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(reg.manifests.get('bad')).toBeUndefined();
    // Other refusals keep the registry's words.
    reg.corruptUploads = false;
    reg.fail(/\/blobs\/uploads\/[0-9a-f]+$/, 400, 1, { method: 'PUT' });
    await expect(push(`${reg.host}/bad:1`)).rejects.toMatchObject({ code: 'ERR_REGISTRY', status: 400, message: expect.stringContaining('injected fault') });
  });

  test('refusals: digest references, unknown images, a layer whose tar does not match its diffID', async () => {
    await expect(push(`${reg.host}/x@sha256:${'a'.repeat(64)}`)).rejects.toMatchObject({ code: 'ERR_INVALID_REFERENCE' });
    await expect(push(`${reg.host}/nope:1`)).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    await localImage(`${reg.host}/tampered:1`, [layerTar('t1')]);
    const tampered: PushSource = {
      ...source,
      layers: {
        tarStream: async () => {
          const { DigestMismatchError } = await import('../../lib/storage/errors');
          return Readable.from(
            (async function* () {
              yield layerTar('other');
              throw new DigestMismatchError('sha256:x', 'sha256:y', 'tar of layer');
            })(),
          );
        },
      },
    };
    await expect(pushImage(tampered, `${reg.host}/tampered:1`, fast)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(reg.manifests.get('tampered')).toBeUndefined();
    expect(fs.readdirSync(storage.layerStore.tmpDir)).toEqual([]);
  });

  test('Storage.pushImage reports the manifest through onPushed', async () => {
    // Storage's own tarStream needs the real layer files; here only the wrapper's plumbing is checked.
    await localImage(`${reg.host}/wrap:1`, [layerTar('w')]);
    (storage.layerStore as unknown as { tarStream: PushSource['layers']['tarStream'] }).tarStream = source.layers.tarStream;
    const seen: string[] = [];
    await storage.pushImage(`${reg.host}/wrap:1`, { ...fast, onPushed: (r) => seen.push(r.digest) });
    expect(seen).toEqual([sha(reg.manifests.get('wrap')!.get('1')!.bytes)]);
  });
});
