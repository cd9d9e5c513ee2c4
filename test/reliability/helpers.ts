/**
 * Shared helpers of the reliability and security suites: mount and loop-device accounting, a transpiled copy of
 * lib/ for child processes, and the "the store is whole" check run after crashes, races and full disks.
 * @module
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

import { listDriverLayers } from '../../lib/layer/driver-layers';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import type { Storage, VerifyReport } from '../../lib/storage/storage';

const REPO = path.resolve(__dirname, '..', '..');

/** The environment for child processes: they load the same addon as this test run (the transpiled lib cannot find build/). */
export const CHILD_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  GRAPHDRIVER_ADDON: process.env.GRAPHDRIVER_ADDON ?? path.join(REPO, 'build', 'Release', 'graphdriver.node'),
};

/** Mount points at or below `dir` in this process's mount namespace (from /proc/self/mountinfo). */
export function mountsBelow(dir: string): string[] {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    return [];
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === real || m.startsWith(`${real}/`));
}

/** Unmounts whatever is left at or below `dir` (deepest first); for afterAll clean-up after a failure. */
export async function unmountAll(dir: string): Promise<void> {
  const b = loadBindings();
  for (const m of mountsBelow(dir).sort().reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
}

/** Loop devices whose backing file lies at or below `dir` (from /sys/block/loop*∕loop/backing_file). */
export function loopDevicesBelow(dir: string): string[] {
  const out: string[] = [];
  for (const name of fs.readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n))) {
    try {
      const backing = fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (backing === dir || backing.startsWith(`${dir}/`)) out.push(`/dev/${name}`);
    } catch {
      // not attached
    }
  }
  return out;
}

/**
 * Transpiles lib/ to CommonJS in `out` (no type check: another half-written file elsewhere in the checkout must
 * not stop the children) and links node_modules beside it, so that `node <out>/...` runs the library as it is now.
 */
export function transpileLib(out: string): void {
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
        const js = ts.transpileModule(fs.readFileSync(full, 'utf8'), {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
          fileName: full,
        }).outputText;
        const dest = path.join(out, path.relative(REPO, full)).replace(/\.ts$/, '.js');
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        fs.writeFileSync(dest, js);
      }
    }
  };
  walk(path.join(REPO, 'lib'));
  walk(path.join(REPO, 'test', 'reliability', 'child'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(out, 'node_modules'));
}

/** A verify report with nothing wrong (unreferenced layers are not a problem, only a pruning candidate). */
export const CLEAN_REPORT: Omit<VerifyReport, 'unreferencedLayers'> = {
  ok: true,
  incomplete: [],
  corruptMetadata: [],
  missingDriverLayers: [],
  orphanDriverLayers: [],
  corruptImages: [],
  danglingImages: [],
  danglingReferences: [],
  corruptContainers: [],
  repaired: [],
};

/** The report without unreferencedLayers, for comparing with {@link CLEAN_REPORT}. */
export function problems(r: VerifyReport): Omit<VerifyReport, 'unreferencedLayers'> {
  const { unreferencedLayers: _ignored, ...rest } = r;
  return rest;
}

/**
 * Asserts that everything the store lists is whole and readable: every layer's metadata directory holds exactly
 * Docker's files and its driver layer exists and can be read (diff size computed), every image's layers exist,
 * every container's layers exist and mount, and layerdb/tmp is empty. Returns counts for the report.
 */
export async function assertStoreWhole(s: Storage, driverName: string): Promise<{ layers: number; images: number; containers: number }> {
  const db = path.join(s.root, 'image', driverName, 'layerdb');
  expect(fs.readdirSync(path.join(db, 'tmp'))).toEqual([]);
  const layers = await s.listLayers();
  const chains = new Set(layers.map((l) => l.chainId));
  for (const l of layers) {
    const dir = path.join(db, 'sha256', l.chainId.slice(7));
    // Docker's files (extra files such as tar-split.json.gz may sit beside them), published together.
    const files = fs.readdirSync(dir).filter((f) => ['cache-id', 'diff', 'size', 'parent'].includes(f));
    expect([l.chainId, files.sort()]).toEqual([l.chainId, l.parent === null ? ['cache-id', 'diff', 'size'] : ['cache-id', 'diff', 'parent', 'size']]);
    expect([l.chainId, await s.driver.exists(l.cacheId)]).toEqual([l.chainId, true]);
    if (l.parent !== null) expect(chains.has(l.parent)).toBe(true);
  }
  const images = await s.listImages();
  for (const img of images) {
    for (const c of img.layers) expect([img.id, c, chains.has(c)]).toEqual([img.id, c, true]);
    expect((await s.imageConfig(img.id)).rootfs.diff_ids).toEqual(img.diffIds);
  }
  const containers = await s.listContainers();
  for (const c of containers) {
    expect([c.id, await s.driver.exists(c.mountId), await s.driver.exists(c.initId)]).toEqual([c.id, true, true]);
    // Readable: the container's root mounts and lists.
    const p = await s.mountContainer(c.id);
    try {
      expect(fs.readdirSync(p).length).toBeGreaterThan(0);
    } finally {
      await s.unmountContainer(c.id);
    }
  }
  const onDisk = await listDriverLayers(driverName, path.join(s.root, driverName));
  if (onDisk !== null) {
    const live = new Set<string>([...layers.map((l) => l.cacheId), ...containers.flatMap((c) => [c.mountId, c.initId])]);
    expect(onDisk.filter((id) => !live.has(id))).toEqual([]);
  }
  return { layers: layers.length, images: images.length, containers: containers.length };
}

/** A filesystem image attached to a loop device and mounted; {@link LoopFs.dispose} undoes everything. */
export interface LoopFs {
  mnt: string;
  device: string;
  dispose(): Promise<void>;
}

/**
 * Creates a sparse `sizeMiB` image in `dir`, formats it with `mkfs.<fsType>` (plus `mkfsArgs`), attaches it with
 * the addon's loopAttach and mounts it on `<dir>/mnt`. Clean-up is idempotent and also runs when a step fails.
 */
export async function makeLoopFs(dir: string, fsType: string, sizeMiB: number, mkfsArgs: string[] = []): Promise<LoopFs> {
  const b = loadBindings();
  const img = path.join(dir, `${fsType}.img`);
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, sizeMiB * 1024 * 1024);
  execFileSync(`mkfs.${fsType}`, [...mkfsArgs, img], { stdio: 'ignore' });
  let device = '';
  let mounted = false;
  const dispose = async (): Promise<void> => {
    if (mounted) {
      await unmountAll(mnt);
      mounted = false;
    }
    if (device !== '') {
      await b.loopDetach(device).catch(() => undefined);
      device = '';
    }
  };
  try {
    device = (await b.loopAttach(img)).device;
    await b.mount(device, mnt, fsType, 0, null);
    mounted = true;
  } catch (e) {
    await dispose();
    throw e;
  }
  return { mnt, device, dispose };
}
