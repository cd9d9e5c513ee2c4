/**
 * Every `graphdriver` command in-process against a recording fake store: what is asked of the store, what is
 * printed for people and under --json, progress on stderr, partial failures, Ctrl-C, and the error path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';

import { ChangeKind, type Change } from '../../lib/archive/change';
import type { Container } from '../../lib/container/container-store';
import { NotMountedError, NotSupportedError } from '../../lib/drivers/errors';
import type { Image } from '../../lib/image/image-store';
import { normalizeReference } from '../../lib/image/reference';
import type { Layer } from '../../lib/layer/layer-store';
import type { CliContext, CliStorage } from '../../lib/cli/context';
import type { LoadImageOptions } from '../../lib/image/load';
import type { SaveImageOptions } from '../../lib/image/save';
import type { PullOptions } from '../../lib/registry/pull';
import type { PushOptions } from '../../lib/registry/push';
import { run } from '../../lib/cli/main';
import { ContainerNotFoundError, ImageNotFoundError } from '../../lib/storage/errors';
import type { CommitOptions, CreateContainerOptions, ImportImageOptions, RemoveImageOptions, RemoveImageResult } from '../../lib/storage/storage';
import { FakeDriver } from '../support/fake-driver';
import { makeTmp, removeTmp } from '../support/tmp';

const NOW = new Date('2024-01-01T12:00:00Z');
const hex = (c: string): string => c.repeat(64);
const IMG1: Image = {
  id: `sha256:${hex('1')}`,
  references: ['docker.io/library/busybox:latest', 'localhost:5000/tools/bb:1'],
  layers: [`sha256:${hex('a')}`],
  diffIds: [`sha256:${hex('a')}`],
  size: 4_260_000,
  created: '2024-01-01T09:00:00Z',
};
const IMG2: Image = {
  id: `sha256:${hex('2')}`,
  references: [],
  layers: [`sha256:${hex('a')}`, `sha256:${hex('b')}`],
  diffIds: [`sha256:${hex('a')}`, `sha256:${hex('c')}`],
  size: 4_270_000,
  created: '2024-01-01T11:59:00Z',
  parent: IMG1.id,
};
const LAYERS: Layer[] = [
  { chainId: `sha256:${hex('b')}`, diffId: `sha256:${hex('c')}`, parent: `sha256:${hex('a')}`, cacheId: hex('d'), size: 10_000 },
  { chainId: `sha256:${hex('a')}`, diffId: `sha256:${hex('a')}`, parent: null, cacheId: hex('e'), size: 4_260_000 },
];
const C1: Container = { id: hex('f'), name: 'web', image: IMG1.id, mountId: hex('9'), initId: `${hex('9')}-init`, created: '2024-01-01T11:00:00Z', layer: LAYERS[1]!.chainId };
const C2: Container = { id: hex('8'), image: `sha256:${hex('7')}`, mountId: hex('6'), initId: `${hex('6')}-init`, created: '2024-01-01T11:30:00Z' };

/** A store that records what it is asked and answers from fixed data. */
class FakeStore {
  readonly calls: Array<[string, ...unknown[]]> = [];
  readonly root = '/store';
  readonly driver: FakeDriver;
  images: Image[] = [IMG1, IMG2].map((i) => ({ ...i, references: [...i.references] }));
  containers: Container[] = [C1, C2];
  changes: Change[] = [
    { path: '/etc', kind: ChangeKind.Modify },
    { path: '/etc/motd', kind: ChangeKind.Delete },
    { path: '/new', kind: ChangeKind.Add },
  ];
  notMounted = false;

  constructor(base: string) {
    this.driver = new FakeDriver(base);
  }

  private image(ref: string): Image {
    let name: string | null = null;
    try {
      name = normalizeReference(ref);
    } catch {
      name = null;
    }
    const img = this.images.find((i) => i.id === ref || i.id.startsWith(`sha256:${ref}`) || (name !== null && i.references.includes(name)));
    if (img === undefined) throw new ImageNotFoundError(ref);
    return img;
  }

