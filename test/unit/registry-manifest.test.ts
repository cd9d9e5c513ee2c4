/**
 * Manifest parsing (Docker schema 2, OCI, lists and indexes; what is refused), platform normalisation and the
 * choice of an index entry, the manifests push writes, and retry helpers.
 */
import { buildImageManifest, layerCompression, MediaType, parseManifest, selectManifest, type IndexManifest } from '../../lib/registry/manifest';
import { normalizePlatform, parsePlatform, platformRank, platformString } from '../../lib/registry/platform';
import { backoffDelay, isTransientError, isTransientStatus, parseRetryAfter, retryPolicy } from '../../lib/registry/retry';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

describe('parseManifest', () => {
  const image = {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, size: 10, digest: d('a') },
    layers: [
      { mediaType: MediaType.DockerLayerGzip, size: 100, digest: d('b') },
      { mediaType: MediaType.OciLayerZstd, size: 5, digest: d('c'), annotations: { k: 'v' } },
    ],
  };

  test('image manifests: descriptors checked and kept', () => {
    const m = parseManifest(json(image));
    expect(m).toEqual({
      kind: 'image',
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, size: 10, digest: d('a') },
      layers: [
        { mediaType: MediaType.DockerLayerGzip, size: 100, digest: d('b') },
        { mediaType: MediaType.OciLayerZstd, size: 5, digest: d('c'), annotations: { k: 'v' } },
      ],
    });
  });

  test('the kind comes from mediaType, else Content-Type, else the shape', () => {
    const { mediaType: _, ...bare } = image;
    void _;
    expect(parseManifest(json(bare), `${MediaType.OciManifest}; charset=utf-8`)).toMatchObject({ kind: 'image', mediaType: MediaType.OciManifest });
    expect(parseManifest(json(bare))).toMatchObject({ kind: 'image', mediaType: MediaType.OciManifest });
    const idx = { schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, size: 1, digest: d('d'), platform: { os: 'linux', architecture: 'amd64' } }] };
    expect(parseManifest(json(idx))).toMatchObject({ kind: 'index', mediaType: MediaType.OciIndex });
    expect(parseManifest(json(idx), MediaType.DockerManifestList)).toMatchObject({ kind: 'index', mediaType: MediaType.DockerManifestList });
  });

  test.each([
    ['schema 1', { schemaVersion: 1, fsLayers: [] }, /schema 1/],
    ['not JSON', 'nope', /not JSON/],
    ['an array', [], /not a JSON object/],
    ['schemaVersion 3', { ...image, schemaVersion: 3 }, /schemaVersion/],
    ['a sha512 digest', { ...image, config: { ...image.config, digest: `sha512:${'a'.repeat(128)}` } }, /only sha256/],
    ['a negative size', { ...image, layers: [{ ...image.layers[0], size: -1 }] }, /invalid size/],
    ['an unknown layer type', { ...image, layers: [{ ...image.layers[0], mediaType: 'application/wasm' }] }, /not an image layer/],
    ['an artifact config', { ...image, config: { ...image.config, mediaType: 'application/vnd.cncf.helm.config.v1+json' } }, /not an image configuration/],
    ['an artifact manifest type', { ...image, mediaType: 'application/vnd.oci.artifact.manifest.v1+json' }, /not an image/],
    ['no layers', { schemaVersion: 2, mediaType: MediaType.OciManifest, config: image.config }, /without a layers list/],
  ])('refuses %s with ERR_UNSUPPORTED_MANIFEST', (_name, doc, msg) => {
    const bytes = typeof doc === 'string' ? Buffer.from(doc) : json(doc);
    expect(() => parseManifest(bytes)).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED_MANIFEST', message: expect.stringMatching(msg) }));
  });

  test('manifests over 4 MiB are refused', () => {
    expect(() => parseManifest(Buffer.alloc((4 << 20) + 1, 0x20))).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED_MANIFEST' }));
  });
});

