/**
 * The hostile-archive corpus (test/security/corpus.ts) through the Storage API on real drivers (issue 11 item 1):
 * every case is registered with Storage.registerLayer (on a parent layer holding the case's lower content, when it
 * has one) and imported with Storage.importImage, on vfs and overlay2.
 *
 * The victim directory sits right beside the layer's root, exactly where `../victim` from inside the layer leads
 * (vfs: `<home>/dir/victim`; overlay2: `<home>/<cache-id>/victim` next to `diff/`): it is planted by a hook on the
 * driver's `create` once the layer directory exists, snapshotted (inode, ctime, content, xattrs), compared after
 * applyDiff returns or fails, and removed before the store cleans up. A second victim beside the store root and
 * the whole test directory outside the store are snapshotted too, and the canary token of the case must not
 * appear anywhere outside the layer root. After each case the store must be exactly as before: refused archives
 * fail with ERR_INVALID_ARCHIVE (ArchiveLimitError for limits) and register nothing; legal ones register a layer
 * that is then released; in both cases verify() is clean, layerdb/tmp is empty and no driver layer is left over.
 *
 * A second part checks id and reference validation at the API (CVE-2014-9358: image ids used as paths) and
 * tampered on-disk metadata naming paths outside the store.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import type { ApplyLayerResult, WhiteoutFormat } from '../../lib/archive/apply';
import type { Driver } from '../../lib/drivers/driver';
import { ArchiveLimitError } from '../../lib/errors';
import { listDriverLayers } from '../../lib/layer/driver-layers';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar, chunked } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
import { CLEAN_REPORT, mountsBelow, problems, unmountAll } from '../reliability/helpers';
import { canaryPlaces, cases, makeVictim, snapshot, type Case, type Ctx, type Expect } from './corpus';

const TIMEOUT = 120_000;
/** Apply options the Storage API passes through (RegisterOptions' decompression limits). */
const STORE_OPTS = new Set(['maxUncompressedSize', 'maxRatio', 'ratioFloor']);

/** Cases whose options the store cannot express (device policy, depth limit): they only run at the engine level. */
function engineOnly(k: Case): boolean {
  const dummy: Ctx = { format: 'naive', tmp: '/nonexistent', root: '/nonexistent/root', victim: '/nonexistent/victim', token: 'x' };
  return Object.keys(k.opts?.(dummy) ?? {}).some((o) => !STORE_OPTS.has(o));
}
const storeCases = cases.filter((k) => !engineOnly(k));
const skipped = cases.filter(engineOnly);

type Api = 'registerLayer' | 'importImage';

/** Names of entries anywhere below `dir` (not following symlinks, skipping `skip`) containing `token`. */
function findToken(dir: string, token: string, skip: string): string[] {
  const hits: string[] = [];
  const walk = (p: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(p);
    } catch {
      return;
    }
    for (const n of names) {
      const child = path.join(p, n);
      if (child === skip) continue;
      if (n.includes(token)) hits.push(child);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(child);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(child);
    }
  };
  walk(dir);
  return hits;
}

/** Where a driver applies a layer (the target root of applyLayer) and in which whiteout format. */
function layerRoot(s: Storage, id: string, hasParent: boolean): { root: string; format: WhiteoutFormat } {
  const home = path.join(s.root, s.driver.name);
  if (s.driver.name === 'vfs') return { root: path.join(home, 'dir', id), format: 'naive' };
  const native = (s.driver as unknown as { nativeDiff?: boolean }).nativeDiff === true;
  if (native) return { root: path.join(home, id, 'diff'), format: 'overlay' };
  // Naive fallback: applied through the mounted layer (a base layer is its diff directory, unmounted).
  return { root: path.join(home, id, hasParent ? 'merged' : 'diff'), format: 'naive' };
}

/** One armed registration: the context the hooks fill in and what they observed. */
interface Armed {
  c: Ctx;
  hasParent: boolean;
  layerId?: string;
  victimBefore?: string[];
  /** Differences and escapes seen by the applyDiff hook (empty when all is well). */
  findings: string[];
}

