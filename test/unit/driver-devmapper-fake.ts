/**
 * An in-memory kernel for the devicemapper unit tests: device-mapper devices and tables, thin pools whose
 * "metadata" (transaction id, thin devices, their filesystems) lives with the metadata file path and so survives
 * removing and recreating the pool (as the on-disk metadata does), loop devices, mounts, and the mkfs/resize tools.
 * Loop device nodes and /dev/mapper nodes are plain files under a temp dir; sysfs is a temp dir too.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { DmInfo, DmTarget, LoopDevice, NativeBindings } from '../../lib/native/types';
import type { DevMapperDeps } from '../../lib/drivers/devmapper';
import type { FsProbe, Runner } from '../../lib/drivers/devmapper/mkfs';
import { makedev } from '../../lib/native/constants';
import { mockBindings } from '../support/native';

/** A Node-style errno error, as the addon rejects with. */
export function sysErr(code: string, syscall: string, p?: string): Error {
  const errnos: Record<string, number> = { EBUSY: -16, EEXIST: -17, ENXIO: -6, EINVAL: -22, ENODATA: -61, ENOENT: -2, ENOSPC: -28, EIO: -5 };
  return Object.assign(new Error(`${code}: ${syscall}${p ? ` '${p}'` : ''}`), { code, errno: errnos[code] ?? -1, syscall, ...(p ? { path: p } : {}) });
}

interface Thin {
  mappedBlocks: number;
  fs: FsProbe | null;
}

/** What a pool's metadata device holds. */
interface PoolMeta {
  transactionId: number;
  blockSectors: number;
  thins: Map<number, Thin>;
}

interface Dev {
  name: string;
  minor: number;
  live: DmTarget[] | null;
  inactive: DmTarget[] | null;
  suspended: boolean;
  openCount: number;
  deferredRemove: boolean;
}

interface Loop {
  index: number;
  file: string;
  device: string;
  /** Detached while a table still used it: goes away with that table's device (autoclear). */
  detachPending: boolean;
}

const DM_MAJOR = 253;

/**
 * The thin-pool metadata lives in the metadata file: as the kernel formats an all-zero metadata device, the fake
 * writes a token at its start, and a file without one (a new file) is a new, empty pool.
 */
function poolKey(file: string, format = false): string {
  const fd = fs.openSync(file, 'r+');
  try {
    const buf = Buffer.alloc(16);
    fs.readSync(fd, buf, 0, 16, 0);
    if (buf.some((x) => x !== 0)) return buf.toString('hex');
    if (!format) throw new Error(`fake kernel: ${file} holds no pool`);
    const token = randomBytes(16);
    fs.writeSync(fd, token, 0, 16, 0);
    return token.toString('hex');
  } finally {
    fs.closeSync(fd);
  }
}
const LOOP_MAJOR = 7;

/** A fake kernel plus the NativeBindings, runner and probe that talk to it. */
export class FakeKernel {
  readonly devs = new Map<string, Dev>();
  /** Pool metadata by the token in the metadata file. */
  readonly pools = new Map<string, PoolMeta>();
  readonly loops = new Map<number, Loop>();
  readonly mounts = new Map<string, string>();
  /** Every tool run: [file, ...args]. */
  readonly ran: string[][] = [];
  /** Every DM message: `<name>: <message>`. */
  readonly messages: string[] = [];
  readonly discards: string[] = [];
  private nextMinor = 0;
  /** Data blocks of every pool (as counted by status). */
  totalDataBlocks = 1000;
  usedDataExtra = 0;
  totalMetadataBlocks = 4096;
  usedMetadataBlocks = 10;
  /** Mode reported by pool status. */
  poolMode = 'rw';
  /** Called before each binding call; throw to inject a failure. */
  hook: ((method: string, args: unknown[]) => void | Promise<void>) | null = null;
  readonly devDir: string;
  readonly loopDevDir: string;
  readonly sysDir: string;
  readonly b: jest.Mocked<NativeBindings>;