  private container(ref: string): Container {
    const c = this.containers.find((x) => x.id.startsWith(ref) || x.name === ref);
    if (c === undefined) throw new ContainerNotFoundError(ref);
    return c;
  }

  async listImages(): Promise<Image[]> {
    return this.images;
  }
  async getImage(ref: string): Promise<Image> {
    return this.image(ref);
  }
  async importImage(src: string | Readable, opts?: ImportImageOptions): Promise<Image> {
    let content: string = typeof src === 'string' ? `file:${src}` : '';
    if (typeof src !== 'string') for await (const c of src) content += (c as Buffer).toString();
    this.calls.push(['importImage', content, opts]);
    return IMG2;
  }
  async tagImage(src: string, ref: string): Promise<string> {
    this.calls.push(['tagImage', src, ref]);
    this.image(src).references.push(ref);
    return ref;
  }
  async removeImage(ref: string, opts?: RemoveImageOptions): Promise<RemoveImageResult> {
    this.calls.push(['removeImage', ref, opts]);
    const img = this.image(ref);
    return { untagged: img.references, deleted: [img.id], deletedLayers: [] };
  }
  async listLayers(): Promise<Layer[]> {
    return LAYERS;
  }
  async createContainer(image: string, opts?: CreateContainerOptions): Promise<Container> {
    this.calls.push(['createContainer', image, opts]);
    this.image(image);
    return C1;
  }
  async getContainer(ref: string): Promise<Container> {
    return this.container(ref);
  }
  async listContainers(): Promise<Container[]> {
    return this.containers;
  }
  async mountContainer(id: string): Promise<string> {
    this.calls.push(['mountContainer', id]);
    return `/store/fake/${this.container(id).mountId}/merged`;
  }
  async unmountContainer(id: string): Promise<void> {
    this.calls.push(['unmountContainer', id]);
    if (this.notMounted) throw new NotMountedError(this.container(id).mountId);
  }
  async containerChanges(id: string): Promise<Change[]> {
    this.container(id);
    return this.changes;
  }
  async exportContainerDiff(id: string): Promise<Readable> {
    this.container(id);
    return Readable.from([Buffer.from('TAR-'), Buffer.from(id.slice(0, 4))]);
  }
  async commitContainer(id: string, opts?: CommitOptions): Promise<Image> {
    this.calls.push(['commitContainer', id, opts]);
    this.container(id);
    return IMG2;
  }
  async removeContainer(id: string): Promise<void> {
    this.calls.push(['removeContainer', id]);
    this.container(id);
  }
}

