/**
 * DevMapperDriver against an in-memory kernel (driver-devmapper-fake.ts): pool set-up and growth, the base device,
 * snapshots and id allocation, transactions and their rollback, activation and mounting, busy devices, deferred
 * removal and deletion, free space, bad metadata and foreign pools, status and metadata keys.
 * The same driver runs on a real kernel in the VM suite (test/vm/guest/devmapper-*.test.js).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { DevMapperDriver, type DevMapperDeps } from '../../lib/drivers/devmapper';
import { makeTmp, removeTmp } from '../support/tmp';
import { FakeKernel, sysErr } from './driver-devmapper-fake';

const M = 1024 ** 2;
const SMALL = ['dm.basesize=64M', 'dm.loopdatasize=1G', 'dm.loopmetadatasize=16M'];

let tmp = '';
let home = '';
let k: FakeKernel;
const open: DevMapperDriver[] = [];

async function init(options: string[] = SMALL, extra: Partial<DevMapperDeps> = {}): Promise<DevMapperDriver> {
  const d = await DevMapperDriver.init(home, options, k.deps(extra));
  open.push(d);
  return d;
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; errno?: number }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

const meta = (name: string): string => path.join(home, 'metadata', name);
const readJson = (file: string): unknown => JSON.parse(fs.readFileSync(file, 'utf8'));
const poolName = (d: DevMapperDriver): string => d.devices.pool.name;
const tid = (d: DevMapperDriver): number => k.poolMetaOf(poolName(d)).transactionId;

/** A crashed process: its driver is abandoned mid-operation and its lock file is stale. */
function crash(): void {
  fs.rmSync(path.join(home, 'driver.lock'), { force: true });
  open.length = 0;
}

beforeEach(() => {
  tmp = makeTmp('gd-dm-unit-');
  home = path.join(tmp, 'root', 'devicemapper');
  k = new FakeKernel(tmp);
});

afterEach(async () => {
  k.hook = null;
  for (const d of open.splice(0)) await d.cleanup().catch(() => undefined);
  removeTmp(tmp);
});