  constructor(readonly tmp: string) {
    this.devDir = path.join(tmp, 'dev', 'mapper');
    this.loopDevDir = path.join(tmp, 'dev');
    this.sysDir = path.join(tmp, 'sys');
    fs.mkdirSync(this.devDir, { recursive: true });
    fs.mkdirSync(path.join(this.sysDir, 'dev', 'block'), { recursive: true });
    fs.mkdirSync(path.join(this.sysDir, 'block'), { recursive: true });
    this.b = this.bindings();
  }

  /** The deps to pass to DevMapperDriver.init. */
  deps(extra: Partial<DevMapperDeps> = {}): DevMapperDeps {
    return {
      bindings: this.b,
      run: this.run,
      probe: this.probe,
      hasTool: (t) => t !== 'tune2fs',
      kernelHasFs: () => true,
      devDir: this.devDir,
      sysDir: this.sysDir,
      removeRetries: 3,
      retryDelayMs: 1,
      sync: false,
      ...extra,
    };
  }

  private dev(name: string, syscall: string): Dev {
    const d = this.devs.get(name);
    if (!d) throw sysErr('ENXIO', syscall, name);
    return d;
  }

  private info(d: Dev): DmInfo {
    return {
      name: d.name,
      uuid: '',
      major: DM_MAJOR,
      minor: d.minor,
      dev: makedev(DM_MAJOR, d.minor),
      openCount: d.openCount,
      eventNr: 0,
      targetCount: d.live?.length ?? 0,
      suspended: d.suspended,
      readOnly: false,
      liveTable: d.live !== null,
      inactiveTable: d.inactive !== null,
      deferredRemove: d.deferredRemove,
    };
  }

  /** The pool device named by a thin table's `M:m`. */
  private poolByDev(majMin: string): Dev | undefined {
    return [...this.devs.values()].find((d) => `${DM_MAJOR}:${d.minor}` === majMin && d.live?.[0]?.type === 'thin-pool');
  }

  /** Pool metadata behind a pool device (via its metadata loop device). */
  poolMetaOf(poolName: string): PoolMeta {
    const d = this.dev(poolName, 'pool');
    const metaMajMin = d.live![0]!.params.split(' ')[0]!;
    const loop = [...this.loops.values()].find((l) => `${LOOP_MAJOR}:${l.index}` === metaMajMin)!;
    return this.pools.get(poolKey(loop.file))!;
  }

  /** The thin behind an active thin device. */
  thinOf(name: string): Thin | null {
    const d = this.devs.get(name);
    const t = d?.live?.[0];
    if (!t || t.type !== 'thin') return null;
    const [poolMm, id] = t.params.split(' ');
    const pool = this.poolByDev(poolMm!);
    if (!pool) return null;
    return this.poolMetaOf(pool.name).thins.get(Number(id)) ?? null;
  }

  /** Thin ids of the (only) pool. */
  thinIds(): number[] {
    const pool = [...this.pools.values()][0];
    return pool ? [...pool.thins.keys()].sort((a, b) => a - b) : [];
  }

  /** Active thin devices referencing thin `id` of pool `poolMm`. */
  private thinActive(poolMm: string, id: number): boolean {
    return [...this.devs.values()].some((d) => d.live?.[0]?.type === 'thin' && d.live[0].params === `${poolMm} ${id}`);
  }