const overlayReason = !isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'the kernel has no overlay' : null;
const vfsReason = !isRoot ? 'needs root (ownership, device nodes, trusted.* xattrs)' : null;

for (const [driverName, reason] of [
  ['vfs', vfsReason],
  ['overlay2', overlayReason],
] as const) {
  describeIf(reason, `hostile archives through the Storage API on ${driverName}`, () => {
    let tmp: string;
    let storeRoot: string;
    let outerVictim: string;
    let s: Storage;
    let armed: Armed | null = null;
    let serial = 0;
    /** The last victim planted beside a layer root (removed by reset() after a failure). */
    let lastVictim = '';
    let unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    const tally = { refused: 0, contained: 0, either: 0 };

    beforeAll(async () => {
      process.on('unhandledRejection', onUnhandled);
      tmp = makeTmp(`gd-store-sec-${driverName}-`);
      storeRoot = path.join(tmp, 'store');
      outerVictim = path.join(tmp, 'victim');
      await makeVictim(outerVictim);
      // fsync off: the store's atomicity against a process crash is kept, only power-loss durability is dropped.
      s = await Storage.open({ root: storeRoot, driver: driverName, sync: false });
      const d: Driver = s.driver;
      const create = d.create.bind(d);
      const applyDiff = d.applyDiff.bind(d);
      // The layer store holds this same driver object: the hooks see its calls.
      d.create = async (id, parent, opts) => {
        await create(id, parent, opts);
        const a = armed;
        if (a === null || a.layerId !== undefined) return;
        a.layerId = id;
        const { root, format } = layerRoot(s, id, a.hasParent);
        a.c.root = root;
        a.c.format = format;
        a.c.tmp = path.dirname(root);
        a.c.victim = path.join(path.dirname(root), 'victim');
        lastVictim = a.c.victim;
        fs.rmSync(a.c.victim, { recursive: true, force: true });
        await makeVictim(a.c.victim);
        a.victimBefore = await snapshot(a.c.victim, path.join(a.c.victim, '\0none'));
      };
      d.applyDiff = async (id, parent, diff) => {
        const a = armed;
        try {
          return await applyDiff(id, parent, diff);
        } finally {
          if (a !== null && a.layerId === id) {
            const after = await snapshot(a.c.victim, path.join(a.c.victim, '\0none'));
            if (JSON.stringify(after) !== JSON.stringify(a.victimBefore)) a.findings.push(`victim beside the layer root changed:\n${after.join('\n')}`);
            for (const p of canaryPlaces(a.c)) if (fs.existsSync(p)) a.findings.push(`canary at ${p}`);
          }
        }
      };
    });

    afterAll(async () => {
      process.off('unhandledRejection', onUnhandled);
      await s?.close().catch(() => undefined);
      await unmountAll(tmp);
      try {
        removeTmp(tmp);
      } catch {
        fs.rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
      }
      // eslint-disable-next-line no-console
      console.log(`store-hostile ${driverName}: ${tally.refused} refused, ${tally.contained} legal and contained, ${tally.either} on a lower layer`);
    });

    /** Store state that must be identical before and after a case (apart from the case's own, released, layer). */
    async function storeState(): Promise<unknown> {
      return {
        layers: await s.listLayers(),
        images: (await s.listImages()).map((i) => i.id),
        driverLayers: await listDriverLayers(driverName, path.join(storeRoot, driverName)),
        tmp: fs.readdirSync(path.join(storeRoot, 'image', driverName, 'layerdb', 'tmp')),
        mounts: mountsBelow(storeRoot),
      };
    }

    async function runCase(k: Case, api: Api): Promise<void> {
      unhandled = [];
      const token = `gd-store-canary-${process.pid}-${++serial}`;
      const c: Ctx = { format: 'naive', tmp: '', root: '', victim: '', token };

      // Lower content, as a parent layer (registerLayer only).
      let parentImage: string | null = null;
      let parentChain: string | null = null;
      if (k.setup) {
        const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-store-stage-'));
        try {
          // The victim path the hostile layer will get: constant for vfs, per layer for overlay2 (the outer one then).
          const predicted = driverName === 'vfs' ? path.join(storeRoot, 'vfs', 'dir', 'victim') : outerVictim;
          await k.setup({ ...c, root: stage, victim: predicted, tmp: path.dirname(stage) });
          const img = await s.importImage(stage);
          parentImage = img.id;
          parentChain = img.layers[0]!;
        } finally {
          fs.rmSync(stage, { recursive: true, force: true });
        }
      }

      const before = await storeState();
      const outerBefore = await snapshot(tmp, storeRoot);
      const a: Armed = { c, hasParent: parentChain !== null, findings: [] };
      armed = a;
      let made: ReturnType<Case['input']> | undefined;
      // Built when the store first reads it, i.e. after the driver created the layer and the hook placed the victim.
      const source = (async function* (): AsyncGenerator<Uint8Array> {
        made = k.input(c);
        if (Buffer.isBuffer(made)) yield* chunked(made, 4093);
        else yield* made;
      })();
      const limits: Record<string, number> = {};
      for (const [key, v] of Object.entries(k.opts?.(c) ?? {})) if (STORE_OPTS.has(key) && typeof v === 'number') limits[key] = v;

      let error: unknown;
      let chain: string | null = null;
      let imageId: string | null = null;
      try {
        if (api === 'registerLayer') chain = (await s.registerLayer(source, parentChain, limits)).chainId;
        else imageId = (await s.importImage(Readable.from(source))).id;
      } catch (e) {
        error = e;
      } finally {
        armed = null;
        if (made !== undefined && !Buffer.isBuffer(made)) made.stop?.();
      }
      expect(a.layerId).toBeDefined(); // the hooks saw the registration

      // Same starting content as the engine-level suite: the same outcome is required.
      const exact = !k.setup || driverName === 'vfs';
      const want: Expect = typeof k.expect === 'function' ? k.expect(c.format) : k.expect;
      const registered = chain !== null || imageId !== null;
      if (error !== undefined) {
        const err = error as { code?: unknown; entry?: unknown; stack?: unknown };
        if (err.code !== 'ERR_INVALID_ARCHIVE') throw new Error(`expected ERR_INVALID_ARCHIVE, got ${String(err.stack ?? error)}`);
        if (exact) {
          if (!('invalid' in want)) throw new Error(`legal at the engine level, refused by the store: ${String(err.stack)}`);
          if (want.limit) expect(error).toBeInstanceOf(ArchiveLimitError);
          if (want.entry !== undefined) expect(err.entry).toBe(typeof want.entry === 'function' ? want.entry(c) : want.entry);
          if (want.message) expect((error as Error).message).toMatch(want.message);
        }
      } else {
        expect(registered).toBe(true);
        if (exact && 'invalid' in want) throw new Error('refused at the engine level, registered by the store');
        // Checks that read apply warnings or results (not visible through the store) run at the engine level only.
        if (exact && 'contained' in want && want.contained.length < 2) {
          await want.contained(c, { result: {} as ApplyLayerResult, warnings: [] });
        }
      }
      if (!exact) tally.either++;
      else if (error !== undefined) tally.refused++;
      else tally.contained++;

      expect(a.findings).toEqual([]);
      expect(findToken(tmp, token, c.root)).toEqual([]);
      expect(await snapshot(tmp, storeRoot)).toEqual(outerBefore);

      // Registered layers and images are released; then the store must be exactly as before.
      // (The victim goes first: the vfs one sits among the driver's layers, the overlay2 one in the layer's directory.)
      fs.rmSync(c.victim, { recursive: true, force: true });
      if (chain !== null) expect(await s.releaseLayer(chain)).toEqual([chain]);
      if (imageId !== null) await s.removeImage(imageId);
      chain = imageId = null;
      expect(await storeState()).toEqual(before);
      if (parentImage !== null) await s.removeImage(parentImage);
      const report = await s.verify();
      expect(problems(report)).toEqual(CLEAN_REPORT);
      expect(report.unreferencedLayers).toEqual([]);
      expect(await s.listLayers()).toEqual([]);
      expect(unhandled).toEqual([]);
    }

    /** After a failed case: back to an empty store, so that one failure does not cascade into every later case. */
    async function reset(): Promise<void> {
      armed = null;
      if (lastVictim !== '') fs.rmSync(lastVictim, { recursive: true, force: true });
      for (const c of await s.listContainers()) await s.removeContainer(c.id).catch(() => undefined);
      for (let round = 0; round < 5 && (await s.listImages()).length > 0; round++) {
        for (const i of await s.listImages()) await s.removeImage(i.id, { force: true }).catch(() => undefined);
      }
      await s.verify({ repair: true, prune: true });
    }

    describe.each(['registerLayer', 'importImage'] as const)('%s', (api) => {
      // importImage takes neither a parent nor decompression limits: cases needing them run through registerLayer only.
      const list = api === 'importImage' ? storeCases.filter((k) => !k.setup && !k.opts) : storeCases;
      it.each(list.map((k) => [k.name, k] as const))(
        '%s',
        async (_n, k) => {
          try {
            await runCase(k, api);
          } catch (e) {
            await reset();
            throw e;
          }
        },
        TIMEOUT,
      );
    });

    it(`runs ${storeCases.length} of the ${cases.length} corpus cases (the rest need apply options the store does not take)`, () => {
      expect(storeCases.length).toBeGreaterThanOrEqual(110);
      expect(skipped.map((k) => k.name).every((n) => /devices|maxDepth/.test(n))).toBe(true);
    });

    // ---------------------------------------------------------------------------------------------------------
    // Ids and references (CVE-2014-9358: `docker load` used image ids as path components).

    describe('ids and references at the API', () => {
      const TRAVERSAL = [
        '..',
        '.',
        '/',
        '../../../../etc/passwd',
        '/etc/passwd',
        'a/../../b',
        `sha256:../../../${'a'.repeat(55)}`,
        `sha256:${'a'.repeat(64)}/../../x`,
        `${'a'.repeat(64)}/..`,
        `../${'b'.repeat(61)}`,
        `sha256:${'A'.repeat(64)}`,
        `sha256:${'a'.repeat(63)}\0`,
        'a\0b',
        '',
        'x'.repeat(5000),
        `busybox:../../x`,
        `busybox@sha256:../../${'a'.repeat(58)}`,
      ];

      let ok: string;
      let container: string;
      beforeAll(async () => {
        ok = (await s.importImage(Readable.from([buildTar([{ name: 'f', data: 'x' }])]), { reference: 'ok:1' })).id;
        container = (await s.createContainer(ok, { name: 'c1' })).id;
      });

      /** Asserts that `p` rejects with one of the typed codes. */
      async function refusedWith(p: Promise<unknown>, codes: string[]): Promise<void> {
        const e = await p.then(
          (v: unknown) => ({ resolved: v }),
          (x: unknown) => x,
        );
        const code = (e as { code?: unknown }).code;
        if (typeof code !== 'string' || !codes.includes(code)) {
          throw new Error(`expected one of ${codes.join(', ')}, got ${e instanceof Error ? e.stack : JSON.stringify(e).slice(0, 500)}`);
        }
      }

      test.each(TRAVERSAL.map((t) => [JSON.stringify(t).slice(0, 60), t] as const))('image and container lookups refuse %s', async (_n, t) => {
        const outerBefore = await snapshot(tmp, storeRoot);
        const imageCodes = ['ERR_INVALID_REFERENCE', 'ERR_IMAGE_NOT_FOUND', 'ERR_INVALID_ID'];
        await refusedWith(s.getImage(t), imageCodes);
        await refusedWith(s.imageConfig(t), imageCodes);
        await refusedWith(s.removeImage(t), imageCodes);
        await refusedWith(s.createContainer(t), imageCodes);
        await refusedWith(s.tagImage(ok, t), ['ERR_INVALID_REFERENCE']);
        await refusedWith(s.tagImage(t, 'fine:1'), imageCodes);
        await refusedWith(s.importImage(Readable.from([buildTar([{ name: 'g', data: 'y' }])]), { reference: t }), ['ERR_INVALID_REFERENCE']);
        const containerCodes = ['ERR_CONTAINER_NOT_FOUND', 'ERR_INVALID_ID'];
        await refusedWith(s.getContainer(t), containerCodes);
        await refusedWith(s.mountContainer(t), containerCodes);
        await refusedWith(s.containerChanges(t), containerCodes);
        await refusedWith(s.exportContainerDiff(t), containerCodes);
        await refusedWith(s.commitContainer(t), containerCodes);
        await refusedWith(s.removeContainer(t), containerCodes);
        await refusedWith(s.commitContainer(container, { reference: t }), ['ERR_INVALID_REFERENCE']);
        // (A long plain name is a valid container name: it is only ever stored in JSON.)
        if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/.test(t)) await refusedWith(s.createContainer(ok, { name: t }), ['ERR_INVALID_REFERENCE']);
        const layerCodes = ['ERR_INVALID_ID', 'ERR_LAYER_NOT_FOUND'];
        await refusedWith(s.getLayer(t), layerCodes);
        await refusedWith(s.releaseLayer(t), layerCodes);
        await refusedWith(s.layerReferences(t), layerCodes);
        await refusedWith(s.registerLayer(Readable.from([buildTar([{ name: 'h', data: 'z' }])]), t), layerCodes);
        await refusedWith(s.registerLayer(Readable.from([buildTar([{ name: 'h', data: 'z' }])]), null, { expectedDiffId: t }), ['ERR_INVALID_ID']);
        // An image config whose diff_ids or parent are paths.
        const cfg = (diffIds: string[]): Buffer => Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: diffIds } }));
        await refusedWith(s.createImage(cfg([t])), ['ERR_INVALID_IMAGE_CONFIG', 'ERR_INVALID_ID']);
        const okLayer = (await s.getImage(ok)).diffIds;
        await refusedWith(s.createImage(cfg([...okLayer, t])), ['ERR_INVALID_IMAGE_CONFIG', 'ERR_INVALID_ID']);
        await refusedWith(s.createImage(cfg(okLayer), { parent: t }), ['ERR_INVALID_ID', 'ERR_IMAGE_NOT_FOUND', 'ERR_INVALID_REFERENCE']);
        // Container options that reach the driver.
        await refusedWith(s.createContainer(ok, { storageOpt: { [t || 'x']: '1' } }), ['ERR_INVALID_OPTION']);

        expect(await snapshot(tmp, storeRoot)).toEqual(outerBefore);
        expect((await s.listImages()).map((i) => i.id)).toEqual([ok]);
        expect((await s.listContainers()).map((x) => x.id)).toEqual([container]);
        expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
      });

      test('tampered metadata naming paths outside the store is reported, never followed, and repaired inside the store only', async () => {
        const outerBefore = await snapshot(tmp, storeRoot);
        const db = path.join(storeRoot, 'image', driverName, 'layerdb');
        const imagedb = path.join(storeRoot, 'image', driverName, 'imagedb');
        const layer = (await s.getImage(ok)).layers[0]!;
        const rel = path.relative(path.join(storeRoot, driverName), outerVictim);
        // A second layer whose cache-id is rewritten to climb out of the driver home; a container record and a
        // mounts entry pointing out likewise; an image parent file and repositories.json naming paths.
        const victimLayer = await s.registerLayer(Readable.from([buildTar([{ name: 'v', data: 'v' }])]), layer);
        const lDir = path.join(db, 'sha256', victimLayer.chainId.slice(7));
        const realCache = fs.readFileSync(path.join(lDir, 'cache-id'), 'utf8');
        fs.writeFileSync(path.join(lDir, 'cache-id'), rel);
        const fakeMount = path.join(db, 'mounts', 'f'.repeat(64));
        fs.mkdirSync(fakeMount);
        fs.writeFileSync(path.join(fakeMount, 'mount-id'), `../../${rel}`);
        fs.writeFileSync(path.join(fakeMount, 'init-id'), '/etc');
        fs.mkdirSync(path.join(db, 'mounts', '..victim'));
        fs.writeFileSync(path.join(imagedb, 'content', 'sha256', `..${'0'.repeat(62)}`), '{}');
        const okMeta = path.join(imagedb, 'metadata', 'sha256', ok.slice(7));
        fs.mkdirSync(okMeta, { recursive: true });
        fs.writeFileSync(path.join(okMeta, 'parent'), '../../../../victim');
        fs.writeFileSync(
          path.join(storeRoot, 'image', driverName, 'repositories.json'),
          JSON.stringify({ Repositories: { '../../victim': { '../../victim:latest': '../../victim' }, ok: { 'ok:1': ok } } }),
        );
        fs.writeFileSync(path.join(storeRoot, 'containers', `${'e'.repeat(64)}.json`), JSON.stringify({ id: '../../victim', mountId: '../../victim' }));
        // The real container's record naming a driver layer outside the home.
        const recFile = path.join(storeRoot, 'containers', `${container}.json`);
        const rec = fs.readFileSync(recFile, 'utf8');
        fs.writeFileSync(recFile, JSON.stringify({ ...JSON.parse(rec), mountId: `../../${rel}` }));
        await s.close();

        s = await Storage.open({ root: storeRoot, driver: driverName, sync: false });
        const report = await s.verify();
        expect(report.ok).toBe(false);
        expect(report.corruptMetadata.map((m) => path.basename(m.path)).sort()).toEqual(['..victim', 'f'.repeat(64), victimLayer.chainId.slice(7)].sort());
        expect(report.corruptImages.length).toBeGreaterThanOrEqual(1);
        expect(report.danglingReferences.length).toBeGreaterThanOrEqual(1);
        expect(report.orphanDriverLayers).toEqual([realCache]);
        expect(await snapshot(tmp, storeRoot)).toEqual(outerBefore);
        expect((await s.getImage('ok:1')).parent).toBeUndefined();
        await expect(s.mountContainer(container)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
        await expect(s.exportContainerDiff(container)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
        fs.writeFileSync(recFile, rec);

        const fixed = await s.verify({ repair: true });
        expect(fixed.ok).toBe(true);
        expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
        expect(await snapshot(tmp, storeRoot)).toEqual(outerBefore);
        expect((await s.listImages()).map((i) => i.id)).toEqual([ok]);
        expect((await s.listContainers()).map((x) => x.id)).toEqual([container]);
        expect(await s.listLayers()).toEqual([await s.getLayer(layer)]);
      });

      // `docker load` of hostile `docker save` archives (CVE-2014-9358 was image ids used as paths by the loader).
      describe('loadImage of hostile docker save archives', () => {
        const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
        const layer = buildTar([{ name: 'hello', data: 'hi' }]);
        const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }));
        const configName = `${sha(config)}.json`;
        type Member = { name: string; data?: Buffer | string; link?: string };
        const archive = (manifest: unknown, extra: Member[] = [], base = true): Buffer =>
          buildTar([
            ...(base
              ? [
                  { name: configName, data: config },
                  { name: 'abc/', type: 'dir' as const },
                  { name: 'abc/layer.tar', data: layer },
                ]
              : []),
            ...extra.map((m) => (m.link !== undefined ? { name: m.name, type: 'symlink' as const, linkname: m.link } : { name: m.name, data: m.data ?? '' })),
            { name: 'manifest.json', data: JSON.stringify(manifest) },
          ]);
        const item = (o: Record<string, unknown> = {}): Record<string, unknown> => ({ Config: configName, RepoTags: ['loaded:1'], Layers: ['abc/layer.tar'], ...o });
        const escaping = buildTar([{ name: '../../escape-from-load', data: 'x' }]);
        const escCfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(escaping)}`] } }));
        const cases: Array<[string, () => Buffer]> = [
          ['Config path climbing out', () => archive([item({ Config: '../../victim/secret' })])],
          ['absolute Config path', () => archive([item({ Config: '/etc/passwd' })])],
          ['layer path climbing out', () => archive([item({ Layers: ['../layer.tar'] })])],
          ['layer path climbing out after a folded prefix', () => archive([item({ Layers: ['abc/../../x/layer.tar'] })])],
          ['layer member is a symlink to an absolute path outside', () => archive([item({ Layers: ['out/layer.tar'] })], [{ name: 'out/layer.tar', link: '/etc/passwd' }])],
          ['layer member is a symlink climbing out', () => archive([item({ Layers: ['up/layer.tar'] })], [{ name: 'up/layer.tar', link: '../../../../../../victim/secret' }])],
          ['config member is a symlink climbing out', () => archive([item({ Config: `${'0'.repeat(64)}.json` })], [{ name: `${'0'.repeat(64)}.json`, link: '../../victim/secret' }])],
          ['member names with ".." in the archive itself', () => archive([item({ Layers: ['../evil/layer.tar'] })], [{ name: '../evil/layer.tar', data: layer }])],
          ['RepoTags with a path', () => archive([item({ RepoTags: ['../../victim:1'] })])],
          ['RepoTags with an id-like name', () => archive([item({ RepoTags: [`sha256:${'A'.repeat(64)}`] })])],
          ['config named by a digest it does not have', () => archive([item({ Config: `${'1'.repeat(64)}.json` })], [{ name: `${'1'.repeat(64)}.json`, data: config }])],
          ['config whose diff_ids are paths', () => {
            const cfg = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: ['sha256:../../../victim'] } }));
            return archive([item({ Config: `${sha(cfg)}.json` })], [{ name: `${sha(cfg)}.json`, data: cfg }]);
          }],
          ['a layer escaping its root, after a good image (all or nothing)', () =>
            archive([item(), item({ Config: `${sha(escCfg)}.json`, RepoTags: ['evil:1'], Layers: ['esc/layer.tar'] })], [
              { name: `${sha(escCfg)}.json`, data: escCfg },
              { name: 'esc/layer.tar', data: escaping },
            ])],
        ];

        let dir: string;
        beforeAll(() => {
          dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-store-load-'));
        });
        afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

        test('a well-formed archive loads (the control)', async () => {
          const f = path.join(dir, 'good.tar');
          fs.writeFileSync(f, archive([item()]));
          const [img] = await s.loadImage(f);
          expect(img!.references).toEqual(['docker.io/library/loaded:1']);
          await s.removeImage(img!.id);
          expect((await s.listImages()).map((i) => i.id)).toEqual([ok]);
        });

        test.each(cases)('%s: refused, nothing loaded, nothing outside touched', async (_n, make) => {
          const f = path.join(dir, 'hostile.tar');
          fs.writeFileSync(f, make());
          const outerBefore = await snapshot(tmp, storeRoot);
          const layersBefore = await s.listLayers();
          await refusedWith(s.loadImage(f), ['ERR_INVALID_ARCHIVE', 'ERR_INVALID_REFERENCE', 'ERR_DIGEST_MISMATCH', 'ERR_INVALID_IMAGE_CONFIG', 'ERR_INVALID_ID']);
          expect((await s.listImages()).map((i) => i.id)).toEqual([ok]);
          expect(await s.listLayers()).toEqual(layersBefore);
          expect(await snapshot(tmp, storeRoot)).toEqual(outerBefore);
          expect(findToken(path.dirname(storeRoot), 'escape-from-load', '\0none')).toEqual([]);
          expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
          expect(fs.readdirSync(path.join(storeRoot, 'image', driverName, 'layerdb', 'tmp'))).toEqual([]);
        });
      });

      afterAll(async () => {
        await s.removeContainer(container);
        await s.removeImage(ok);
        expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
      });
    });
  });
}
