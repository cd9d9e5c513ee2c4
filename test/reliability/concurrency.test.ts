/**
 * Concurrency (issue 11 item 4).
 *
 * In one process, on overlay2 and vfs: 64 container creations at once on one image (shared parent layers), 128
 * mounts at once (two per container), writes, 128 unmounts, 64 commits at once (64 child layers registered on
 * the same parent), then creations, mounts, commits and removals interleaved, and finally everything removed at
 * once. Reference counts are checked at each step (layerReferences: handles, children, containers), and so is the
 * mount table (one overlay per mounted container, none after the last unmount). The same layer registered 16
 * times at once is stored once. Nothing may fail with EBUSY, and at the end the store is empty, verify() clean,
 * nothing is mounted below the root and no loop device is attached for it.
 *
 * Across processes (transpiled lib/, test/reliability/child/lock-child.ts): a second process gets
 * ERR_STORE_LOCKED or waits for the lock as asked; three processes importing into one root in turns lose no
 * update (every image and reference of every round is there); two processes racing to take over a stale lock
 * (its holder died) never both get it.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';

import { listDriverLayers } from '../../lib/layer/driver-layers';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
import { CHILD_ENV, CLEAN_REPORT, loopDevicesBelow, mountsBelow, problems, transpileLib, unmountAll } from './helpers';

const execFileP = promisify(execFile);
const N = 64;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

const overlayReason = !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'the kernel has no overlay' : null;
const vfsReason = !isRoot ? 'needs root (ownership in the layers)' : null;

/** Errors of a batch of concurrent operations, with their codes (none expected). */
async function all<T>(ps: Array<Promise<T>>): Promise<T[]> {
  const settled = await Promise.allSettled(ps);
  const failed = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    const codes = failed.map((f) => `${(f.reason as { code?: unknown }).code ?? ''} ${(f.reason as Error).message}`);
    throw new Error(`${failed.length} of ${ps.length} concurrent operations failed:\n${[...new Set(codes)].join('\n')}`);
  }
  return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
}