  private dmMessageImpl(name: string, msg: string): string {
    const d = this.dev(name, 'ioctl(DM_TARGET_MSG)');
    this.messages.push(`${name}: ${msg}`);
    if (msg === '@cancel_deferred_remove') {
      if (!d.deferredRemove) throw sysErr('ENXIO', 'ioctl(DM_TARGET_MSG)', name);
      d.deferredRemove = false;
      return '';
    }
    if (d.live?.[0]?.type !== 'thin-pool') throw sysErr('EINVAL', 'ioctl(DM_TARGET_MSG)', name);
    const meta = this.poolMetaOf(name);
    const poolMm = `${DM_MAJOR}:${d.minor}`;
    const [verb, a, b] = msg.split(' ');
    const n = Number(a);
    switch (verb) {
      case 'create_thin':
        if (meta.thins.has(n)) throw sysErr('EEXIST', 'ioctl(DM_TARGET_MSG)', name);
        meta.thins.set(n, { mappedBlocks: 0, fs: null });
        return '';
      case 'create_snap': {
        if (meta.thins.has(n)) throw sysErr('EEXIST', 'ioctl(DM_TARGET_MSG)', name);
        const origin = meta.thins.get(Number(b));
        if (!origin) throw sysErr('ENODATA', 'ioctl(DM_TARGET_MSG)', name);
        meta.thins.set(n, { mappedBlocks: origin.mappedBlocks, fs: origin.fs ? { ...origin.fs } : null });
        return '';
      }
      case 'delete':
        if (!meta.thins.has(n)) throw sysErr('ENODATA', 'ioctl(DM_TARGET_MSG)', name);
        if (this.thinActive(poolMm, n)) throw sysErr('EBUSY', 'ioctl(DM_TARGET_MSG)', name);
        meta.thins.delete(n);
        return '';
      case 'set_transaction_id':
        if (meta.transactionId !== n) throw sysErr('EINVAL', 'ioctl(DM_TARGET_MSG)', name);
        meta.transactionId = Number(b);
        return '';
      default:
        throw sysErr('EINVAL', 'ioctl(DM_TARGET_MSG)', name);
    }
  }

  private loadCheck(name: string, targets: DmTarget[]): void {
    const t = targets[0];
    if (!t) return;
    if (t.type === 'thin-pool') {
      const [metaMm, dataMm, blocks] = t.params.split(' ');
      const metaLoop = [...this.loops.values()].find((l) => `${LOOP_MAJOR}:${l.index}` === metaMm);
      const dataLoop = [...this.loops.values()].find((l) => `${LOOP_MAJOR}:${l.index}` === dataMm);
      if (!metaLoop || !dataLoop) throw sysErr('EINVAL', 'ioctl(DM_TABLE_LOAD)', name);
      const key = poolKey(metaLoop.file, true);
      const existing = this.pools.get(key);
      if (existing && existing.blockSectors !== Number(blocks)) throw sysErr('EINVAL', 'ioctl(DM_TABLE_LOAD)', name);
      if (!existing) this.pools.set(key, { transactionId: 0, blockSectors: Number(blocks), thins: new Map() });
    } else if (t.type === 'thin') {
      const [poolMm, id] = t.params.split(' ');
      const pool = this.poolByDev(poolMm!);
      if (!pool || !this.poolMetaOf(pool.name).thins.has(Number(id))) throw sysErr('EINVAL', 'ioctl(DM_TABLE_LOAD)', name);
    }
  }

  /** The device-mapper name behind a node path under devDir. */
  private nameOfNode(node: string): string {
    return path.basename(node);
  }

  readonly run: Runner = async (file, args) => {
    this.ran.push([file, ...args]);
    if (this.hook) await this.hook(`run:${file}`, [...args]);
    const device = args[args.length - 1]!;
    if (file === 'mkfs.ext4' || file === 'mkfs.xfs') {
      const thin = this.thinOf(this.nameOfNode(device));
      if (!thin) throw new Error(`fake mkfs: ${device} is not an active thin device`);
      thin.fs = { type: file === 'mkfs.xfs' ? 'xfs' : 'ext4', uuid: randomUUID() };
      thin.mappedBlocks += 2;
    }
    return { stdout: '', stderr: '' };
  };

  readonly probe = async (device: string): Promise<FsProbe | null> => {
    const thin = this.thinOf(this.nameOfNode(device));
    return thin?.fs ? { ...thin.fs } : null;
  };

