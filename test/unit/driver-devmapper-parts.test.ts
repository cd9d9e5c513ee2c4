/**
 * The pieces of the devicemapper driver that need no kernel: option parsing, device id allocation, the metadata
 * files, thin-pool status lines, Docker's human sizes and superblock probing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { DeviceIdBitmap, MAX_DEVICE_ID } from '../../lib/drivers/devmapper/device-id-bitmap';
import { humanSize } from '../../lib/drivers/devmapper/human-size';
import { MetadataError, MetadataStore } from '../../lib/drivers/devmapper/metadata';
import { chooseDefaultFs, probeFilesystem } from '../../lib/drivers/devmapper/mkfs';
import { DEFAULT_BASE_SIZE, parseDevmapperOptions, parseLayerSize } from '../../lib/drivers/devmapper/options';
import { parsePoolStatus } from '../../lib/drivers/devmapper/pool';
import { makeTmp, removeTmp } from '../support/tmp';

const G = 1024 ** 3;
const M = 1024 ** 2;

describe('devicemapper options', () => {
  it('has Docker\'s defaults', () => {
    const o = parseDevmapperOptions([]);
    expect(o).toEqual({
      baseSize: DEFAULT_BASE_SIZE,
      baseSizeSet: false,
      dataLoopSize: 100 * G,
      dataLoopSizeSet: false,
      metadataLoopSize: 2 * G,
      metadataLoopSizeSet: false,
      fs: null,
      mkfsArgs: [],
      mountOptions: [],
      thinPoolDev: null,
      blockSize: 64 * 1024,
      minFreeSpacePercent: 10,
      deferredRemoval: false,
      deferredDeletion: false,
      blkDiscard: true,
    });
  });

  it('parses every option; mkfsarg and mountopt accumulate', () => {
    const o = parseDevmapperOptions([
      'dm.basesize=20G',
      'dm.loopdatasize=200G',
      'DM.LoopMetadataSize=4G',
      'dm.fs=xfs',
      'dm.mkfsarg=-m crc=1',
      'dm.mkfsarg=-K',
      'dm.mountopt=nodev,discard',
      'dm.mountopt=noatime',
      'dm.blocksize=512K',
      'dm.min_free_space=5%',
      'dm.use_deferred_removal=true',
      'dm.use_deferred_deletion=1',
      'dm.blkdiscard=false',
    ]);
    expect(o).toMatchObject({
      baseSize: 20 * G,
      baseSizeSet: true,
      dataLoopSize: 200 * G,
      dataLoopSizeSet: true,
      metadataLoopSize: 4 * G,
      fs: 'xfs',
      mkfsArgs: ['-m crc=1', '-K'],
      mountOptions: ['nodev', 'discard', 'noatime'],
      blockSize: 512 * 1024,
      minFreeSpacePercent: 5,
      deferredRemoval: true,
      deferredDeletion: true,
      blkDiscard: false,
    });
  });

  it('strips /dev/mapper/ from dm.thinpooldev and turns discards off for it unless asked', () => {
    expect(parseDevmapperOptions(['dm.thinpooldev=/dev/mapper/vg-pool'])).toMatchObject({ thinPoolDev: 'vg-pool', blkDiscard: false });
    expect(parseDevmapperOptions(['dm.thinpooldev=vg-pool', 'dm.blkdiscard=true'])).toMatchObject({ thinPoolDev: 'vg-pool', blkDiscard: true });
  });

  it.each([
    [['dm.unknown=1'], /unknown storage option "dm.unknown"/],
    [['dm.basesize'], /not key=value/],
    [['dm.basesize=10X'], /invalid size "10X"/],
    [['dm.basesize=0'], /dm.basesize must be larger than 0/],
    [['dm.loopdatasize=-1G'], /invalid size "-1G"/],
    [['dm.loopmetadatasize=lots'], /invalid size "lots"/],
    [['dm.fs=btrfs'], /unsupported filesystem "btrfs"/],
    [['dm.blocksize=32K'], /between 64K and 1G and a multiple of 64K/],
    [['dm.blocksize=100K'], /multiple of 64K/],
    [['dm.blocksize=2G'], /between 64K and 1G/],
    [['dm.min_free_space=10'], /requires a % suffix/],
    [['dm.min_free_space=100%'], /invalid value "100%"/],
    [['dm.min_free_space=x%'], /invalid value "x%"/],
    [['dm.use_deferred_removal=maybe'], /invalid boolean "maybe"/],
    [['dm.use_deferred_deletion=true'], /deferred deletion cannot be enabled without deferred removal/],
    [['dm.thinpooldev=pool', 'dm.loopdatasize=1G'], /cannot be used with dm.thinpooldev/],
    [['dm.thinpooldev=a/b'], /invalid dm.thinpooldev/],
    [['dm.mkfsarg='], /dm.mkfsarg must not be empty/],
  ])('refuses %j', (opts, message) => {
    let err: unknown;
    try {
      parseDevmapperOptions(opts);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_INVALID_OPTION' });
    expect((err as Error).message).toMatch(message);
  });

  it('a layer knows only the size storage option', () => {
    expect(parseLayerSize(undefined)).toBe(0);
    expect(parseLayerSize({})).toBe(0);
    expect(parseLayerSize({ size: '20G' })).toBe(20 * G);
    expect(parseLayerSize({ Size: '512M' })).toBe(512 * M);
    expect(() => parseLayerSize({ bogus: '1' })).toThrow(/unknown storage option "bogus"/);
    expect(() => parseLayerSize({ size: 'big' })).toThrow(/invalid size "big"/);
    expect(() => parseLayerSize({ size: 5 as unknown as string })).toThrow(/must be a string/);
  });
});

describe('device id bitmap', () => {
  it('hands out ids after the cursor, starting at 1 like Docker', () => {
    const b = new DeviceIdBitmap();
    expect(b.max).toBe(MAX_DEVICE_ID);
    expect([b.allocate(), b.allocate(), b.allocate()]).toEqual([1, 2, 3]);
    expect(b.used).toBe(3);
    expect(b.nextId).toBe(3);
  });

  it('skips used ids, does not reuse a freed id before wrapping around, then does', () => {
    const b = new DeviceIdBitmap(0, 7);
    b.markUsed(2);
    expect(b.allocate()).toBe(1);
    expect(b.allocate()).toBe(3);
    b.markFree(1);
    expect(b.allocate()).toBe(4);
    expect([b.allocate(), b.allocate(), b.allocate()]).toEqual([5, 6, 7]);
    // wraps: 0 is a valid thin id, then the freed 1
    expect(b.allocate()).toBe(0);
    expect(b.allocate()).toBe(1);
    expect(b.allocate()).toBeNull();
    expect(b.used).toBe(8);
  });

  it('resumes from a persisted cursor and refuses ids out of range', () => {
    const b = new DeviceIdBitmap(5, 7);
    expect(b.allocate()).toBe(6);
    expect(() => b.markUsed(8)).toThrow(RangeError);
    expect(() => b.isFree(-1)).toThrow(RangeError);
    expect(() => new DeviceIdBitmap(0, 0)).toThrow(RangeError);
    // a cursor out of range (corrupt next_device_id) starts over at the beginning
    expect(new DeviceIdBitmap(99, 7).allocate()).toBe(1);
  });

  it('marking twice counts once', () => {
    const b = new DeviceIdBitmap(0, 15);
    b.markUsed(3);
    b.markUsed(3);
    expect(b.used).toBe(1);
    b.markFree(3);
    b.markFree(3);
    expect(b.used).toBe(0);
    expect(b.isFree(3)).toBe(true);
  });
});

describe('metadata files', () => {
  let dir = '';
  beforeEach(() => {
    dir = makeTmp('gd-dm-meta-');
  });
  afterEach(() => removeTmp(dir));

  it('writes Docker\'s per-device JSON, with the base device as "base"', async () => {
    const m = new MetadataStore(dir, false);
    await m.saveDevice({ hash: '', deviceId: 1, size: 10 * G, transactionId: 1, initialized: true, deleted: false });
    await m.saveDevice({ hash: 'abc', deviceId: 7, size: 10 * G, transactionId: 4, initialized: false, deleted: true });
    expect(fs.readFileSync(path.join(dir, 'base'), 'utf8')).toBe('{"device_id":1,"size":10737418240,"transaction_id":1,"initialized":true,"deleted":false}');
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'abc'), 'utf8'))).toEqual({ device_id: 7, size: 10 * G, transaction_id: 4, initialized: false, deleted: true });
    expect(await m.loadDevice('abc')).toEqual({ hash: 'abc', deviceId: 7, size: 10 * G, transactionId: 4, initialized: false, deleted: true });
    expect(await m.loadDevice('missing')).toBeNull();
    expect((await m.loadAllDevices()).map((d) => d.hash).sort()).toEqual(['', 'abc']);
    await m.removeDevice('abc');
    await m.removeDevice('abc');
    expect(await m.loadDevice('abc')).toBeNull();
  });

  it('stores layers named like the fixed files under @<id>, and skips other files', async () => {
    const m = new MetadataStore(dir, false);
    for (const id of ['base', 'deviceset-metadata', 'transaction-metadata']) {
      await m.saveDevice({ hash: id, deviceId: 3, size: 1, transactionId: 1, initialized: false, deleted: false });
      expect(fs.existsSync(path.join(dir, `@${id}`))).toBe(true);
    }
    await m.saveDeviceSet({ nextDeviceId: 3, baseDeviceUuid: 'u', baseDeviceFilesystem: 'ext4' });
    await m.saveTransaction({ openTransactionId: 2, deviceHash: 'base', deviceId: 3 });
    fs.writeFileSync(path.join(dir, '.tmp-1234-x'), 'partial');
    fs.writeFileSync(path.join(dir, 'not an id!'), '{}');
    expect((await m.loadAllDevices()).map((d) => d.hash).sort()).toEqual(['base', 'deviceset-metadata', 'transaction-metadata']);
    expect(MetadataStore.hashOf('base')).toBe('');
    expect(MetadataStore.hashOf('@base')).toBe('base');
    expect(MetadataStore.hashOf('@other')).toBeNull();
    expect(MetadataStore.hashOf('deviceset-metadata')).toBeNull();
  });

  it('round-trips deviceset-metadata and transaction-metadata in Docker\'s format', async () => {
    const m = new MetadataStore(dir, false);
    expect(await m.loadDeviceSet()).toBeNull();
    expect(await m.loadTransaction()).toBeNull();
    await m.saveDeviceSet({ nextDeviceId: 12, baseDeviceUuid: '1b7e8f0c-0000-4000-8000-000000000001', baseDeviceFilesystem: 'xfs' });
    await m.saveTransaction({ openTransactionId: 9, deviceHash: 'layer1', deviceId: 12 });
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'deviceset-metadata'), 'utf8'))).toEqual({
      next_device_id: 12,
      base_device_uuid: '1b7e8f0c-0000-4000-8000-000000000001',
      base_device_filesystem: 'xfs',
    });
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'transaction-metadata'), 'utf8'))).toEqual({ open_transaction_id: 9, device_hash: 'layer1', device_id: 12 });
    expect(await m.loadTransaction()).toEqual({ openTransactionId: 9, deviceHash: 'layer1', deviceId: 12 });
    expect(await m.loadDeviceSet()).toEqual({ nextDeviceId: 12, baseDeviceUuid: '1b7e8f0c-0000-4000-8000-000000000001', baseDeviceFilesystem: 'xfs' });
  });

  it.each([
    ['layer', 'not json', /is not valid JSON/],
    ['layer', '[1,2]', /does not hold a JSON object/],
    ['layer', '{"device_id":-1,"size":1,"transaction_id":1}', /invalid device_id -1/],
    ['layer', '{"device_id":16777216,"size":1,"transaction_id":1}', /invalid device_id/],
    ['layer', '{"device_id":1,"size":"big","transaction_id":1}', /invalid size "big"/],
    ['layer', '{"device_id":1,"size":1,"transaction_id":1.5}', /invalid transaction_id/],
    ['layer', '{"device_id":1,"size":1,"transaction_id":1,"deleted":"yes"}', /non-boolean "deleted"/],
    ['deviceset-metadata', '{"next_device_id":"x"}', /invalid next_device_id/],
    ['deviceset-metadata', '{"next_device_id":1,"base_device_uuid":5}', /non-string "base_device_uuid"/],
    ['transaction-metadata', '{"open_transaction_id":1,"device_hash":"../x","device_id":1}', /invalid device_hash/],
    ['transaction-metadata', '{"open_transaction_id":-3,"device_hash":"","device_id":1}', /invalid open_transaction_id/],
  ])('a corrupt %s file is an error naming it (%s)', async (name, content, why) => {
    const m = new MetadataStore(dir, false);
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    const load = name === 'deviceset-metadata' ? m.loadDeviceSet() : name === 'transaction-metadata' ? m.loadTransaction() : m.loadAllDevices();
    const err = await load.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MetadataError);
    expect(err).toMatchObject({ code: 'ERR_DEVMAPPER_METADATA', file });
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(why);
    // nothing was touched
    expect(fs.readFileSync(file, 'utf8')).toBe(content);
  });
});

describe('thin-pool status lines', () => {
  it('parses a healthy pool', () => {
    expect(parsePoolStatus('3 95/524288 1216/1638400 - rw discard_passdown error_if_no_space - 1024 ')).toEqual({
      transactionId: 3,
      usedMetadataBlocks: 95,
      totalMetadataBlocks: 524288,
      usedDataBlocks: 1216,
      totalDataBlocks: 1638400,
      mode: 'rw',
      needsCheck: false,
    });
  });

  it('parses full, read-only and failed pools', () => {
    expect(parsePoolStatus('7 10/100 100/100 - out_of_data_space discard_passdown error_if_no_space - 10')).toMatchObject({ mode: 'out_of_data_space', usedDataBlocks: 100 });
    expect(parsePoolStatus('7 10/100 50/100 - ro discard_passdown queue_if_no_space needs_check 10')).toMatchObject({ mode: 'ro', needsCheck: true });
    expect(parsePoolStatus('Fail')).toMatchObject({ mode: 'Fail', transactionId: 0 });
  });

  it('refuses a line it cannot read', () => {
    expect(() => parsePoolStatus('x 1/2 3/4')).toThrow(/cannot parse thin-pool status/);
    expect(() => parsePoolStatus('1 2 3')).toThrow(/cannot parse/);
  });
});

describe('human sizes (go-units HumanSize)', () => {
  it.each([
    [0, '0B'],
    [999, '999B'],
    [1000, '1kB'],
    [65536, '65.54kB'],
    [10737418240, '10.74GB'],
    [107374182400, '107.4GB'],
    [2147483648, '2.147GB'],
    [1e24, '1YB'],
  ])('%d -> %s', (n, s) => {
    expect(humanSize(n)).toBe(s);
  });
});

describe('filesystem probing and choice', () => {
  it('reads ext4 and xfs superblocks', () => {
    const ext = Buffer.alloc(2048);
    ext.writeUInt16LE(0xef53, 1024 + 56);
    Buffer.from('0123456789abcdef0123456789abcdef', 'hex').copy(ext, 1024 + 104);
    expect(probeFilesystem(ext)).toEqual({ type: 'ext4', uuid: '01234567-89ab-cdef-0123-456789abcdef' });

    const xfs = Buffer.alloc(2048);
    xfs.write('XFSB', 0, 'latin1');
    Buffer.from('fedcba9876543210fedcba9876543210', 'hex').copy(xfs, 32);
    expect(probeFilesystem(xfs)).toEqual({ type: 'xfs', uuid: 'fedcba98-7654-3210-fedc-ba9876543210' });

    expect(probeFilesystem(Buffer.alloc(2048))).toBeNull();
    expect(probeFilesystem(Buffer.alloc(10))).toBeNull();
  });

  it('picks xfs when mkfs.xfs and the kernel have it and the base is large enough, else ext4', () => {
    const yes = { hasTool: () => true, kernelHasFs: () => true };
    expect(chooseDefaultFs(10 * G, yes)).toBe('xfs');
    expect(chooseDefaultFs(100 * M, yes)).toBe('ext4');
    expect(chooseDefaultFs(10 * G, { hasTool: () => false, kernelHasFs: () => true })).toBe('ext4');
    expect(chooseDefaultFs(10 * G, { hasTool: () => true, kernelHasFs: () => false })).toBe('ext4');
  });
});