for (const [driverName, reason] of [
  ['overlay2', overlayReason],
  ['vfs', vfsReason],
] as const) {
  describeIf(reason, `${N} concurrent operations in one process (${driverName})`, () => {
    let tmp: string;
    let root: string;
    let s: Storage | null = null;

    beforeAll(() => {
      tmp = makeTmp(`gd-conc-${driverName}-`);
      root = path.join(tmp, 'store');
    });
    afterEach(async () => {
      // A failed test must not leave the store locked for the next one.
      await s?.close().catch(() => undefined);
      s = null;
    });
    afterAll(async () => {
      await unmountAll(tmp);
      removeTmp(tmp);
    });

    /** Overlay mounts of the store (vfs mounts nothing). */
    const overlayMounts = (): string[] => mountsBelow(root).filter((m) => m.endsWith('/merged'));

    test('creates, mounts, commits and removals on shared parents: counts right, no EBUSY, nothing leaked', async () => {
      s = await Storage.open({ root, driver: driverName });
      const st = s;
      const base = await st.importImage(
        Readable.from([
          buildTar([
            { name: 'etc/', type: 'dir' },
            { name: 'etc/os-release', data: 'ID=conc\n' },
            { name: 'bin/', type: 'dir' },
            { name: 'bin/sh', data: 'ELF', mode: 0o755 },
          ]),
        ]),
        { reference: 'conc/base:1' },
      );
      const seed = await st.createContainer('conc/base:1');
      fs.writeFileSync(path.join(await st.mountContainer(seed.id), 'etc', 'app.conf'), 'app\n');
      await st.unmountContainer(seed.id);
      const app = await st.commitContainer(seed.id, { reference: 'conc/app:1' });
      await st.removeContainer(seed.id);
      const [l1, l2] = app.layers as [string, string];
      expect(app.layers).toHaveLength(2);
      expect(await st.layerReferences(l1)).toEqual({ handles: 1, children: 1, containers: 0 });
      expect(await st.layerReferences(l2)).toEqual({ handles: 1, children: 0, containers: 0 });

      // 64 creations at once, on the same top layer.
      const cs = await all(range(N).map((i) => st.createContainer('conc/app:1', { name: `c${i}` })));
      expect(new Set(cs.map((c) => c.mountId)).size).toBe(N);
      expect(await st.layerReferences(l2)).toEqual({ handles: 1, children: 0, containers: N });
      // The image is in use now: its removal by id is refused, not half done.
      await expect(st.removeImage(app.id)).rejects.toMatchObject({ code: 'ERR_IMAGE_IN_USE' });

      // Two mounts per container at once: one overlay each, reference counted.
      const paths = await all(cs.flatMap((c) => [st.mountContainer(c.id), st.mountContainer(c.id)]));
      for (let i = 0; i < N; i++) expect(paths[2 * i]).toBe(paths[2 * i + 1]);
      if (driverName === 'overlay2') expect(overlayMounts()).toHaveLength(N);
      await all(cs.map((_c, i) => fs.promises.writeFile(path.join(paths[2 * i]!, 'etc', `own-${i}`), `container ${i}\n`)));
      // Unmounts interleaved with more mounts of other containers.
      await all(cs.flatMap((c, i) => (i % 2 === 0 ? [st.unmountContainer(c.id), st.unmountContainer(c.id)] : [st.unmountContainer(c.id), st.mountContainer(c.id).then(() => st.unmountContainer(c.id))])));
      await all(cs.filter((_c, i) => i % 2 === 1).map((c) => st.unmountContainer(c.id)));
      expect(overlayMounts()).toEqual([]);

      // 64 commits at once: 64 child layers registered on l2 concurrently.
      const imgs = await all(cs.map((c, i) => st.commitContainer(c.id, { reference: `conc/commit:${i}` })));
      expect(new Set(imgs.map((i) => i.id)).size).toBe(N);
      expect(new Set(imgs.map((i) => i.layers[2])).size).toBe(N);
      for (const img of imgs) expect(img.layers.slice(0, 2)).toEqual([l1, l2]);
      expect(await st.layerReferences(l2)).toEqual({ handles: 1, children: N, containers: N });

      // Interleaved: half the containers removed while containers of the committed images are created, mounted,
      // checked and committed again.
      const second = await all([
        ...cs.slice(0, N / 2).map((c) => st.removeContainer(c.id).then(() => null)),
        ...imgs.slice(0, N / 2).map(async (img, i) => {
          const c = await st.createContainer(img.id);
          const p = await st.mountContainer(c.id);
          expect(fs.readFileSync(path.join(p, 'etc', `own-${i}`), 'utf8')).toBe(`container ${i}\n`);
          expect(fs.readFileSync(path.join(p, 'etc', 'app.conf'), 'utf8')).toBe('app\n');
          fs.writeFileSync(path.join(p, 'again'), String(i));
          await st.unmountContainer(c.id);
          const again = await st.commitContainer(c.id);
          return { c, again };
        }),
      ]);
      const pairs = second.filter((x): x is NonNullable<typeof x> => x !== null);
      expect(pairs).toHaveLength(N / 2);
      expect(await st.layerReferences(l2)).toEqual({ handles: 1, children: N, containers: N / 2 });
      for (const [i, img] of imgs.slice(0, N / 2).entries()) {
        expect(await st.layerReferences(img.layers[2]!)).toEqual({ handles: 1, children: 1, containers: 1 });
        expect(pairs[i]!.again.layers.slice(0, 3)).toEqual(img.layers);
      }
      expect(overlayMounts()).toEqual([]);

      // Everything removed at once: containers, then the images (each batch concurrently).
      await all([...cs.slice(N / 2), ...pairs.map((p) => p.c)].map((c) => st.removeContainer(c.id)));
      expect(await st.listContainers()).toEqual([]);
      await all(pairs.map((p) => st.removeImage(p.again.id)));
      await all(imgs.map((img) => st.removeImage(img.id)));
      expect(await st.layerReferences(l2)).toEqual({ handles: 1, children: 0, containers: 0 });
      await st.removeImage('conc/app:1');
      await st.removeImage(base.id);
      expect(await st.listImages()).toEqual([]);
      expect(await st.listLayers()).toEqual([]);
      expect(await listDriverLayers(driverName, path.join(root, driverName))).toEqual([]);
      expect(problems(await st.verify())).toEqual(CLEAN_REPORT);
      expect(mountsBelow(root)).toEqual([]);
      expect(loopDevicesBelow(tmp)).toEqual([]);
      await st.close();
      s = null;
    });

    test('commits, mounts and removals racing on the same containers: each wins or fails typed, nothing partial', async () => {
      s = await Storage.open({ root, driver: driverName });
      const st = s;
      await st.importImage(Readable.from([buildTar([{ name: 'f', data: 'base' }])]), { reference: 'race/base:1' });
      const cs = await all(range(16).map(() => st.createContainer('race/base:1')));
      await all(cs.map(async (c, i) => fs.promises.writeFile(path.join(await st.mountContainer(c.id), `w${i}`), String(i)).then(() => st.unmountContainer(c.id))));
      // Per container: a commit, a mount and a removal started together.
      const outcomes = await Promise.all(
        cs.map((c) =>
          Promise.allSettled([st.commitContainer(c.id), st.mountContainer(c.id), st.removeContainer(c.id)]).then((r) => r.map((x) => (x.status === 'fulfilled' ? 'ok' : String((x.reason as { code?: unknown }).code ?? `${(x.reason as Error).message} @ ${(x.reason as Error).stack?.split("\n").slice(1, 4).join(" | ")}`)))),
        ),
      );
      const typed = new Set(['ok', 'ERR_CONTAINER_NOT_FOUND', 'ERR_LAYER_IN_USE', 'ERR_LAYER_NOT_FOUND', 'ERR_INVALID_ID']);
      for (const o of outcomes) for (const x of o) expect([o, typed.has(x)]).toEqual([o, true]);
      // Removal wins eventually: a container a racing mount kept alive is removed now.
      for (const c of await st.listContainers()) await st.removeContainer(c.id);
      expect(mountsBelow(root)).toEqual([]);
      const committed = (await st.listImages()).filter((i) => i.layers.length === 2);
      expect(committed.length).toBe(outcomes.filter((o) => o[0] === 'ok').length);
      for (const img of committed) {
        const c = await st.createContainer(img.id);
        expect(fs.readdirSync(await st.mountContainer(c.id)).some((n) => /^w\d+$/.test(n))).toBe(true);
        await st.removeContainer(c.id);
      }
      expect(problems(await st.verify())).toEqual(CLEAN_REPORT);
      for (const img of committed) await st.removeImage(img.id);
      await st.removeImage('race/base:1');
      expect(await st.listLayers()).toEqual([]);
      expect(await listDriverLayers(driverName, path.join(root, driverName))).toEqual([]);
      expect(mountsBelow(root)).toEqual([]);
    });

    test('the same layer registered 16 times at once is stored once, with 16 handles', async () => {
      s = await Storage.open({ root, driver: driverName });
      const st = s;
      const tar = buildTar([{ name: 'same', data: 'same content' }]);
      const regs = await all(range(16).map(() => st.registerLayer(Readable.from([tar]))));
      expect(new Set(regs.map((r) => r.chainId)).size).toBe(1);
      expect(regs.filter((r) => !r.existed)).toHaveLength(1);
      const chain = regs[0]!.chainId;
      expect(chain).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
      expect(await st.layerReferences(chain)).toEqual({ handles: 16, children: 0, containers: 0 });
      // The discarded copies are gone from the driver.
      expect(await listDriverLayers(driverName, path.join(root, driverName))).toEqual([regs[0]!.cacheId]);
      const deleted = await all(regs.map((r) => st.releaseLayer(r.chainId)));
      expect(deleted.flat()).toEqual([chain]);
      expect(await st.listLayers()).toEqual([]);
      expect(problems(await st.verify())).toEqual(CLEAN_REPORT);
      await st.close();
      s = null;
    });
  });
}