describe('platforms', () => {
  test('parsing normalises aliases and variants', () => {
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('Linux/aarch64')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/armhf')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('linux/arm/7')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(platformString(normalizePlatform({ os: 'linux', architecture: 'i386' }))).toBe('linux/386');
    for (const bad of ['linux', 'linux/amd64/v1/x', 'linux//amd64', 'linux/am d64']) expect(() => parsePlatform(bad)).toThrow(TypeError);
  });

  test('ranks: exact first, default variants equal, older ARM variants run, other architectures never', () => {
    const p = (s: string): ReturnType<typeof parsePlatform> => parsePlatform(s);
    expect(platformRank(p('linux/amd64'), p('linux/amd64'))).toBe(0);
    expect(platformRank(p('linux/arm64'), { os: 'linux', architecture: 'arm64' })).toBe(0);
    expect(platformRank({ os: 'linux', architecture: 'arm64' }, p('linux/arm64/v8'))).toBe(1);
    expect(platformRank(p('linux/arm/v7'), p('linux/arm/v6'))).toBe(11);
    expect(platformRank(p('linux/arm/v6'), p('linux/arm/v7'))).toBeNull();
    expect(platformRank(p('linux/amd64'), p('linux/arm64'))).toBeNull();
    expect(platformRank(p('linux/amd64'), p('windows/amd64'))).toBeNull();
  });

  test('selectManifest picks the best entry and never attestations or platform-less entries', () => {
    const entry = (c: string, platform?: { os: string; architecture: string; variant?: string }, mediaType: string = MediaType.OciManifest): IndexManifest['manifests'][number] =>
      platform ? { mediaType, size: 1, digest: d(c), platform } : { mediaType, size: 1, digest: d(c) };
    const idx: IndexManifest = {
      kind: 'index',
      mediaType: MediaType.OciIndex,
      manifests: [
        entry('0'),
        entry('1', { os: 'unknown', architecture: 'unknown' }),
        entry('2', { os: 'linux', architecture: 'arm', variant: 'v5' }),
        entry('3', { os: 'linux', architecture: 'arm', variant: 'v6' }),
        entry('4', { os: 'linux', architecture: 'amd64' }, 'application/vnd.in-toto+json'),
        entry('5', { os: 'linux', architecture: 'amd64' }),
        entry('6', { os: 'windows', architecture: 'amd64' }),
      ],
    };
    expect(selectManifest(idx, { os: 'linux', architecture: 'amd64' })?.digest).toBe(d('5'));
    expect(selectManifest(idx, parsePlatform('linux/arm/v7'))?.digest).toBe(d('3'));
    expect(selectManifest(idx, parsePlatform('windows/amd64'))?.digest).toBe(d('6'));
    expect(selectManifest(idx, parsePlatform('linux/s390x'))).toBeNull();
  });
});

describe('manifests written by push', () => {
  test('Docker schema 2 and OCI, keys in schema order, three-space indentation', () => {
    const cfg = { mediaType: MediaType.DockerConfig, size: 7, digest: d('a') };
    const layers = [{ mediaType: MediaType.DockerLayerGzip, size: 9, digest: d('b') }];
    const bytes = buildImageManifest('docker', cfg, layers);
    const text = bytes.toString();
    expect(text.startsWith('{\n   "schemaVersion": 2,\n   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n   "config": {\n      "mediaType"')).toBe(true);
    expect(parseManifest(bytes)).toEqual({ kind: 'image', mediaType: MediaType.DockerManifest, config: cfg, layers });
    expect(parseManifest(buildImageManifest('oci', { ...cfg, mediaType: MediaType.OciConfig }, layers)).mediaType).toBe(MediaType.OciManifest);
  });

  test('layer compression from media types', () => {
    expect(layerCompression(MediaType.DockerLayerGzip)).toBe('gzip');
    expect(layerCompression(MediaType.OciLayerGzip)).toBe('gzip');
    expect(layerCompression(MediaType.OciLayerZstd)).toBe('zstd');
    expect(layerCompression(MediaType.OciLayer)).toBe('none');
  });
});

describe('retry helpers', () => {
  test('transient statuses and errors', () => {
    expect([408, 429, 500, 502, 503, 504].every(isTransientStatus)).toBe(true);
    expect([400, 401, 403, 404, 416, 501].some(isTransientStatus)).toBe(false);
    const fetchFailed = new TypeError('fetch failed', { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) });
    expect(isTransientError(fetchFailed)).toBe(true);
    expect(isTransientError(new TypeError('terminated', { cause: new Error('other side closed') }))).toBe(true);
    expect(isTransientError(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]))).toBe(true);
    expect(isTransientError(new TypeError('fetch failed', { cause: Object.assign(new Error('cert'), { code: 'CERT_HAS_EXPIRED' }) }))).toBe(false);
    expect(isTransientError(new DOMException('aborted', 'AbortError'))).toBe(false);
  });

  test('backoff doubles with jitter, honours Retry-After, and is capped', () => {
    const p = retryPolicy({ baseDelayMs: 100, maxDelayMs: 1000 });
    for (let i = 0; i < 20; i++) {
      const d1 = backoffDelay(1, p);
      expect(d1).toBeGreaterThanOrEqual(50);
      expect(d1).toBeLessThanOrEqual(150);
      expect(backoffDelay(3, p)).toBeGreaterThanOrEqual(200);
      expect(backoffDelay(30, p)).toBeLessThanOrEqual(1000);
    }
    expect(backoffDelay(1, p, 800)).toBe(800);
    expect(backoffDelay(1, p, 5000)).toBe(1000);
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString(), Date.now())).toBeGreaterThan(8000);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(() => retryPolicy({ attempts: 0 })).toThrow(TypeError);
  });
});
