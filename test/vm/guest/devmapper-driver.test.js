'use strict';
// Runs inside the test VM (npm run test:vm): DevMapperDriver's own cases on a real kernel, beyond the shared
// conformance suite (devmapper-conformance.test.js): an xfs base device and Docker's status keys, snapshots of an
// active origin, restart with layers intact, growing the loop files, a crash between the snapshot message and the
// record (a real SIGKILL) rolled back at the next start, refused bad metadata / foreign pools / second instances,
// deferred removal and deletion, the size option, and a pool running out of space and recovering.
// Each describe is one scenario whose steps build on each other, to keep the number of pools (and mkfs runs) low.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const JS = path.resolve(__dirname, '..', '..', '..', 'node_modules', '.cache', 'graphdriver-vm');
const { DevMapperDriver } = require(path.join(JS, 'lib', 'drivers', 'devmapper'));
const { parsePoolStatus } = require(path.join(JS, 'lib', 'drivers', 'devmapper', 'pool'));
const { loadBindings } = require(path.join(JS, 'lib', 'native', 'bindings'));

const b = loadBindings();
const SCRATCH = process.env.SCRATCH || '/tmp';

async function rejection(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail('expected a rejection');
}

const statusOf = async (d) => new Map(await d.status());
const readJson = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));

/** Loop devices whose backing file is `file`. */
function loopsOf(file) {
  const out = [];
  for (const n of fs.readdirSync('/sys/block').filter((x) => x.startsWith('loop'))) {
    try {
      if (fs.readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim() === file) out.push(`/dev/${n}`);
    } catch {
      // not attached
    }
  }
  return out;
}