  private bindings(): jest.Mocked<NativeBindings> {
    const wrap =
      <A extends unknown[], R>(method: string, fn: (...args: A) => R | Promise<R>) =>
      async (...args: A): Promise<R> => {
        if (this.hook) await this.hook(method, args);
        return fn(...args);
      };
    return mockBindings({
      dmVersion: jest.fn(wrap('dmVersion', () => [4, 47, 0] as [number, number, number])),
      dmCreate: jest.fn(
        wrap('dmCreate', (name: string) => {
          if (this.devs.has(name)) throw sysErr('EEXIST', 'ioctl(DM_DEV_CREATE)', name);
          const d: Dev = { name, minor: this.nextMinor++, live: null, inactive: null, suspended: false, openCount: 0, deferredRemove: false };
          this.devs.set(name, d);
          return this.info(d);
        }),
      ),
      dmLoad: jest.fn(
        wrap('dmLoad', (name: string, targets: DmTarget[]) => {
          const d = this.dev(name, 'ioctl(DM_TABLE_LOAD)');
          this.loadCheck(name, targets);
          d.inactive = targets.map((t) => ({ ...t }));
          return this.info(d);
        }),
      ),
      dmSuspend: jest.fn(
        wrap('dmSuspend', (name: string) => {
          const d = this.dev(name, 'ioctl(DM_DEV_SUSPEND)');
          d.suspended = true;
          return this.info(d);
        }),
      ),
      dmResume: jest.fn(
        wrap('dmResume', (name: string) => {
          const d = this.dev(name, 'ioctl(DM_DEV_SUSPEND)');
          if (d.inactive) {
            d.live = d.inactive;
            d.inactive = null;
          }
          d.suspended = false;
          return this.info(d);
        }),
      ),
      dmRemove: jest.fn(
        wrap('dmRemove', (name: string, opts?: { deferred?: boolean }) => {
          const d = this.dev(name, 'ioctl(DM_DEV_REMOVE)');
          const usedByThin = d.live?.[0]?.type === 'thin-pool' && [...this.devs.values()].some((x) => x.live?.[0]?.type === 'thin' && x.live[0].params.startsWith(`${DM_MAJOR}:${d.minor} `));
          if (d.openCount > 0 || usedByThin) {
            if (opts?.deferred) {
              d.deferredRemove = true;
              return;
            }
            throw sysErr('EBUSY', 'ioctl(DM_DEV_REMOVE)', name);
          }
          this.devs.delete(name);
          for (const l of [...this.loops.values()]) if (l.detachPending && !this.loopInUse(l.index)) this.loops.delete(l.index);
        }),
      ),
      dmMessage: jest.fn(wrap('dmMessage', (name: string, _sector: number, msg: string) => this.dmMessageImpl(name, msg))),
      dmStatus: jest.fn(
        wrap('dmStatus', (name: string) => {
          const d = this.dev(name, 'ioctl(DM_TABLE_STATUS)');
          const t = d.live?.[0];
          if (!t) return [];
          if (t.type !== 'thin-pool') return [{ ...t, params: '0 0' }];
          const meta = this.poolMetaOf(name);
          const used = [...meta.thins.values()].reduce((a, x) => a + x.mappedBlocks, 0) + this.usedDataExtra;
          return [{ ...t, params: `${meta.transactionId} ${this.usedMetadataBlocks}/${this.totalMetadataBlocks} ${used}/${this.totalDataBlocks} - ${this.poolMode} discard_passdown error_if_no_space - 1024` }];
        }),
      ),
      dmTable: jest.fn(wrap('dmTable', (name: string) => (this.dev(name, 'ioctl(DM_TABLE_STATUS)').live ?? []).map((t) => ({ ...t })))),
      dmInfo: jest.fn(
        wrap('dmInfo', (name: string) => {
          const d = this.devs.get(name);
          return d ? this.info(d) : null;
        }),
      ),
      dmList: jest.fn(wrap('dmList', () => [...this.devs.values()].map((d) => ({ name: d.name, major: DM_MAJOR, minor: d.minor, dev: makedev(DM_MAJOR, d.minor) })))),
      loopAttach: jest.fn(
        wrap('loopAttach', (file: string): LoopDevice => {
          let index = 0;
          while (this.loops.has(index)) index++;
          const device = path.join(this.loopDevDir, `loop${index}`);
          fs.writeFileSync(device, '');
          fs.mkdirSync(path.join(this.sysDir, 'block', `loop${index}`), { recursive: true });
          fs.writeFileSync(path.join(this.sysDir, 'block', `loop${index}`, 'dev'), `${LOOP_MAJOR}:${index}\n`);
          fs.rmSync(path.join(this.sysDir, 'dev', 'block', `${LOOP_MAJOR}:${index}`), { force: true });
          fs.symlinkSync(`../../devices/virtual/block/loop${index}`, path.join(this.sysDir, 'dev', 'block', `${LOOP_MAJOR}:${index}`));
          this.loops.set(index, { index, file: fs.realpathSync(file), device, detachPending: false });
          return { device, index };
        }),
      ),
      loopDetach: jest.fn(
        wrap('loopDetach', (device: string) => {
          const idx = Number(path.basename(device).replace('loop', ''));
          const l = this.loops.get(idx);
          if (!l) return;
          if (this.loopInUse(idx)) l.detachPending = true;
          else this.loops.delete(idx);
        }),
      ),
      loopInfo: jest.fn(
        wrap('loopInfo', (device: string) => {
          const idx = Number(path.basename(device).replace('loop', ''));
          const l = this.loops.get(idx);
          if (!l) throw sysErr('ENXIO', 'ioctl(LOOP_GET_STATUS64)', device);
          return { device, index: idx, backingFile: l.file, backingDev: 0, backingInode: 0, offset: 0, sizeLimit: 0, autoclear: true, readOnly: false };
        }),
      ),
      loopSetCapacity: jest.fn(wrap('loopSetCapacity', () => undefined)),
      blockDeviceSize: jest.fn(
        wrap('blockDeviceSize', (device: string) => {
          const idx = Number(path.basename(device).replace('loop', ''));
          const l = this.loops.get(idx);
          return l ? fs.statSync(l.file).size : 0;
        }),
      ),
      truncate: jest.fn(
        wrap('truncate', (file: string, size: number, create?: boolean) => {
          if (create) fs.writeFileSync(file, '', { flag: 'a' });
          fs.truncateSync(file, size);
        }),
      ),
      blkDiscard: jest.fn(
        wrap('blkDiscard', (device: string) => {
          this.discards.push(path.basename(device));
        }),
      ),
      statfs: jest.fn(wrap('statfs', () => ({ type: 0x01021994, bsize: 4096, blocks: 1e9, bfree: 1e9, bavail: 1e9, files: 0, ffree: 0, namelen: 255, flags: 0 }))),
      mknod: jest.fn(
        wrap('mknod', (p: string, _mode: number, dev: number) => {
          fs.writeFileSync(p, String(dev), { flag: 'wx' });
        }),
      ),
      mount: jest.fn(
        wrap('mount', (source: string, target: string) => {
          const name = this.nameOfNode(source);
          const d = this.devs.get(name);
          if (!d || !d.live) throw sysErr('ENXIO', 'mount', source);
          if (this.mounts.has(target)) throw sysErr('EBUSY', 'mount', source);
          d.openCount++;
          this.mounts.set(target, name);
        }),
      ),
      umount: jest.fn(
        wrap('umount', (target: string) => {
          const name = this.mounts.get(target);
          if (name === undefined) throw sysErr('EINVAL', 'umount', target);
          this.mounts.delete(target);
          // What was written lived on the device: the mount point is empty again.
          for (const e of fs.readdirSync(target)) fs.rmSync(path.join(target, e), { recursive: true, force: true });
          const d = this.devs.get(name);
          if (d) {
            d.openCount--;
            if (d.openCount === 0 && d.deferredRemove) this.devs.delete(name);
          }
        }),
      ),
      isMountpoint: jest.fn(wrap('isMountpoint', (p: string) => this.mounts.has(p))),
    });
  }

  private loopInUse(index: number): boolean {
    return [...this.devs.values()].some((d) => d.live?.[0]?.type === 'thin-pool' && d.live[0].params.split(' ').slice(0, 2).includes(`${LOOP_MAJOR}:${index}`));
  }

  /** Opens device `name` as a process would (a deferred removal then waits for {@link closeDevice}). */
  openDevice(name: string): void {
    this.dev(name, 'open').openCount++;
  }

  closeDevice(name: string): void {
    const d = this.dev(name, 'close');
    d.openCount--;
    if (d.openCount === 0 && d.deferredRemove) this.devs.delete(name);
  }

  /** Names of active devices other than pools. */
  activeThins(): string[] {
    return [...this.devs.values()].filter((d) => d.live?.[0]?.type === 'thin').map((d) => d.name);
  }
}