interface Round {
  round: number;
  opened: boolean;
  waitedMs: number;
  code?: string;
}

describeIf(overlayReason, 'two or more processes on one root (overlay2)', () => {
  let tmp: string;
  let js: string;
  let child: string;

  beforeAll(() => {
    tmp = makeTmp('gd-conc-proc-');
    js = path.join(tmp, 'js');
    transpileLib(js);
    child = path.join(js, 'test', 'reliability', 'child', 'lock-child.js');
  });
  afterAll(async () => {
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  /** Runs a lock child to its end; resolves to its rounds. */
  function run(root: string, name: string, rounds: number, images: number, lockTimeout: number, holdMs: number): Promise<Round[]> {
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [child, root, 'overlay2', name, String(rounds), String(images), String(lockTimeout), String(holdMs)], { env: CHILD_ENV });
      let out = '';
      let err = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (err += c.toString()));
      p.on('exit', (code) => {
        if (code !== 0 || err !== '') reject(new Error(`lock child ${name} exited with ${code}: ${err}`));
        else resolve(out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Round));
      });
    });
  }

  test('a second process gets ERR_STORE_LOCKED, or waits for the lock and then opens', async () => {
    const root = path.join(tmp, 'lock-root');
    const s = await Storage.open({ root, driver: 'overlay2' });
    let closed = false;
    try {
      expect(await run(root, 'refused', 1, 0, 0, 0)).toEqual([{ round: 0, opened: false, waitedMs: expect.any(Number), code: 'ERR_STORE_LOCKED' }]);
      const waiting = run(root, 'waiter', 1, 1, 60_000, 0);
      await new Promise((r) => setTimeout(r, 700));
      await s.close();
      closed = true;
      const [w] = await waiting;
      expect(w).toMatchObject({ round: 0, opened: true });
      expect(w!.waitedMs).toBeGreaterThan(0);
    } finally {
      if (!closed) await s.close();
    }
    const s2 = await Storage.open({ root, driver: 'overlay2' });
    try {
      expect((await s2.listImages()).flatMap((i) => i.references)).toEqual(['docker.io/waiter/r0:0']);
    } finally {
      await s2.close();
    }
  });

  test('three processes importing into one root in turns lose no update', async () => {
    const root = path.join(tmp, 'shared-root');
    const names = ['alpha', 'beta', 'gamma'];
    const ROUNDS = 4;
    const IMAGES = 3;
    const results = await Promise.all(names.map((n) => run(root, n, ROUNDS, IMAGES, 120_000, 10)));
    for (const rounds of results) {
      expect(rounds).toHaveLength(ROUNDS);
      for (const r of rounds) expect(r.opened).toBe(true);
    }
    // Somebody had to wait: the lock was contended.
    expect(results.flat().some((r) => r.waitedMs > 0)).toBe(true);
    const s = await Storage.open({ root, driver: 'overlay2' });
    try {
      const refs = (await s.listImages()).flatMap((i) => i.references).sort();
      const want = names.flatMap((n) => range(ROUNDS).flatMap((r) => range(IMAGES).map((i) => `docker.io/${n}/r${r}:${i}`))).sort();
      expect(refs).toEqual(want);
      expect(await s.listLayers()).toHaveLength(want.length);
      expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
    } finally {
      await s.close();
    }
    expect(mountsBelow(root)).toEqual([]);
    expect(loopDevicesBelow(tmp)).toEqual([]);
  });

  test('two processes racing to take over a stale lock never both get it', async () => {
    const root = path.join(tmp, 'stale-root');
    await (await Storage.open({ root, driver: 'overlay2' })).close();
    for (let round = 0; round < 4; round++) {
      // A lock left by a process that died (its pid is gone).
      const { stdout } = await execFileP(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
      fs.writeFileSync(path.join(root, 'graphdriver.lock'), `${stdout} -\n`);
      const [a, b] = await Promise.all([run(root, `a${round}`, 1, 0, 0, 1000), run(root, `b${round}`, 1, 0, 0, 1000)]);
      const opened = [a![0]!, b![0]!].filter((r) => r.opened);
      expect([round, opened.length]).toEqual([round, 1]);
      expect([a![0]!, b![0]!].filter((r) => !r.opened).map((r) => r.code)).toEqual(['ERR_STORE_LOCKED']);
    }
    expect(fs.existsSync(path.join(root, 'graphdriver.lock'))).toBe(false);
    expect(fs.readdirSync(root).filter((n) => n.startsWith('graphdriver.lock'))).toEqual([]);
  });
});