describe('pool set-up', () => {
  it('makes sparse data/metadata files, attaches them and creates the thin-pool table', async () => {
    const d = await init(['dm.basesize=64M', 'dm.loopdatasize=2G', 'dm.loopmetadatasize=32M', 'dm.blocksize=128K']);
    const data = path.join(home, 'devicemapper', 'data');
    const metadata = path.join(home, 'devicemapper', 'metadata');
    expect(fs.statSync(data).size).toBe(2048 * M);
    expect(fs.statSync(metadata).size).toBe(32 * M);
    expect(fs.statSync(data).blocks).toBe(0);
    const st = fs.statSync(home);
    expect(poolName(d)).toMatch(new RegExp(`^docker-\\d+:\\d+-${st.ino}-pool$`));
    const loops = [...k.loops.values()];
    expect(loops.map((l) => l.file).sort()).toEqual([data, metadata].map((f) => fs.realpathSync(f)).sort());
    const dataLoop = loops.find((l) => l.file === fs.realpathSync(data))!;
    const metaLoop = loops.find((l) => l.file === fs.realpathSync(metadata))!;
    expect(k.devs.get(poolName(d))!.live).toEqual([
      { start: 0, length: (2048 * M) / 512, type: 'thin-pool', params: `7:${metaLoop.index} 7:${dataLoop.index} 256 32768 2 skip_block_zeroing error_if_no_space` },
    ]);
    // the pool node exists for tools, and the status names the files
    expect(fs.existsSync(path.join(k.devDir, poolName(d)))).toBe(true);
    const status = new Map(await d.status());
    expect(status.get('Data file')).toBe(dataLoop.device);
    expect(status.get('Metadata file')).toBe(metaLoop.device);
    expect(status.get('Data loop file')).toBe(data);
    expect(status.get('Metadata loop file')).toBe(metadata);
  });

  it('creates the base device (id 1) in transaction 1, formats it as Docker does and records its UUID', async () => {
    const d = await init([...SMALL, 'dm.mkfsarg=-O ^has_journal', 'dm.fs=ext4']);
    expect(k.messages.filter((m) => !m.includes('@'))).toEqual([`${poolName(d)}: create_thin 1`, `${poolName(d)}: set_transaction_id 0 1`]);
    const mkfs = k.ran.find((r) => r[0] === 'mkfs.ext4')!;
    expect(mkfs).toEqual(['mkfs.ext4', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', '-O ^has_journal', path.join(k.devDir, d.devices.dmName(''))]);
    expect(k.ran.some((r) => r[0] === 'tune2fs')).toBe(false); // not installed here
    expect(readJson(meta('base'))).toEqual({ device_id: 1, size: 64 * M, transaction_id: 1, initialized: true, deleted: false });
    const thin = k.poolMetaOf(poolName(d)).thins.get(1)!;
    expect(readJson(meta('deviceset-metadata'))).toEqual({ next_device_id: 1, base_device_uuid: thin.fs!.uuid, base_device_filesystem: 'ext4' });
    expect(readJson(meta('transaction-metadata'))).toEqual({ open_transaction_id: 1, device_hash: '', device_id: 1 });
    // the base device is not left active, and its node is gone with it
    expect(k.activeThins()).toEqual([]);
    expect(fs.readdirSync(k.devDir)).toEqual([poolName(d)]);
  });

  it('runs tune2fs -c -1 -i 0 after mkfs.ext4 when it is installed, and falls back without lazy_journal_init', async () => {
    k.hook = (method, args) => {
      if (method === 'run:mkfs.ext4' && (args as string[])[1]!.includes('lazy_journal_init')) {
        throw Object.assign(new Error('mkfs.ext4: Bad option(s) specified: lazy_journal_init'), { code: 'ERR_DEVMAPPER_TOOL' });
      }
    };
    const err = await rejection(init(SMALL, { hasTool: () => true }));
    // a non-ToolError failure is not retried
    expect(err.message).toMatch(/lazy_journal_init/);
    open.length = 0;
    fs.rmSync(path.join(home, 'driver.lock'), { force: true });

    const { ToolError } = await import('../../lib/drivers/devmapper/mkfs');
    k.hook = (method, args) => {
      if (method === 'run:mkfs.ext4' && (args as string[])[1]!.includes('lazy_journal_init')) {
        throw new ToolError('mkfs.ext4', args as string[], 'Bad option(s) specified: lazy_journal_init', 'exit status 1');
      }
    };
    await init(['dm.fs=ext4', ...SMALL], { hasTool: () => true });
    const runs = k.ran.map((r) => r.slice(0, 3).join(' '));
    expect(runs).toContain('mkfs.ext4 -E nodiscard,lazy_itable_init=0');
    expect(k.ran.find((r) => r[0] === 'tune2fs')!.slice(0, 5)).toEqual(['tune2fs', '-c', '-1', '-i', '0']);
  });

  it('picks xfs for a base device large enough when mkfs.xfs exists, and mounts it with nouuid', async () => {
    const d = await init(['dm.basesize=1G', 'dm.loopdatasize=4G', 'dm.loopmetadatasize=16M', 'dm.mountopt=nodev,discard']);
    expect(k.ran.find((r) => r[0].startsWith('mkfs'))![0]).toBe('mkfs.xfs');
    expect(new Map(await d.status()).get('Backing Filesystem')).toBe('xfs');
    await d.create('a', null);
    await d.get('a');
    const call = k.b.mount.mock.calls.at(-1)!;
    expect(call[2]).toBe('xfs');
    expect(call[3]).toBe(4 /* MS_NODEV */);
    expect(call[4]).toBe('nouuid,discard');
    await d.put('a');
  });

  it('reopens an existing pool after cleanup with its layers, ids and transaction id', async () => {
    let d = await init();
    await d.create('a', null);
    await d.create('b', 'a');
    const before = tid(d);
    await d.cleanup();
    expect(k.devs.size).toBe(0);
    expect(k.loops.size).toBe(0);
    d = await init();
    expect(await d.exists('a')).toBe(true);
    expect(await d.exists('b')).toBe(true);
    expect(d.parentOf('b')).toBe('a');
    expect(tid(d)).toBe(before);
    await d.create('c', 'b');
    expect((await d.getMetadata('c'))!.DeviceId).toBe('4');
    await expect(d.remove('a')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
  });

  it('grows the loop files and the pool when the sizes grow; refuses to shrink them, changing nothing', async () => {
    let d = await init();
    await d.create('a', null);
    await d.cleanup();
    d = await init(['dm.basesize=64M', 'dm.loopdatasize=3G', 'dm.loopmetadatasize=32M']);
    expect(fs.statSync(path.join(home, 'devicemapper', 'data')).size).toBe(3072 * M);
    expect(fs.statSync(path.join(home, 'devicemapper', 'metadata')).size).toBe(32 * M);
    expect(k.devs.get(poolName(d))!.live![0]!.length).toBe((3072 * M) / 512);
    expect(await d.exists('a')).toBe(true);
    await d.cleanup();

    const err = await rejection(init(['dm.basesize=64M', 'dm.loopdatasize=1G']));
    expect(err).toMatchObject({ code: 'ERR_INVALID_OPTION' });
    expect(err.message).toMatch(/dm.loopdatasize=1.074GB is smaller than the existing .*data \(3.221GB\); a pool cannot shrink/);
    expect(fs.statSync(path.join(home, 'devicemapper', 'data')).size).toBe(3072 * M);
    // without the option, the existing (larger) size is kept
    d = await init(['dm.basesize=64M']);
    expect(fs.statSync(path.join(home, 'devicemapper', 'data')).size).toBe(100 * 1024 * M);
  });

  it('adopts a pool left active by a crashed process, and grows it in place', async () => {
    const d = await init();
    await d.create('a', null);
    const name = poolName(d);
    crash();
    const d2 = await init(['dm.basesize=64M', 'dm.loopdatasize=2G', 'dm.loopmetadatasize=16M']);
    expect(poolName(d2)).toBe(name);
    expect(k.loops.size).toBe(2); // no new loop devices
    expect(k.b.loopSetCapacity).toHaveBeenCalledTimes(2);
    expect(k.devs.get(name)!.live![0]!.length).toBe((2048 * M) / 512);
    expect(await d2.exists('a')).toBe(true);
  });

  it('is NotSupported without device-mapper, and refuses a second instance on the same home', async () => {
    k.b.dmVersion.mockRejectedValueOnce(sysErr('ENOENT', 'open', '/dev/mapper/control'));
    await expect(init()).rejects.toMatchObject({ code: 'ERR_DRIVER_NOT_SUPPORTED', message: expect.stringMatching(/device-mapper is not available/) });
    const d = await init();
    const err = await rejection(DevMapperDriver.init(home, SMALL, k.deps()));
    expect(err).toMatchObject({ code: 'ERR_DRIVER_LOCKED' });
    expect(err.message).toContain(`process ${process.pid}`);
    await d.cleanup();
    await init();
  });

  it('uses an existing pool with dm.thinpooldev, and leaves it active at cleanup', async () => {
    // a pool made by someone else on two loop devices
    const files = ['pdata', 'pmeta'].map((n) => path.join(tmp, n));
    for (const f of files) fs.writeFileSync(f, Buffer.alloc(0));
    fs.truncateSync(files[0]!, 1024 * M);
    const [dl, ml] = [await k.b.loopAttach(files[0]!), await k.b.loopAttach(files[1]!)];
    await k.b.dmCreate('vg-pool');
    await k.b.dmLoad('vg-pool', [{ start: 0, length: (1024 * M) / 512, type: 'thin-pool', params: `7:${ml.index} 7:${dl.index} 128 32768 1 skip_block_zeroing` }]);
    await k.b.dmResume('vg-pool');

    const d = await init(['dm.thinpooldev=/dev/mapper/vg-pool', 'dm.basesize=64M']);
    expect(poolName(d)).toBe('vg-pool');
    await d.create('a', null);
    const status = new Map(await d.status());
    expect(status.get('Pool Name')).toBe('vg-pool');
    expect(status.has('Data loop file')).toBe(false);
    await d.cleanup();
    expect(k.devs.has('vg-pool')).toBe(true);
    expect(k.b.blkDiscard).not.toHaveBeenCalled();
  });

  it('refuses a foreign pool (used, no records of ours), changing nothing', async () => {
    await k.b.loopAttach(path.join(tmp, 'x1').toString()).catch(() => undefined);
    const files = ['pdata', 'pmeta'].map((n) => path.join(tmp, n));
    for (const f of files) fs.writeFileSync(f, '');
    const [dl, ml] = [await k.b.loopAttach(files[0]!), await k.b.loopAttach(files[1]!)];
    await k.b.dmCreate('other-pool');
    await k.b.dmLoad('other-pool', [{ start: 0, length: 2048, type: 'thin-pool', params: `7:${ml.index} 7:${dl.index} 128 32768 0` }]);
    await k.b.dmResume('other-pool');
    await k.b.dmMessage('other-pool', 0, 'create_thin 5');
    await k.b.dmMessage('other-pool', 0, 'set_transaction_id 0 9');
    const err = await rejection(init(['dm.thinpooldev=other-pool', 'dm.basesize=64M']));
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_FOREIGN_POOL' });
    expect(err.message).toMatch(/transaction id 9/);
    expect(k.thinIds()).toEqual([5]);
    expect(k.poolMetaOf('other-pool').transactionId).toBe(9);
  });

  it('refuses a pool whose records were lost, and a missing or corrupt record, deleting nothing', async () => {
    let d = await init();
    await d.create('a', null);
    await d.cleanup();
    const ids = k.thinIds();

    fs.writeFileSync(meta('a'), '{"device_id":');
    let err = await rejection(init());
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_METADATA', file: meta('a') });
    expect(k.thinIds()).toEqual(ids);
    expect(fs.readFileSync(meta('a'), 'utf8')).toBe('{"device_id":');
    // the failed start released the pool and the loop devices
    expect(k.devs.size).toBe(0);
    expect(k.loops.size).toBe(0);
    fs.writeFileSync(meta('a'), JSON.stringify({ device_id: 2, size: 64 * M, transaction_id: 2, initialized: false, deleted: false }));

    fs.renameSync(meta('deviceset-metadata'), meta('saved'));
    err = await rejection(init());
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_METADATA', file: meta('deviceset-metadata') });
    expect(err.message).toMatch(/is missing/);
    fs.renameSync(meta('saved'), meta('deviceset-metadata'));

    fs.renameSync(path.join(home, 'metadata'), path.join(tmp, 'lost'));
    err = await rejection(init());
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_FOREIGN_POOL' });
    expect(err.message).toContain(meta('base'));
    expect(k.thinIds()).toEqual(ids);
    fs.rmSync(path.join(home, 'metadata'), { recursive: true, force: true });
    fs.renameSync(path.join(tmp, 'lost'), path.join(home, 'metadata'));

    d = await init();
    expect(await d.exists('a')).toBe(true);
  });

  it('refuses a base device whose filesystem UUID changed, deleting nothing', async () => {
    const d = await init();
    await d.create('a', null);
    await d.cleanup();
    const base = k.thinIds()[0]!;
    [...k.pools.values()][0]!.thins.get(base)!.fs!.uuid = '00000000-0000-0000-0000-000000000000';
    const err = await rejection(init());
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_UUID_MISMATCH' });
    expect(err.message).toMatch(/00000000-0000-0000-0000-000000000000 does not match the recorded/);
    expect(k.thinIds()).toEqual([1, 2]);
    expect(fs.existsSync(meta('a'))).toBe(true);
  });

  it('grows the base device filesystem when dm.basesize grows, and refuses to shrink it', async () => {
    let d = await init();
    await d.cleanup();
    d = await init(['dm.basesize=128M', 'dm.loopdatasize=1G', 'dm.loopmetadatasize=16M']);
    expect(k.ran.some((r) => r[0] === 'resize2fs')).toBe(true);
    expect(readJson(meta('base'))).toMatchObject({ size: 128 * M });
    expect(new Map(await d.status()).get('Base Device Size')).toBe('134.2MB');
    await d.create('a', null);
    expect((await d.getMetadata('a'))!.DeviceSize).toBe(String(128 * M));
    await d.cleanup();
    // the default (unset) size never shrinks anything
    await expect(init(['dm.loopdatasize=1G', 'dm.loopmetadatasize=16M'])).resolves.toBeDefined();
    await open.pop()!.cleanup();
    await expect(init(['dm.basesize=32M'])).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION', message: expect.stringMatching(/cannot be smaller/) });
  });

  it('a first start that fails leaves no home behind (it would count as driver state)', async () => {
    k.hook = (method) => {
      if (method === 'run:mkfs.ext4') throw new Error('mkfs.ext4: no space');
    };
    await expect(init()).rejects.toThrow('no space');
    open.length = 0;
    expect(fs.existsSync(home)).toBe(false);
    expect(k.devs.size).toBe(0);
    expect(k.loops.size).toBe(0);
  });

  it('deletes and remakes a base device whose mkfs never finished', async () => {
    fs.mkdirSync(home, { recursive: true });
    fs.writeFileSync(path.join(home, 'keep'), ''); // not a fresh home: the failed start leaves its state
    k.hook = (method) => {
      if (method === 'run:mkfs.ext4') throw new Error('killed');
    };
    await expect(init()).rejects.toThrow('killed');
    open.length = 0;
    k.hook = null;
    expect(readJson(meta('base'))).toMatchObject({ initialized: false, device_id: 1 });
    k.messages.length = 0;
    const d = await init();
    const pool = poolName(d);
    expect(k.messages).toEqual([`${pool}: delete 1`, `${pool}: set_transaction_id 1 2`, `${pool}: create_thin 1`, `${pool}: set_transaction_id 2 3`]);
    expect(readJson(meta('base'))).toMatchObject({ initialized: true, device_id: 1, transaction_id: 3 });
    expect(k.thinIds()).toEqual([1]);
    await d.create('x', null);
  });
});

describe('layers', () => {
  it('create snapshots the parent (or the base) in a transaction, get/put activate, mount and remove the device', async () => {
    const d = await init(['dm.fs=ext4', ...SMALL]);
    const pool = poolName(d);
    k.messages.length = 0;
    await d.create('a', null);
    await d.createReadWrite('b', 'a');
    expect(k.messages).toEqual([`${pool}: create_snap 2 1`, `${pool}: set_transaction_id 1 2`, `${pool}: create_snap 3 2`, `${pool}: set_transaction_id 2 3`]);
    expect(readJson(meta('b'))).toEqual({ device_id: 3, size: 64 * M, transaction_id: 3, initialized: false, deleted: false });

    const rootfs = await d.get('b');
    expect(rootfs).toBe(path.join(home, 'mnt', 'b', 'rootfs'));
    expect((fs.statSync(rootfs).mode & 0o7777).toString(8)).toBe('755');
    expect(fs.readFileSync(path.join(home, 'mnt', 'b', 'id'), 'utf8')).toBe('b');
    const name = d.devices.dmName('b');
    expect(k.devs.get(name)!.live).toEqual([{ start: 0, length: (64 * M) / 512, type: 'thin', params: `${d.devices.pool.devString} 3` }]);
    expect(k.mounts.get(path.join(home, 'mnt', 'b'))).toBe(name);
    expect(k.b.mount).toHaveBeenLastCalledWith(path.join(k.devDir, name), path.join(home, 'mnt', 'b'), 'ext4', 0, null);
    expect(fs.existsSync(path.join(k.devDir, name))).toBe(true);
    expect(await d.get('b')).toBe(rootfs); // shared
    expect(k.b.mount).toHaveBeenCalledTimes(1);
    await d.put('b');
    expect(k.mounts.size).toBe(1);
    await d.put('b');
    expect(k.mounts.size).toBe(0);
    expect(k.devs.has(name)).toBe(false);
    expect(fs.existsSync(path.join(k.devDir, name))).toBe(false);
    await expect(d.put('b')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
    expect(await d.getMetadata('b')).toEqual({ DeviceId: '3', DeviceSize: String(64 * M), DeviceName: name });

    k.messages.length = 0;
    await d.remove('b');
    expect(k.discards).toEqual([name]);
    expect(k.messages).toEqual([`${pool}: delete 3`, `${pool}: set_transaction_id 3 4`]);
    expect(fs.existsSync(meta('b'))).toBe(false);
    expect(fs.existsSync(path.join(home, 'mnt', 'b'))).toBe(false);
    expect(await d.exists('b')).toBe(false);
    await expect(d.getMetadata('b')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    expect(k.activeThins()).toEqual([]);
    // the id cursor is written at shutdown
    expect(readJson(meta('deviceset-metadata'))).toMatchObject({ next_device_id: 1 });
    await d.cleanup();
    expect(readJson(meta('deviceset-metadata'))).toMatchObject({ next_device_id: 3 });
  });

  it('suspends an active origin around create_snap and resumes it', async () => {
    const d = await init();
    await d.create('a', null);
    await d.get('a');
    const origin = d.devices.dmName('a');
    const order: string[] = [];
    k.hook = (method, args) => {
      if (method === 'dmSuspend' || method === 'dmResume') order.push(`${method} ${String(args[0])}`);
      if (method === 'dmMessage' && String(args[2]).startsWith('create_snap')) order.push(`message ${String(args[2])} (origin suspended: ${k.devs.get(origin)!.suspended})`);
    };
    await d.create('b', 'a');
    expect(order).toEqual([`dmSuspend ${origin}`, 'message create_snap 3 2 (origin suspended: true)', `dmResume ${origin}`]);
    expect(k.devs.get(origin)!.suspended).toBe(false);
    k.hook = null;
    await d.put('a');
  });

  it('the size storage option makes a larger device and grows its filesystem; smaller is refused', async () => {
    const d = await init(['dm.fs=ext4', ...SMALL]);
    await d.create('base', null);
    await d.createReadWrite('big', 'base', { storageOpt: { size: '100M' } });
    expect(readJson(meta('big'))).toMatchObject({ size: 100 * M });
    const grow = k.ran.find((r) => r[0] === 'resize2fs')!;
    expect(grow).toEqual(['resize2fs', path.join(k.devDir, d.devices.dmName('big'))]);
    expect(k.activeThins()).toEqual([]);
    expect(k.mounts.size).toBe(0);
    const err = await rejection(d.createReadWrite('small', 'base', { storageOpt: { size: '10M' } }));
    expect(err).toMatchObject({ code: 'ERR_INVALID_OPTION' });
    expect(err.message).toMatch(/cannot be smaller than its parent/);
    await expect(d.createReadWrite('bad', 'base', { storageOpt: { bogus: '1' } })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
    expect(await d.exists('small')).toBe(false);
    expect(await d.exists('bad')).toBe(false);
  });

  it('a failed resize deletes the new device again', async () => {
    const d = await init(['dm.fs=ext4', ...SMALL]);
    k.hook = (method) => {
      if (method === 'run:resize2fs') throw new Error('resize2fs: boom');
    };
    await expect(d.createReadWrite('big', null, { storageOpt: { size: '100M' } })).rejects.toThrow('boom');
    k.hook = null;
    expect(await d.exists('big')).toBe(false);
    expect(fs.existsSync(meta('big'))).toBe(false);
    expect(k.thinIds()).toEqual([1]);
  });

  it('skips thin ids the pool already has (EEXIST), and reuses freed ids only after wrapping around', async () => {
    const d = await init(SMALL, { maxDeviceId: 5 });
    const pool = poolName(d);
    await k.b.dmMessage(pool, 0, 'create_thin 2'); // a leftover the records do not know
    await d.create('a', null);
    expect((await d.getMetadata('a'))!.DeviceId).toBe('3');
    await d.create('b', null);
    await d.create('c', null);
    expect((await d.getMetadata('c'))!.DeviceId).toBe('5');
    await d.remove('a');
    await d.create('e', null);
    expect((await d.getMetadata('e'))!.DeviceId).toBe('0');
    await d.create('f', null);
    expect((await d.getMetadata('f'))!.DeviceId).toBe('3');
    const err = await rejection(d.create('g', null));
    expect(err.message).toMatch(/no free thin device id left/);
    expect(await d.exists('g')).toBe(false);
  });

  it('duplicate ids, missing parents and bad ids are refused; a parent with children or a mounted layer stays', async () => {
    const d = await init();
    await d.create('a', null);
    await d.create('b', 'a');
    await expect(d.create('a', null)).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
    await expect(d.create('c', 'nope')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    await expect(d.create('../x', null)).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
    await expect(d.remove('a')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE', message: expect.stringMatching(/parent of 1 layer/) });
    await d.get('b');
    await expect(d.remove('b')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE', message: expect.stringMatching(/mounted/) });
    await d.put('b');
    await d.remove('b');
    await d.remove('a');
    await expect(d.remove('a')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
  });

  it('layer ids named like the base device, the pool or the record files are kept apart', async () => {
    const d = await init();
    for (const id of ['base', 'pool', 'deviceset-metadata', 'transaction-metadata']) await d.create(id, null);
    const names = ['base', 'pool'].map((id) => d.devices.dmName(id));
    expect(new Set([...names, d.devices.dmName(''), poolName(d)]).size).toBe(4);
    expect(readJson(meta('deviceset-metadata'))).toHaveProperty('next_device_id');
    expect(readJson(meta('@deviceset-metadata'))).toHaveProperty('device_id');
    await d.get('pool');
    await d.put('pool');
    await d.cleanup();
    const d2 = await init();
    for (const id of ['base', 'pool', 'deviceset-metadata', 'transaction-metadata']) expect(await d2.exists(id)).toBe(true);
    const long = `l${'x'.repeat(127)}`;
    await d2.create(long, null);
    expect(d2.devices.dmName(long).length).toBeLessThanOrEqual(127);
  });
});

describe('transactions and rollback', () => {
  it('a crash between the snapshot message and the record rolls the device back at the next start', async () => {
    const d = await init();
    await d.create('a', null);
    const t = tid(d);
    // What the process had done when it died: transaction opened, snapshot made, record not yet written.
    fs.writeFileSync(meta('transaction-metadata'), JSON.stringify({ open_transaction_id: t + 1, device_hash: 'lost', device_id: 3 }));
    await k.b.dmMessage(poolName(d), 0, 'create_snap 3 2');
    crash();
    const d2 = await init();
    expect(k.thinIds()).toEqual([1, 2]);
    expect(await d2.exists('lost')).toBe(false);
    expect(tid(d2)).toBe(t);
    // the id is free again and the transaction id goes on from the pool's
    await d2.create('next', null);
    expect((await d2.getMetadata('next'))!.DeviceId).toBe('3');
    expect(tid(d2)).toBe(t + 1);
  });

  it('a crash after the record but before set_transaction_id is rolled back too', async () => {
    const d = await init();
    await d.create('a', null);
    const t = tid(d);
    k.hook = (method, args) => (method === 'dmMessage' && String(args[2]).startsWith('set_transaction_id') ? new Promise<void>(() => undefined) : undefined);
    void d.create('b', 'a');
    await new Promise((r) => setTimeout(r, 50));
    expect(readJson(meta('b'))).toMatchObject({ transaction_id: t + 1 });
    expect(k.thinIds()).toEqual([1, 2, 3]);
    k.hook = null;
    crash();
    const d2 = await init();
    expect(await d2.exists('b')).toBe(false);
    expect(fs.existsSync(meta('b'))).toBe(false);
    expect(k.thinIds()).toEqual([1, 2]);
    expect(await d2.exists('a')).toBe(true);
  });

  it('a crash while an origin is suspended for create_snap resumes the origin at the next start', async () => {
    const d = await init();
    await d.create('a', null);
    await d.get('a');
    const origin = d.devices.dmName('a');
    k.hook = (method, args) => (method === 'dmMessage' && String(args[2]).startsWith('create_snap') ? new Promise<void>(() => undefined) : undefined);
    void d.create('b', 'a');
    await new Promise((r) => setTimeout(r, 50));
    expect(k.devs.get(origin)!.suspended).toBe(true);
    k.hook = null;
    crash();
    const d2 = await init();
    expect(k.devs.get(origin)!.suspended).toBe(false);
    expect(await d2.exists('b')).toBe(false);
    expect(k.thinIds()).toEqual([1, 2]);
  });

  it('a crash in the middle of a delete finishes the delete at the next start', async () => {
    const d = await init();
    await d.create('a', null);
    k.hook = (method, args) => (method === 'dmMessage' && String(args[2]).startsWith('delete') ? new Promise<void>(() => undefined) : undefined);
    void d.remove('a');
    await new Promise((r) => setTimeout(r, 50));
    k.hook = null;
    crash();
    const d2 = await init();
    expect(await d2.exists('a')).toBe(false);
    expect(k.thinIds()).toEqual([1]);
  });

  it('a crashed delete of a device still held open keeps its record, marked for deferred deletion', async () => {
    const opts = [...SMALL, 'dm.use_deferred_removal=true', 'dm.use_deferred_deletion=true'];
    const d = await init(opts);
    await d.create('a', null);
    await d.get('a');
    const name = d.devices.dmName('a');
    k.openDevice(name);
    await d.put('a');
    k.hook = (method, args) => (method === 'dmMessage' && String(args[2]).startsWith('delete') ? new Promise<void>(() => undefined) : undefined);
    void d.remove('a');
    await new Promise((r) => setTimeout(r, 50));
    k.hook = null;
    crash();
    const d2 = await init(opts);
    expect(await d2.exists('a')).toBe(false);
    expect(readJson(meta('a'))).toMatchObject({ deleted: true, device_id: 2 });
    expect(new Map(await d2.status()).get('Deferred Deleted Device Count')).toBe('1');
    k.closeDevice(name);
    await d2.create('b', null);
    expect(fs.existsSync(meta('a'))).toBe(false);
    // the old thin device 2 is gone; the id cursor was not saved by the dead process, so 2 is handed out again
    expect(k.messages.filter((m) => m.endsWith('delete 2'))).toHaveLength(2);
    expect((await d2.getMetadata('b'))!.DeviceId).toBe('2');
    expect(k.thinIds()).toEqual([1, 2]);
  });

  it('a failure after the snapshot is undone in-process: no record, no device, same transaction id', async () => {
    const d = await init();
    const t = tid(d);
    k.hook = (method, args) => {
      if (method === 'dmMessage' && String(args[2]).startsWith('set_transaction_id')) throw sysErr('EIO', 'ioctl(DM_TARGET_MSG)', String(args[0]));
    };
    await expect(d.create('a', null)).rejects.toMatchObject({ code: 'EIO' });
    k.hook = null;
    expect(await d.exists('a')).toBe(false);
    expect(fs.existsSync(meta('a'))).toBe(false);
    expect(k.thinIds()).toEqual([1]);
    expect(tid(d)).toBe(t);
    await d.create('a', null);
    // freed ids are not handed out again before the counter wraps around
    expect((await d.getMetadata('a'))!.DeviceId).toBe('3');
  });
});

describe('busy devices, deferred removal and deferred deletion', () => {
  it('retries removing a device while the kernel says EBUSY', async () => {
    const d = await init();
    await d.create('a', null);
    await d.get('a');
    let busy = 2;
    k.hook = (method, args) => {
      if (method === 'dmRemove' && String(args[0]) === d.devices.dmName('a') && busy-- > 0) throw sysErr('EBUSY', 'ioctl(DM_DEV_REMOVE)', String(args[0]));
    };
    await d.put('a');
    expect(k.b.dmRemove.mock.calls.filter((c) => c[0] === d.devices.dmName('a'))).toHaveLength(3);
    expect(k.devs.has(d.devices.dmName('a'))).toBe(false);
  });

  it('gives up after the retries with ERR_DEVICE_BUSY and keeps the layer counted as mounted', async () => {
    const d = await init();
    await d.create('a', null);
    await d.get('a');
    k.hook = (method, args) => {
      if (method === 'dmRemove' && String(args[0]) === d.devices.dmName('a')) throw sysErr('EBUSY', 'ioctl(DM_DEV_REMOVE)', String(args[0]));
    };
    await expect(d.put('a')).rejects.toMatchObject({ code: 'ERR_DEVICE_BUSY' });
    expect(k.b.dmRemove.mock.calls.filter((c) => c[0] === d.devices.dmName('a'))).toHaveLength(3);
    await expect(d.remove('a')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    k.hook = null;
    await d.put('a');
    await d.remove('a');
  });

  it('defers the removal of a device still held open, and cancels it on the next get', async () => {
    const d = await init([...SMALL, 'dm.use_deferred_removal=true']);
    await d.create('a', null);
    await d.get('a');
    const name = d.devices.dmName('a');
    k.openDevice(name);
    await d.put('a');
    expect(k.devs.get(name)!.deferredRemove).toBe(true);
    await d.get('a');
    expect(k.messages).toContain(`${name}: @cancel_deferred_remove`);
    expect(k.devs.get(name)!.deferredRemove).toBe(false);
    await d.put('a');
    k.closeDevice(name);
    expect(k.devs.has(name)).toBe(false);
    expect(new Map(await d.status()).get('Deferred Removal Enabled')).toBe('true');
  });

  it('marks a busy device deleted, hides it, and deletes it once it is free', async () => {
    const d = await init([...SMALL, 'dm.use_deferred_removal=true', 'dm.use_deferred_deletion=true']);
    await d.create('a', null);
    await d.get('a');
    const name = d.devices.dmName('a');
    k.openDevice(name);
    await d.put('a');
    await d.remove('a');
    expect(await d.exists('a')).toBe(false);
    expect(readJson(meta('a'))).toMatchObject({ deleted: true });
    let status = new Map(await d.status());
    expect(status.get('Deferred Deletion Enabled')).toBe('true');
    expect(status.get('Deferred Deleted Device Count')).toBe('1');
    await expect(d.get('a')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    // the id cannot be reused while the old device is pending
    await expect(d.create('a', null)).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });

    k.closeDevice(name);
    await d.create('other', null);
    status = new Map(await d.status());
    expect(status.get('Deferred Deleted Device Count')).toBe('0');
    expect(fs.existsSync(meta('a'))).toBe(false);
    expect(k.thinIds()).toEqual([1, 3]);
    await d.create('a', null);
  });

  it('deferred deletions left at shutdown are reaped at the next start', async () => {
    const d = await init([...SMALL, 'dm.use_deferred_removal=true', 'dm.use_deferred_deletion=true']);
    await d.create('a', null);
    await d.get('a');
    const name = d.devices.dmName('a');
    k.openDevice(name);
    await d.put('a');
    await d.remove('a');
    await d.cleanup();
    k.closeDevice(name);
    const d2 = await init([...SMALL, 'dm.use_deferred_removal=true', 'dm.use_deferred_deletion=true']);
    expect(new Map(await d2.status()).get('Deferred Deleted Device Count')).toBe('0');
    expect(k.thinIds()).toEqual([1]);
  });
});

describe('free space', () => {
  it('refuses a snapshot below dm.min_free_space, naming data or metadata space, and works again once space is free', async () => {
    const d = await init();
    k.usedDataExtra = 950; // of 1000 blocks: 5% free < 10%
    let err = await rejection(d.create('a', null));
    expect(err).toMatchObject({ code: 'ENOSPC', errno: -28, space: 'data' });
    expect(err.message).toMatch(/free data blocks, less than the 100 required by dm.min_free_space=10%/);
    expect(await d.exists('a')).toBe(false);
    k.usedDataExtra = 0;
    k.usedMetadataBlocks = 4000;
    err = await rejection(d.create('a', null));
    expect(err).toMatchObject({ code: 'ENOSPC', space: 'metadata' });
    k.usedMetadataBlocks = 10;
    await d.create('a', null);
  });

  it('dm.min_free_space=0% turns the check off; a pool out of data space is ENOSPC anyway, a failed one a clear error', async () => {
    const d = await init([...SMALL, 'dm.min_free_space=0%']);
    k.usedDataExtra = 999;
    await d.create('a', null);
    k.poolMode = 'out_of_data_space';
    await expect(d.create('b', null)).rejects.toMatchObject({ code: 'ENOSPC', message: expect.stringMatching(/out of data space/) });
    k.poolMode = 'Fail';
    await expect(d.create('b', null)).rejects.toMatchObject({ code: 'ERR_DEVMAPPER_POOL' });
  });
});

describe('status and cleanup', () => {
  it('reports Docker\'s keys in Docker\'s order with human sizes', async () => {
    const d = await init(['dm.basesize=64M', 'dm.loopdatasize=1G', 'dm.loopmetadatasize=16M', 'dm.blocksize=64K', 'dm.fs=ext4']);
    k.totalDataBlocks = 16384;
    const st = await d.status();
    expect(st.map(([key]) => key)).toEqual([
      'Pool Name',
      'Pool Blocksize',
      'Base Device Size',
      'Backing Filesystem',
      'Udev Sync Supported',
      'Data file',
      'Metadata file',
      'Data Space Used',
      'Data Space Total',
      'Data Space Available',
      'Metadata Space Used',
      'Metadata Space Total',
      'Metadata Space Available',
      'Thin Pool Minimum Free Space',
      'Deferred Removal Enabled',
      'Deferred Deletion Enabled',
      'Deferred Deleted Device Count',
      'Data loop file',
      'Metadata loop file',
    ]);
    const m = new Map(st);
    expect(m.get('Pool Blocksize')).toBe('65.54kB');
    expect(m.get('Base Device Size')).toBe('67.11MB');
    expect(m.get('Backing Filesystem')).toBe('ext4');
    expect(m.get('Udev Sync Supported')).toBe('false');
    expect(m.get('Data Space Used')).toBe('131.1kB'); // the base device's 2 blocks
    expect(m.get('Data Space Total')).toBe('1.074GB');
    expect(m.get('Data Space Available')).toBe('1.074GB');
    expect(m.get('Metadata Space Used')).toBe('40.96kB');
    expect(m.get('Metadata Space Total')).toBe('16.78MB');
    expect(m.get('Thin Pool Minimum Free Space')).toBe('107.3MB'); // floor(16384 * 10%) blocks
    expect(m.get('Deferred Removal Enabled')).toBe('false');
    expect(m.get('Deferred Deleted Device Count')).toBe('0');
  });

  it('cleanup unmounts, deactivates, removes the pool and nodes, detaches the loops; the driver is closed after', async () => {
    const d = await init();
    await d.create('a', null);
    await d.create('b', 'a');
    await d.get('a');
    await d.get('b');
    await d.cleanup();
    expect(k.devs.size).toBe(0);
    expect(k.loops.size).toBe(0);
    expect(fs.readdirSync(k.devDir)).toEqual([]);
    expect(fs.existsSync(path.join(home, 'driver.lock'))).toBe(false);
    await expect(d.get('a')).rejects.toMatchObject({ code: 'ERR_DRIVER_CLOSED' });
    await d.cleanup(); // twice is fine
  });
});