/** The fake with the transfer methods. */
class FakeStoreWithTransfer extends FakeStore {
  async pullImage(ref: string, opts?: PullOptions): Promise<Image> {
    const { onProgress, onResolved, signal, ...rest } = opts ?? {};
    this.calls.push(['pullImage', ref, { ...rest, onProgress: typeof onProgress, onResolved: typeof onResolved, aborted: signal?.aborted }]);
    const digest = `sha256:${hex('5')}`;
    onResolved?.({ reference: ref, digest, manifestDigest: digest, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    const layer = (c: string, phase: 'waiting' | 'downloading' | 'done' | 'already exists', bytes: number, total: number) =>
      onProgress?.({ id: c.repeat(12), index: 0, digest: `sha256:${hex(c)}`, phase, bytes, total });
    layer('3', 'waiting', 0, 100);
    layer('3', 'downloading', 100, 100);
    layer('3', 'done', 100, 100);
    layer('4', 'already exists', 0, 0);
    return { ...IMG1, references: [ref] };
  }
  async pushImage(ref: string, opts?: PushOptions): Promise<void> {
    this.calls.push(['pushImage', ref, { insecure: opts?.insecure, credentials: opts?.credentials, image: opts?.image }]);
    if (opts?.signal !== undefined) {
      // Waits for Ctrl-C, as a long upload would.
      await new Promise<void>((resolve, reject) => {
        if (opts.signal!.aborted) reject(Object.assign(new Error('The operation was aborted'), { code: 'ABORT_ERR' }));
        opts.signal!.addEventListener('abort', () => reject(Object.assign(new Error('The operation was aborted'), { code: 'ABORT_ERR' })));
        setTimeout(resolve, 50);
      });
    }
    opts?.onPushed?.({ reference: ref, digest: `sha256:${hex('6')}`, size: 528, mediaType: 'application/vnd.docker.distribution.manifest.v2+json' });
  }
  async loadImage(src: string | Readable, opts?: LoadImageOptions): Promise<Image[]> {
    let n = 0;
    if (typeof src !== 'string') for await (const c of src) n += (c as Buffer).length;
    this.calls.push(['loadImage', typeof src === 'string' ? src : `stream:${n}`]);
    opts?.onProgress?.({ id: `sha256:${hex('a')}`, phase: 'extracting', bytes: 10, total: 10 });
    return [IMG1, IMG2];
  }
  async saveImage(refs: string | string[], dest: string | Writable, opts?: SaveImageOptions): Promise<void> {
    this.calls.push(['saveImage', refs, typeof dest === 'string' ? path.basename(dest).startsWith('.') : 'stream', opts?.format]);
    if (typeof dest === 'string') await fs.promises.writeFile(dest, 'SAVED');
    else await new Promise<void>((resolve) => dest.end('SAVED', resolve));
  }
}

interface Harness {
  store: FakeStore;
  ctx: Partial<CliContext>;
  out(): string;
  err(): string;
  interrupt(): void;
  stdin: PassThrough & { isTTY?: boolean };
}

let tmp: string;
beforeEach(() => (tmp = makeTmp('gd-cli-unit-')));
afterEach(() => removeTmp(tmp));

function harness(store: FakeStore = new FakeStoreWithTransfer(tmp), opts: { stdinTTY?: boolean; stderrTTY?: boolean } = {}): Harness {
  const stdout = new PassThrough();
  const stderr = Object.assign(new PassThrough(), { isTTY: opts.stderrTTY ?? false });
  const stdin = Object.assign(new PassThrough(), { isTTY: opts.stdinTTY ?? true });
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const interrupts: Array<() => void> = [];
  const ctx: Partial<CliContext> = {
    env: {},
    uid: 0,
    home: '/root',
    cwd: tmp,
    io: { stdin, stdout, stderr },
    openStorage: async () => store as unknown as CliStorage,
    probeDrivers: async () => ['overlay2', 'vfs'],
    now: () => NOW,
    onInterrupt: (cb) => {
      interrupts.push(cb);
      return () => interrupts.splice(interrupts.indexOf(cb), 1);
    },
  };
  return { store, ctx, out: () => out, err: () => err, interrupt: () => interrupts.forEach((f) => f()), stdin };
}

describe('images', () => {
  test('a table row per reference, untagged images as <none>, newest first', async () => {
    const h = harness();
    expect(await run(['images'], h.ctx)).toBe(0);
    const lines = h.out().trimEnd().split('\n');
    expect(lines.map((l) => l.split(/ {3,}/))).toEqual([
      ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'],
      ['<none>', '<none>', '222222222222', 'About a minute ago', '4.27MB'],
      ['busybox', 'latest', '111111111111', '3 hours ago', '4.26MB'],
      ['localhost:5000/tools/bb', '1', '111111111111', '3 hours ago', '4.26MB'],
    ]);
    // Columns start at the same offset on every line.
    const col = lines[0]!.indexOf('IMAGE ID');
    for (const l of lines.slice(1)) expect(l.slice(col, col + 12)).toMatch(/^[0-9a-f]{12}$/);
  });

  test('filter by repository, ids only, full ids, JSON', async () => {
    let h = harness();
    expect(await run(['images', 'busybox'], h.ctx)).toBe(0);
    expect(h.out().trimEnd().split('\n')).toHaveLength(2);
    expect(h.out()).toMatch(/\nbusybox +latest +111111111111 /);
    h = harness();
    expect(await run(['images', 'busybox:other'], h.ctx)).toBe(0);
    expect(h.out()).toBe('REPOSITORY   TAG   IMAGE ID   CREATED   SIZE\n');
    h = harness();
    expect(await run(['images', '-q'], h.ctx)).toBe(0);
    expect(h.out()).toBe('222222222222\n111111111111\n');
    h = harness();
    expect(await run(['images', '-q', '--no-trunc'], h.ctx)).toBe(0);
    expect(h.out()).toBe(`${IMG2.id}\n${IMG1.id}\n`);
    h = harness();
    expect(await run(['images', '--json'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual([IMG2, IMG1]);
    h = harness();
    expect(await run(['images', '--json', '-q'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual([IMG2.id, IMG1.id]);
  });
});

describe('import, tag, rmi', () => {
  test('import from a file: reference normalised, platform and message passed, the id printed', async () => {
    const h = harness();
    expect(await run(['import', '-m', 'hello', '--platform', 'linux/arm64/v8', 'rootfs.tar', 'myimg:1'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([
      ['importImage', `file:${path.join(tmp, 'rootfs.tar')}`, { reference: 'docker.io/library/myimg:1', message: 'hello', os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ]);
    expect(h.out()).toBe(`${IMG2.id}\n`);
  });

  test('import from stdin with -', async () => {
    const h = harness(undefined, { stdinTTY: false });
    h.stdin.end('tar bytes');
    expect(await run(['--json', 'import', '-'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['importImage', 'tar bytes', {}]]);
    expect(JSON.parse(h.out())).toEqual(IMG2);
  });

  test('tag prints nothing; --json says what the reference now points at', async () => {
    let h = harness();
    expect(await run(['tag', 'busybox', 'me/bb:2'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['tagImage', 'busybox', 'docker.io/me/bb:2']]);
    expect(h.out()).toBe('');
    h = harness();
    expect(await run(['tag', '--json', 'busybox', 'me/bb:2'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual({ reference: 'docker.io/me/bb:2', id: IMG1.id });
  });

  test('rmi goes on after a failure, prints Docker’s lines, and exits 1', async () => {
    const h = harness();
    expect(await run(['rmi', '-f', '--no-prune', 'busybox', 'nope', '2222'], h.ctx)).toBe(1);
    expect(h.store.calls.map((c) => c.slice(0, 3))).toEqual([
      ['removeImage', 'busybox', { force: true, prune: false }],
      ['removeImage', 'nope', { force: true, prune: false }],
      ['removeImage', '2222', { force: true, prune: false }],
    ]);
    expect(h.out()).toBe(
      ['Untagged: busybox:latest', 'Untagged: localhost:5000/tools/bb:1', `Deleted: ${IMG1.id}`, `Deleted: ${IMG2.id}`, ''].join('\n'),
    );
    expect(h.err()).toBe('graphdriver: error: no such image: "nope"\nhint: `graphdriver images` lists the images; `graphdriver pull`, `load` or `import` adds one\n');
  });

  test('rmi --json: one merged result on stdout, each error as JSON on stderr', async () => {
    const h = harness();
    expect(await run(['rmi', '--json', 'busybox', 'nope'], h.ctx)).toBe(1);
    expect(h.store.calls[0]).toEqual(['removeImage', 'busybox', { force: false, prune: true }]);
    expect(JSON.parse(h.out())).toEqual({ untagged: IMG1.references, deleted: [IMG1.id], deletedLayers: [] });
    expect(JSON.parse(h.err())).toEqual({ error: expect.objectContaining({ code: 'ERR_IMAGE_NOT_FOUND', exitCode: 1 }) });
  });
});

describe('layers and info', () => {
  test('layers: parents before children', async () => {
    const h = harness();
    expect(await run(['layers'], h.ctx)).toBe(0);
    expect(h.out().trimEnd().split('\n').map((l) => l.split(/ {3,}/))).toEqual([
      ['CHAIN ID', 'DIFF ID', 'PARENT', 'CACHE ID', 'SIZE'],
      ['aaaaaaaaaaaa', 'aaaaaaaaaaaa', '<none>', 'eeeeeeeeeeee', '4.26MB'],
      ['bbbbbbbbbbbb', 'cccccccccccc', 'aaaaaaaaaaaa', 'dddddddddddd', '10kB'],
    ]);
    const j = harness();
    expect(await run(['layers', '--json'], j.ctx)).toBe(0);
    expect(JSON.parse(j.out())).toEqual([LAYERS[1], LAYERS[0]]);
  });

  test('info: root, driver, status pairs, counts', async () => {
    const h = harness();
    expect(await run(['info'], h.ctx)).toBe(0);
    expect(h.out()).toBe('Root: /store\nStorage Driver: fake\n Layers: 0\nImages: 2\nLayers: 2\nContainers: 2\n');
  });
});

describe('containers', () => {
  test('create passes the name, per-container options and label, and prints the id', async () => {
    const h = harness();
    expect(await run(['create', '--name', 'web', '--opt', 'size=10G', '--opt', 'x=1', '--mount-label', 'l', 'busybox'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['createContainer', 'busybox', { name: 'web', storageOpt: { size: '10G', x: '1' }, mountLabel: 'l' }]]);
    expect(h.out()).toBe(`${C1.id}\n`);
  });

  test('mount prints the path; unmount of something not mounted is fine', async () => {
    let h = harness();
    expect(await run(['mount', 'web'], h.ctx)).toBe(0);
    expect(h.out()).toBe(`/store/fake/${C1.mountId}/merged\n`);
    h = harness();
    expect(await run(['mount', '--json', 'web'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual({ id: C1.id, path: `/store/fake/${C1.mountId}/merged` });
    h = harness();
    h.store.notMounted = true;
    expect(await run(['umount', '--json', 'web'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual({ id: C1.id, unmounted: false });
    expect(h.store.calls).toEqual([['unmountContainer', C1.id]]);
  });

  test('changes: exact Docker lines, and JSON', async () => {
    let h = harness();
    expect(await run(['changes', 'web'], h.ctx)).toBe(0);
    expect(h.out()).toBe('C /etc\nD /etc/motd\nA /new\n');
    h = harness();
    expect(await run(['changes', 'web', '--json'], h.ctx)).toBe(0);
    expect(JSON.parse(h.out())).toEqual([
      { path: '/etc', kind: 'C' },
      { path: '/etc/motd', kind: 'D' },
      { path: '/new', kind: 'A' },
    ]);
  });

  test('diff to stdout and to a file (written through a temp file)', async () => {
    let h = harness();
    expect(await run(['diff', 'web'], h.ctx)).toBe(0);
    expect(h.out()).toBe('TAR-ffff');
    h = harness();
    expect(await run(['diff', '--json', '-o', 'out.tar', 'web'], h.ctx)).toBe(0);
    expect(fs.readFileSync(path.join(tmp, 'out.tar'), 'utf8')).toBe('TAR-ffff');
    expect(JSON.parse(h.out())).toEqual({ id: C1.id, output: 'out.tar', bytes: 8 });
    expect(fs.readdirSync(tmp)).toEqual(['out.tar']);
  });

  test('diff of an unknown container leaves no file behind', async () => {
    const h = harness();
    expect(await run(['diff', '-o', 'out.tar', 'nope'], h.ctx)).toBe(1);
    expect(h.err()).toMatch(/no such container: "nope"\nhint: `graphdriver ps` lists the containers/);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  test('commit passes reference, message and author', async () => {
    const h = harness();
    expect(await run(['commit', '-m', 'msg', '-a', 'me', 'web', 'snap:1'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['commitContainer', 'web', { reference: 'docker.io/library/snap:1', message: 'msg', author: 'me' }]]);
    expect(h.out()).toBe(`${IMG2.id}\n`);
  });

  test('rm echoes each argument, reports the unknown one, exits 1', async () => {
    const h = harness();
    expect(await run(['rm', 'web', 'nope', '8888'], h.ctx)).toBe(1);
    expect(h.store.calls).toEqual([
      ['removeContainer', C1.id],
      ['removeContainer', C2.id],
    ]);
    expect(h.out()).toBe('web\n8888\n');
    expect(h.err()).toMatch(/^graphdriver: error: no such container: "nope"/);
    const j = harness();
    expect(await run(['rm', '--json', 'web'], j.ctx)).toBe(0);
    expect(JSON.parse(j.out())).toEqual([C1.id]);
  });

  test('ps: newest first, image by reference or short id, names', async () => {
    const h = harness();
    expect(await run(['ps'], h.ctx)).toBe(0);
    expect(h.out().trimEnd().split('\n').map((l) => l.split(/ {3,}/))).toEqual([
      ['CONTAINER ID', 'IMAGE', 'CREATED', 'NAMES'],
      ['888888888888', '777777777777', '30 minutes ago'],
      ['ffffffffffff', 'busybox:latest', 'About an hour ago', 'web'],
    ]);
    const q = harness();
    expect(await run(['ps', '-q', '--no-trunc'], q.ctx)).toBe(0);
    expect(q.out()).toBe(`${C2.id}\n${C1.id}\n`);
  });
});

describe('transfers', () => {
  test('pull: plain progress lines on stderr when it is not a terminal, the reference on stdout', async () => {
    const h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['pull', '--platform', 'linux/arm64', '--insecure', 'localhost:5000/app'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([
      ['pullImage', 'localhost:5000/app:latest', { platform: 'linux/arm64', insecure: true, onProgress: 'function', onResolved: 'function', aborted: false }],
    ]);
    expect(h.out()).toBe('localhost:5000/app:latest\n');
    expect(h.err()).toBe(
      [
        '333333333333: waiting 0/100',
        '333333333333: downloading 100/100',
        '333333333333: done 100/100',
        '444444444444: already exists 0/0',
        `Digest: sha256:${hex('5')}`,
        `Status: pulled localhost:5000/app:latest (image ${IMG1.id})`,
        '',
      ].join('\n'),
    );
  });

  test('pull --json and -q print no progress', async () => {
    let h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['pull', '--json', 'busybox'], h.ctx)).toBe(0);
    expect(h.err()).toBe('');
    expect(JSON.parse(h.out())).toEqual({ ...IMG1, references: ['docker.io/library/busybox:latest'] });
    h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['pull', '-q', 'busybox'], h.ctx)).toBe(0);
    expect(h.err()).toBe('');
    expect(h.out()).toBe('docker.io/library/busybox:latest\n');
  });

  test('push with credentials from stdin; Ctrl-C aborts it', async () => {
    const h = harness(new FakeStoreWithTransfer(tmp), { stdinTTY: false });
    h.stdin.end('s3cret\n');
    const done = run(['push', '-u', 'me', '--password-stdin', 'localhost:5000/app:1'], h.ctx);
    await new Promise((r) => setTimeout(r, 10));
    h.interrupt();
    expect(await done).toBe(1);
    expect(h.store.calls).toEqual([['pushImage', 'localhost:5000/app:1', { insecure: undefined, credentials: { username: 'me', password: 's3cret' }, image: undefined }]]);
    expect(h.err()).toBe('graphdriver: error: interrupted\n');
    const u = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['push', '-u', 'me', 'x'], u.ctx)).toBe(2);
    expect(u.err()).toMatch(/--username and --password-stdin go together/);
  });

  test('push prints Docker’s digest line and the reference when done; --image pushes another local image', async () => {
    const h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['push', '--insecure', '--image', 'busybox', 'localhost:5000/app:1'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['pushImage', 'localhost:5000/app:1', { insecure: true, credentials: undefined, image: 'busybox' }]]);
    expect(h.out()).toBe('localhost:5000/app:1\n');
    expect(h.err()).toBe(`localhost:5000/app:1: digest: sha256:${hex('6')} size: 528\n`);
    const j = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['push', '--json', 'localhost:5000/app:1'], j.ctx)).toBe(0);
    expect(JSON.parse(j.out())).toEqual({ reference: 'localhost:5000/app:1', digest: `sha256:${hex('6')}`, size: 528 });
    expect(j.err()).toBe('');
  });

  test('load from stdin: bytes read and the loader’s progress as plain lines, Docker’s result lines', async () => {
    const h = harness(new FakeStoreWithTransfer(tmp), { stdinTTY: false });
    h.stdin.end(Buffer.alloc(3000));
    expect(await run(['load'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['loadImage', 'stream:3000']]);
    expect(h.err()).toBe('stdin: reading 3000/?\naaaaaaaaaaaa: extracting 10/10\n');
    expect(h.out()).toBe(`Loaded image: busybox:latest\nLoaded image: localhost:5000/tools/bb:1\nLoaded image ID: ${IMG2.id}\n`);
  });

  test('load -i passes the file path; -q hides progress; --json lists the images', async () => {
    const h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['load', '-q', '--json', '-i', 'images.tar'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['loadImage', path.join(tmp, 'images.tar')]]);
    expect(h.err()).toBe('');
    expect(JSON.parse(h.out())).toEqual([IMG1, IMG2]);
  });

  test('save to stdout and to a file', async () => {
    let h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['save', 'busybox', 'other'], h.ctx)).toBe(0);
    expect(h.out()).toBe('SAVED');
    expect(h.store.calls).toEqual([['saveImage', ['busybox', 'other'], 'stream', 'docker']]);
    h = harness(new FakeStoreWithTransfer(tmp));
    expect(await run(['save', '--format', 'oci', '-o', 'x.tar', 'busybox'], h.ctx)).toBe(0);
    expect(h.store.calls).toEqual([['saveImage', ['busybox'], true, 'oci']]);
    expect(fs.readFileSync(path.join(tmp, 'x.tar'), 'utf8')).toBe('SAVED');
    expect(fs.readdirSync(tmp)).toEqual(['x.tar']);
  });
});

describe('store failures', () => {
  test('an unsupported driver: the message lists the drivers that work with this root', async () => {
    const h = harness();
    h.ctx.openStorage = async () => {
      throw new NotSupportedError('btrfs: /store is not on a btrfs filesystem');
    };
    expect(await run(['--root', '/store', '--driver', 'btrfs', 'images'], h.ctx)).toBe(1);
    expect(h.err()).toBe(
      'graphdriver: error: the storage driver "btrfs" cannot run here: btrfs: /store is not on a btrfs filesystem\n' +
        'hint: drivers that work with the root /store: overlay2, vfs; choose one with --driver overlay2\n',
    );
  });

  test('the store is not opened when nothing needs it', async () => {
    const h = harness();
    let opened = 0;
    h.ctx.openStorage = async () => {
      opened++;
      throw new Error('not expected');
    };
    expect(await run(['tag', 'a', 'B'], h.ctx)).toBe(2);
    expect(opened).toBe(0);
  });

  test('a closed stdout reader ends the command quietly', async () => {
    const h = harness();
    const epipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    h.ctx.io = { ...h.ctx.io!, stdout: new (class extends PassThrough {
      override _write(_c: unknown, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
        cb(epipe);
      }
    })() };
    expect(await run(['images'], h.ctx)).toBe(0);
    expect(h.err()).toBe('');
  });
});