/** Mount points at or below `dir`, from /proc/self/mountinfo. */
function mountsUnder(dir) {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const f = l.split(' ');
      const sep = f.indexOf('-', 6);
      return { mountPoint: f[4], fstype: f[sep + 1], source: f[sep + 2], superOptions: f[sep + 3] || '' };
    })
    .filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`));
}

const ours = async (prefix) => (await b.dmList()).filter((e) => e.name.startsWith(`${prefix}-`)).map((e) => e.name);

async function waitFor(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Leaves nothing behind: drivers cleaned up, then any device, loop device and mount of this home removed. */
async function teardown(drivers, home, prefix) {
  for (const d of drivers) await d.cleanup().catch(() => undefined);
  for (const m of mountsUnder(home).reverse()) await b.umount(m.mountPoint, 2).catch(() => undefined);
  if (prefix) {
    const names = await ours(prefix).catch(() => []);
    // thin devices before the pool
    for (const n of names.sort((x, y) => Number(x.endsWith('-pool')) - Number(y.endsWith('-pool')))) {
      await b.dmResume(n).catch(() => undefined);
      await b.dmRemove(n).catch(() => undefined);
      fs.rmSync(`/dev/mapper/${n}`, { force: true });
    }
  }
  for (const f of ['data', 'metadata']) for (const l of loopsOf(path.join(home, 'devicemapper', f))) await b.loopDetach(l).catch(() => undefined);
}

describe('DevMapperDriver on a loop-file pool with an xfs base device', () => {
  const root = fs.mkdtempSync(path.join(SCRATCH, 'dm-drv-'));
  const home = path.join(root, 'devicemapper');
  const dataFile = path.join(home, 'devicemapper', 'data');
  const metaFile = path.join(home, 'devicemapper', 'metadata');
  const OPTS = ['dm.basesize=512M', 'dm.loopdatasize=1G', 'dm.loopmetadatasize=32M'];
  const GROWN = ['dm.basesize=1G', 'dm.loopdatasize=2G', 'dm.loopmetadatasize=64M'];
  const drivers = [];
  let d;
  let prefix = '';
  const init = async (opts) => {
    const x = await DevMapperDriver.init(home, opts);
    drivers.push(x);
    prefix = x.devices.prefix;
    return x;
  };
  const reopen = async (opts) => {
    await d.cleanup();
    d = await init(opts);
    return d;
  };
  const read = async (id, name) => {
    const dir = await d.get(id);
    try {
      return fs.readFileSync(path.join(dir, name), 'utf8');
    } finally {
      await d.put(id);
    }
  };

  after(async () => {
    await teardown(drivers, home, prefix);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('creates sparse loop files, the pool and an xfs base device, and reports Docker\'s status keys', async () => {
    d = await init(OPTS);
    const st = await statusOf(d);
    assert.equal(st.get('Pool Name'), `${prefix}-pool`);
    assert.equal(st.get('Pool Blocksize'), '65.54kB');
    assert.equal(st.get('Base Device Size'), '536.9MB');
    assert.equal(st.get('Backing Filesystem'), 'xfs');
    assert.equal(st.get('Udev Sync Supported'), 'false');
    assert.equal(st.get('Data Space Total'), '1.074GB');
    assert.equal(st.get('Data loop file'), dataFile);
    assert.equal(st.get('Metadata loop file'), metaFile);
    assert.deepEqual(loopsOf(dataFile), [st.get('Data file')]);
    assert.deepEqual(loopsOf(metaFile), [st.get('Metadata file')]);
    for (const [f, size] of [[dataFile, 1024 ** 3], [metaFile, 32 * 1024 ** 2]]) {
      const s = fs.statSync(f);
      assert.equal(s.size, size);
      assert.ok(s.blocks * 512 < size / 4, `${f} is sparse (${s.blocks * 512} bytes allocated)`);
    }
    assert.deepEqual(readJson(path.join(home, 'metadata', 'base')), { device_id: 1, size: 512 * 1024 ** 2, transaction_id: 1, initialized: true, deleted: false });
    const set = readJson(path.join(home, 'metadata', 'deviceset-metadata'));
    assert.equal(set.base_device_filesystem, 'xfs');
    assert.match(set.base_device_uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.deepEqual(await ours(prefix), [`${prefix}-pool`], 'only the pool is active');
  });

  it('layers are thin snapshots: an active origin is snapshotted consistently and changes stay in their layer', async () => {
    await d.create('l1', null);
    const dir1 = await d.get('l1');
    assert.equal(dir1, path.join(home, 'mnt', 'l1', 'rootfs'));
    const name1 = (await d.getMetadata('l1')).DeviceName;
    assert.ok(fs.statSync(`/dev/mapper/${name1}`).isBlockDevice(), 'the /dev/mapper node exists while the layer is mounted');
    const [m] = mountsUnder(path.join(home, 'mnt', 'l1'));
    assert.equal(m.fstype, 'xfs');
    assert.equal(m.source, `/dev/mapper/${name1}`);
    assert.match(m.superOptions, /\bnouuid\b/);
    fs.writeFileSync(path.join(dir1, 'hello'), 'from l1\n');

    // l1 is mounted and active while l2 is made from it: suspended around create_snap, so the write is in l2
    await d.create('l2', 'l1');
    assert.equal((await b.dmInfo(name1)).suspended, false);
    const dir2 = await d.get('l2');
    assert.equal(fs.readFileSync(path.join(dir2, 'hello'), 'utf8'), 'from l1\n');
    fs.writeFileSync(path.join(dir2, 'hello'), 'changed in l2\n');
    fs.writeFileSync(path.join(dir2, 'only-l2'), 'x');
    assert.equal(fs.readFileSync(path.join(dir1, 'hello'), 'utf8'), 'from l1\n');
    assert.equal(fs.existsSync(path.join(dir1, 'only-l2')), false);
    await d.put('l2');
    await d.put('l1');
    assert.deepEqual(await ours(prefix), [`${prefix}-pool`], 'put deactivates the devices');
    assert.equal(fs.existsSync(`/dev/mapper/${name1}`), false, 'and removes their nodes');
    assert.deepEqual(mountsUnder(path.join(home, 'mnt')), []);
  });

  it('cleanup releases devices, pool and loop devices; a restart finds the layers intact', async () => {
    await d.cleanup();
    assert.deepEqual(await ours(prefix), []);
    assert.deepEqual(loopsOf(dataFile), []);
    assert.deepEqual(loopsOf(metaFile), []);
    assert.deepEqual(mountsUnder(home), []);
    d = await init(OPTS);
    assert.equal(await d.exists('l1'), true);
    assert.equal(await d.exists('l2'), true);
    assert.equal(d.parentOf('l2'), 'l1');
    assert.equal(await read('l1', 'hello'), 'from l1\n');
    assert.equal(await read('l2', 'hello'), 'changed in l2\n');
    assert.equal((await rejection(d.remove('l1'))).code, 'ERR_LAYER_IN_USE');
  });

  it('growing the loop sizes grows the files and the pool, growing dm.basesize the base filesystem; shrinking is refused', async () => {
    await reopen(GROWN);
    assert.equal(fs.statSync(dataFile).size, 2 * 1024 ** 3);
    assert.equal(fs.statSync(metaFile).size, 64 * 1024 ** 2);
    const st = await statusOf(d);
    assert.equal(st.get('Data Space Total'), '2.147GB');
    assert.equal(st.get('Metadata Space Total'), '67.11MB');
    assert.equal(st.get('Base Device Size'), '1.074GB');
    assert.equal(await read('l2', 'hello'), 'changed in l2\n');
    // a new base layer gets the grown filesystem (xfs_growfs ran on the base device)
    await d.create('fresh', null);
    const fresh = await b.statfs(await d.get('fresh'));
    assert.ok(fresh.blocks * fresh.bsize > 900 * 1024 ** 2, `grown base filesystem: ${fresh.blocks * fresh.bsize} bytes`);
    await d.put('fresh');
    await d.remove('fresh');

    await d.cleanup();
    const err = await rejection(init(OPTS));
    assert.equal(err.code, 'ERR_INVALID_OPTION');
    assert.match(err.message, /dm\.loopdatasize=1\.074GB is smaller than the existing .* a pool cannot shrink/);
    assert.equal(fs.statSync(dataFile).size, 2 * 1024 ** 3, 'the file is unchanged');
    assert.deepEqual(await ours(prefix), [], 'the refused start left no pool');
    assert.deepEqual(loopsOf(dataFile), []);
    d = await init(GROWN);
  });

  it('a SIGKILL right after create_snap (before the record is written) is rolled back at the next start', async () => {
    const pool = `${prefix}-pool`;
    const tidBefore = parsePoolStatus((await b.dmStatus(pool))[0].params).transactionId;
    await d.cleanup(); // the child takes the home over
    const child = spawnSync(process.execPath, [path.join(__dirname, '..', 'devmapper-crash-child.js'), home, 'crashed', 'l2'], {
      env: { ...process.env, DM_OPTIONS: JSON.stringify(GROWN) },
      encoding: 'utf8',
      timeout: 120000,
    });
    assert.equal(child.signal, 'SIGKILL', `the child died by SIGKILL (status ${child.status}, stderr ${child.stderr})`);
    const thinId = Number(/CRASH-AT (\d+)/.exec(child.stdout)[1]);
    // what the dead process left: the pool still active, a transaction open for the new thin device, no record
    assert.ok((await b.dmInfo(pool)) !== null, 'the pool stays active after the crash');
    assert.deepEqual(readJson(path.join(home, 'metadata', 'transaction-metadata')), { open_transaction_id: tidBefore + 1, device_hash: 'crashed', device_id: thinId });
    assert.equal(fs.existsSync(path.join(home, 'metadata', 'crashed')), false);

    d = await init(GROWN); // adopts the active pool, takes over the dead process's lock, rolls back
    assert.equal(await d.exists('crashed'), false);
    assert.equal(parsePoolStatus((await b.dmStatus(pool))[0].params).transactionId, tidBefore);
    const gone = await rejection(b.dmMessage(pool, 0, `delete ${thinId}`));
    assert.equal(gone.syscall, 'ioctl(DM_TARGET_MSG)', 'the thin device made by the dead process was deleted');
    await d.create('crashed', 'l2');
    assert.equal(await read('crashed', 'hello'), 'changed in l2\n');
    await d.remove('crashed');
  });

  it('refuses a second instance, a changed base UUID, a corrupt record and a pool without records, deleting nothing', async () => {
    assert.equal((await rejection(DevMapperDriver.init(home, GROWN))).code, 'ERR_DRIVER_LOCKED');
    await d.cleanup();
    const meta = path.join(home, 'metadata');
    const setFile = path.join(meta, 'deviceset-metadata');
    const saved = fs.readFileSync(setFile, 'utf8');
    const attempt = async (code, pattern) => {
      const e = await rejection(init(GROWN));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, pattern);
      assert.deepEqual(await ours(prefix), [], 'the refused start left no device active');
    };

    fs.writeFileSync(setFile, JSON.stringify({ ...JSON.parse(saved), base_device_uuid: '00000000-1111-2222-3333-444444444444' }));
    await attempt('ERR_DEVMAPPER_UUID_MISMATCH', /00000000-1111-2222-3333-444444444444/);
    fs.writeFileSync(setFile, saved);

    const l1File = path.join(meta, 'l1');
    const l1 = fs.readFileSync(l1File, 'utf8');
    fs.writeFileSync(l1File, '{"device_id": 2, "size"');
    await attempt('ERR_DEVMAPPER_METADATA', new RegExp(l1File.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')));
    fs.writeFileSync(l1File, l1);

    fs.renameSync(meta, `${meta}.moved`);
    await attempt('ERR_DEVMAPPER_FOREIGN_POOL', /refusing to take over thin-pool/);
    fs.rmSync(meta, { recursive: true, force: true });
    fs.renameSync(`${meta}.moved`, meta);

    d = await init(GROWN);
    assert.equal(await read('l2', 'hello'), 'changed in l2\n');
  });

  it('the size storage option gives a layer a larger filesystem', async () => {
    await d.createReadWrite('big', 'l1', { storageOpt: { size: '1G' } });
    assert.equal((await d.getMetadata('big')).DeviceSize, String(1024 ** 3));
    const dir = await d.get('big');
    const s = await b.statfs(dir);
    assert.ok(s.blocks * s.bsize > 900 * 1024 ** 2, `grown filesystem: ${s.blocks * s.bsize} bytes`);
    assert.equal(fs.readFileSync(path.join(dir, 'hello'), 'utf8'), 'from l1\n');
    await d.put('big');
    assert.equal((await rejection(d.create('small', 'big', { storageOpt: { size: '512M' } }))).code, 'ERR_INVALID_OPTION');
    await d.remove('big');
  });

  it('defers removing a device held open and deleting it while busy, and reaps it once it is closed', async () => {
    d = await reopen([...GROWN, 'dm.use_deferred_removal=true', 'dm.use_deferred_deletion=true']);
    await d.create('held', 'l1');
    await d.get('held');
    const name = (await d.getMetadata('held')).DeviceName;
    const fd = fs.openSync(`/dev/mapper/${name}`, 'r');
    try {
      await d.put('held');
      const info = await b.dmInfo(name);
      assert.ok(info && info.deferredRemove, 'removal deferred while the device is open');
      await d.remove('held');
      assert.equal(await d.exists('held'), false);
      assert.equal((await statusOf(d)).get('Deferred Deleted Device Count'), '1');
      assert.equal(readJson(path.join(home, 'metadata', 'held')).deleted, true);
      assert.equal((await rejection(d.create('held', 'l1'))).code, 'ERR_LAYER_IN_USE');
    } finally {
      fs.closeSync(fd);
    }
    await waitFor(`${name} to go away`, async () => (await b.dmInfo(name)) === null);
    await d.create('after', 'l1'); // reaps the deleted device first
    const st = await statusOf(d);
    assert.equal(st.get('Deferred Deleted Device Count'), '0');
    assert.equal(st.get('Deferred Removal Enabled'), 'true');
    assert.equal(fs.existsSync(path.join(home, 'metadata', 'held')), false);
    await d.remove('after');
  });
});

describe('DevMapperDriver when the pool runs out of data space', () => {
  const root = fs.mkdtempSync(path.join(SCRATCH, 'dm-full-'));
  const home = path.join(root, 'devicemapper');
  const drivers = [];
  let d;
  let prefix = '';

  before(async () => {
    // 96M of data for a 64M ext4 base and a 256M layer: the layer can ask for more than the pool has
    d = await DevMapperDriver.init(home, ['dm.fs=ext4', 'dm.basesize=64M', 'dm.loopdatasize=96M', 'dm.loopmetadatasize=16M']);
    drivers.push(d);
    prefix = d.devices.prefix;
  });

  after(async () => {
    await teardown(drivers, home, prefix);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('writes fail with an ENOSPC-class error, snapshots are refused with ENOSPC, and removing the layer makes the pool usable again', async () => {
    const pool = `${prefix}-pool`;
    await d.createReadWrite('fill', null, { storageOpt: { size: '256M' } });
    const dir = await d.get('fill');
    const chunk = Buffer.alloc(1024 * 1024, 0xa5);
    let written = 0;
    let failure = null;
    const fd = fs.openSync(path.join(dir, 'big'), 'w');
    try {
      for (let i = 0; i < 200 && failure === null; i++) {
        try {
          chunk.writeUInt32LE(i, 0); // no two chunks alike
          fs.writeSync(fd, chunk);
          fs.fsyncSync(fd);
          written += chunk.length;
        } catch (e) {
          failure = e;
        }
      }
    } finally {
      try {
        fs.closeSync(fd);
      } catch {
        // close may report the same write-back error again
      }
    }
    assert.ok(failure, `a write failed (wrote ${written} bytes)`);
    assert.ok(['ENOSPC', 'EIO', 'EROFS'].includes(failure.code), `ENOSPC-class error: ${failure.code}`);
    assert.ok(written < 96 * 1024 * 1024, `failed before the pool size (${written} bytes written)`);
    const full = parsePoolStatus((await b.dmStatus(pool))[0].params);
    assert.equal(full.mode, 'out_of_data_space');
    assert.equal(full.usedDataBlocks, full.totalDataBlocks);

    const refused = await rejection(d.create('more', null));
    assert.equal(refused.code, 'ENOSPC');
    assert.equal(refused.errno, -28);
    assert.match(refused.message, /out of data space|free data blocks/);
    assert.equal(await d.exists('more'), false);

    await d.put('fill');
    const dataFile = path.join(home, 'devicemapper', 'data');
    const allocated = fs.statSync(dataFile).blocks * 512;
    await d.remove('fill');
    // dm.blkdiscard (on by default with loop files) handed the blocks back to the sparse file
    const after = fs.statSync(dataFile).blocks * 512;
    assert.ok(after < allocated / 2, `the data file shrank from ${allocated} to ${after} allocated bytes`);
    await waitFor('the pool to leave out_of_data_space', async () => parsePoolStatus((await b.dmStatus(pool))[0].params).mode === 'rw');

    await d.create('more', null);
    const dir2 = await d.get('more');
    fs.writeFileSync(path.join(dir2, 'ok'), Buffer.alloc(4 * 1024 * 1024, 1));
    const fd2 = fs.openSync(path.join(dir2, 'ok'), 'r+');
    fs.fsyncSync(fd2);
    fs.closeSync(fd2);
    await d.put('more');
    assert.equal((await d.getMetadata('more')).DeviceSize, String(64 * 1024 * 1024));
  });
});
