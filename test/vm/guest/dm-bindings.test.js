'use strict';
// Device-mapper bindings against a real kernel, run inside the test VM (the host kernel has no device-mapper):
//   GRAPHDRIVER_ADDON=/host/build/Release/graphdriver.node SCRATCH=/scratch node --test test/vm/guest/dm-bindings.test.js
// Dependency-free on purpose: it loads the .node directly (wrapped with the compiled argument checks when
// dist/ is present next to the addon's build/) and uses only node:test, node:assert and mkfs.ext4.
//
// Flow: sparse data/metadata files on SCRATCH (tmpfs) -> loop devices -> thin-pool -> thin volume 0 -> ext4 ->
// file written -> origin suspended, `create_snap 1 0`, resumed -> snapshot activated, file read back and changed
// -> origin unchanged; plus status/table/info/list parsing, messages, a multi-target table, a read-only device,
// deferred removal of an open device, and full teardown (also on failure, in after()).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

// ---- bindings -------------------------------------------------------------------------------------------
const ADDON = process.env.GRAPHDRIVER_ADDON || '/host/build/Release/graphdriver.node';

function loadBindings() {
  const raw = require(ADDON);
  // build/Release/graphdriver.node -> dist/native/bindings.js (tsconfig.build.json: rootDir lib, outDir dist)
  const wrapper = path.resolve(path.dirname(ADDON), '..', '..', 'dist', 'native', 'bindings.js');
  if (fs.existsSync(wrapper)) {
    try {
      return require(wrapper).checkedBindings(raw);
    } catch (e) {
      process.stderr.write(`dm-bindings: not using ${wrapper}: ${e && e.message}\n`);
    }
  }
  return raw;
}

const b = loadBindings();

// ---- helpers --------------------------------------------------------------------------------------------
const MiB = 1024 * 1024;
const SECTOR = 512;
const DATA_SIZE = 512 * MiB;
const META_SIZE = 64 * MiB;
const THIN_SIZE = 1024 * MiB;
const BLOCK_SECTORS = 128; // thin-pool data block size: 64 KiB
const S_IFBLK = 0o060000;
// the guest image copies host binaries to their host paths; fall back to PATH lookup by spawnSync
const MKFS_EXT4 = ['/usr/sbin/mkfs.ext4', '/sbin/mkfs.ext4'].find((p) => fs.existsSync(p)) || 'mkfs.ext4';

// glibc major()/minor() of a dev_t, in plain arithmetic (st_rdev can exceed 32 bits).
const devMajor = (d) => (Math.floor(d / 256) % 4096) + Math.floor(d / 2 ** 44) * 4096;
const devMinor = (d) => (d % 256) + (Math.floor(d / 2 ** 20) % 2 ** 24) * 256;
const mm = (dev) => `${devMajor(dev)}:${devMinor(dev)}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function rejection(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail('expected the call to reject');
}

async function waitFor(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

// ---- state shared by the steps (and by the cleanup) --------------------------------------------------------
const tag = `gdt${process.pid}`;
const names = { pool: `${tag}-pool`, thin: `${tag}-thin`, snap: `${tag}-snap`, multi: `${tag}-multi`, ro: `${tag}-ro` };
const POOL_UUID = `${tag}-pool-uuid`;
const scratchRoot = process.env.SCRATCH || '/scratch';
let work = '';
const loops = {}; // data, meta, lin -> /dev/loopN
const created = []; // DM names we created, in creation order
const nodes = []; // device nodes we created ourselves
const mounted = new Set();
let pool; // DmInfo
let thin; // DmInfo
let snap; // DmInfo
let heldFd = null;

// Block device node of a DM device: devtmpfs's /dev/dm-<minor> when present, else /dev/mapper/<name> (made with
// mknod from the dev number dmCreate returned, since there is no udev in the guest).
async function deviceNode(info) {
  const dmNode = `/dev/dm-${info.minor}`;
  const mapperNode = `/dev/mapper/${info.name}`;
  const matches = (p) => {
    try {
      const st = fs.statSync(p);
      return st.isBlockDevice() && st.rdev === info.dev;
    } catch {
      return false;
    }
  };
  // devtmpfs creates the node when the disk is registered (first table load); give it a moment anyway
  for (let i = 0; i < 20; i++) {
    if (matches(dmNode)) return dmNode;
    if (matches(mapperNode)) return mapperNode;
    await sleep(50);
  }
  fs.mkdirSync('/dev/mapper', { recursive: true });
  if (typeof b.mknod === 'function') {
    await b.mknod(mapperNode, S_IFBLK | 0o600, info.dev);
  } else {
    run('mknod', ['-m', '0600', mapperNode, 'b', String(info.major), String(info.minor)]);
  }
  nodes.push(mapperNode);
  assert.ok(matches(mapperNode), `${mapperNode} has dev ${mm(info.dev)}`);
  return mapperNode;
}

async function mountExt4(dev, dir) {
  fs.mkdirSync(dir, { recursive: true });
  await b.mount(dev, dir, 'ext4', 0, null);
  mounted.add(dir);
}

async function unmount(dir) {
  await b.umount(dir, 0);
  mounted.delete(dir);
}

async function activate(name, targets, opts) {
  const c = await b.dmCreate(name, opts);
  created.push(name);
  const loaded = await b.dmLoad(name, targets);
  assert.equal(loaded.inactiveTable, true, 'a loaded table waits in the inactive slot');
  const live = await b.dmResume(name);
  assert.equal(live.liveTable, true);
  assert.equal(live.inactiveTable, false);
  assert.equal(live.suspended, false);
  assert.equal(live.dev, c.dev);
  return live;
}

function parsePoolStatus(line) {
  // <transaction id> <used meta>/<total meta> <used data>/<total data> <held root> rw|ro|... (dm thin-pool docs)
  const m = /^(\d+) (\d+)\/(\d+) (\d+)\/(\d+) /.exec(line);
  assert.ok(m, `thin-pool status parses: ${JSON.stringify(line)}`);
  const [tid, usedMeta, totalMeta, usedData, totalData] = m.slice(1).map(Number);
  return { tid, usedMeta, totalMeta, usedData, totalData, rest: line.slice(m[0].length) };
}

// ---- the steps ------------------------------------------------------------------------------------------
describe('device-mapper bindings (thin provisioning round trip)', { timeout: 300000 }, () => {
  before(async () => {
    assert.ok(fs.existsSync('/dev/mapper/control'), 'this test needs device-mapper (/dev/mapper/control)');
    fs.mkdirSync(scratchRoot, { recursive: true });
    work = fs.mkdtempSync(path.join(scratchRoot, 'dm-'));
    const files = { data: DATA_SIZE, meta: META_SIZE, lin: 1 * MiB };
    for (const [k, size] of Object.entries(files)) {
      const f = path.join(work, k);
      fs.writeFileSync(f, '');
      fs.truncateSync(f, size); // sparse; thin-pool formats fresh metadata when its first block reads as zeroes
      loops[k] = (await b.loopAttach(f)).device;
      assert.equal(fs.statSync(loops[k]).isBlockDevice(), true);
    }
  });

  after(async () => {
    // Best effort, in reverse, so that a failed step still leaves the guest clean.
    if (heldFd !== null) fs.closeSync(heldFd);
    for (const dir of [...mounted].reverse()) await b.umount(dir, 2 /* MNT_DETACH */).catch(() => undefined);
    for (const name of [...created].reverse()) {
      if ((await b.dmInfo(name).catch(() => null)) === null) continue;
      await b.dmResume(name).catch(() => undefined); // a suspended device cannot be removed cleanly
      await b.dmRemove(name).catch((e) => process.stderr.write(`cleanup: dmRemove ${name}: ${e.message}\n`));
    }
    for (const n of nodes) fs.rmSync(n, { force: true });
    for (const dev of Object.values(loops)) await b.loopDetach(dev).catch(() => undefined);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('reports the DM interface version', async () => {
    const v = await b.dmVersion();
    assert.equal(v.length, 3);
    assert.equal(v[0], 4, 'DM ioctl interface major 4');
    assert.ok(v.every((n) => Number.isInteger(n) && n >= 0));
  });

  it('creates and activates a thin-pool on the loop devices', async () => {
    const created0 = await b.dmCreate(names.pool, { uuid: POOL_UUID });
    created.push(names.pool);
    assert.equal(created0.name, names.pool);
    assert.equal(created0.uuid, POOL_UUID);
    assert.equal(created0.liveTable, false);
    assert.equal(created0.inactiveTable, false);
    assert.equal(created0.targetCount, 0);
    assert.ok(created0.major > 0);
    assert.equal(created0.dev, created0.major * 256 + (created0.minor % 256) + Math.floor(created0.minor / 256) * 2 ** 20);

    const params = `${loops.meta} ${loops.data} ${BLOCK_SECTORS} 32768 1 skip_block_zeroing`;
    const loaded = await b.dmLoad(names.pool, [{ start: 0, length: DATA_SIZE / SECTOR, type: 'thin-pool', params }]);
    assert.equal(loaded.inactiveTable, true);
    assert.equal(loaded.liveTable, false);
    pool = await b.dmResume(names.pool);
    assert.equal(pool.liveTable, true);
    assert.equal(pool.targetCount, 1);

    const info = await b.dmInfo(names.pool);
    assert.deepEqual(
      { ...info, eventNr: 0, openCount: 0 },
      {
        name: names.pool, uuid: POOL_UUID, major: pool.major, minor: pool.minor, dev: pool.dev, openCount: 0,
        eventNr: 0, targetCount: 1, suspended: false, readOnly: false, liveTable: true, inactiveTable: false,
        deferredRemove: false,
      },
    );
    assert.equal(await b.dmInfo(`${tag}-does-not-exist`), null);
  });

  it('creates thin volume 0, formats it with ext4 and writes a file', async () => {
    assert.equal(await b.dmMessage(names.pool, 0, 'create_thin 0'), '');
    thin = await activate(names.thin, [
      { start: 0, length: THIN_SIZE / SECTOR, type: 'thin', params: `${mm(pool.dev)} 0` },
    ]);
    const node = await deviceNode(thin);
    run(MKFS_EXT4, ['-q', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', node]);
    const dir = path.join(work, 'origin');
    await mountExt4(node, dir);
    assert.ok((await b.dmInfo(names.thin)).openCount >= 1, 'a mounted device is open');
    fs.writeFileSync(path.join(dir, 'hello.txt'), 'from the origin\n');
    await unmount(dir);
  });

  it('snapshots the origin while it is suspended', async () => {
    const s = await b.dmSuspend(names.thin);
    assert.equal(s.suspended, true);
    assert.equal((await b.dmInfo(names.thin)).suspended, true);
    // suspending twice is not an error
    assert.equal((await b.dmSuspend(names.thin, { noFlush: true, skipLockfs: true })).suspended, true);
    assert.equal(await b.dmMessage(names.pool, 0, 'create_snap 1 0'), '');
    const r = await b.dmResume(names.thin);
    assert.equal(r.suspended, false);
    assert.equal((await b.dmInfo(names.thin)).suspended, false);
  });

  it('the snapshot has the file, takes writes, and leaves the origin unchanged', async () => {
    snap = await activate(names.snap, [
      { start: 0, length: THIN_SIZE / SECTOR, type: 'thin', params: `${mm(pool.dev)} 1` },
    ]);
    assert.notEqual(snap.minor, thin.minor);
    const snapDir = path.join(work, 'snap');
    await mountExt4(await deviceNode(snap), snapDir);
    assert.equal(fs.readFileSync(path.join(snapDir, 'hello.txt'), 'utf8'), 'from the origin\n');
    fs.writeFileSync(path.join(snapDir, 'hello.txt'), 'changed in the snapshot\n');
    fs.writeFileSync(path.join(snapDir, 'only-in-snap'), 'x');
    await unmount(snapDir);

    const originDir = path.join(work, 'origin');
    await mountExt4(await deviceNode(thin), originDir);
    assert.equal(fs.readFileSync(path.join(originDir, 'hello.txt'), 'utf8'), 'from the origin\n');
    assert.equal(fs.existsSync(path.join(originDir, 'only-in-snap')), false);
    await unmount(originDir);

    // and the snapshot kept its own change
    await mountExt4(await deviceNode(snap), snapDir);
    assert.equal(fs.readFileSync(path.join(snapDir, 'hello.txt'), 'utf8'), 'changed in the snapshot\n');
    await unmount(snapDir);
  });

  it('dmStatus reports parseable pool and thin status lines', async () => {
    const st = await b.dmStatus(names.pool);
    assert.equal(st.length, 1);
    assert.equal(st[0].type, 'thin-pool');
    assert.equal(st[0].start, 0);
    assert.equal(st[0].length, DATA_SIZE / SECTOR);
    const p = parsePoolStatus(st[0].params);
    assert.equal(p.tid, 0);
    assert.equal(p.totalData, DATA_SIZE / SECTOR / BLOCK_SECTORS);
    assert.ok(p.usedData > 0 && p.usedData <= p.totalData, `used data blocks ${p.usedData}`);
    assert.ok(p.usedMeta > 0 && p.usedMeta <= p.totalMeta);
    assert.match(p.rest, /\brw\b/);

    const ts = await b.dmStatus(names.thin);
    assert.equal(ts.length, 1);
    assert.equal(ts[0].type, 'thin');
    // <nr mapped sectors> <highest mapped sector>
    const [mapped, highest] = ts[0].params.trim().split(/\s+/).map(Number);
    assert.ok(mapped > 0 && highest < THIN_SIZE / SECTOR, ts[0].params);
  });

  it('dmTable returns what was loaded (devices as major:minor)', async () => {
    const pt = await b.dmTable(names.pool);
    assert.equal(pt.length, 1);
    assert.deepEqual({ ...pt[0], params: pt[0].params.trim().split(/\s+/) }, {
      start: 0,
      length: DATA_SIZE / SECTOR,
      type: 'thin-pool',
      params: [
        mm(fs.statSync(loops.meta).rdev), mm(fs.statSync(loops.data).rdev), String(BLOCK_SECTORS), '32768', '1',
        'skip_block_zeroing',
      ],
    });
    const tt = await b.dmTable(names.thin);
    assert.deepEqual(tt.map((t) => ({ ...t, params: t.params.trim() })), [
      { start: 0, length: THIN_SIZE / SECTOR, type: 'thin', params: `${mm(pool.dev)} 0` },
    ]);
  });

  it('dmList contains our devices with their numbers', async () => {
    const list = await b.dmList();
    for (const info of [pool, thin, snap]) {
      const e = list.find((x) => x.name === info.name);
      assert.ok(e, `${info.name} listed`);
      assert.deepEqual(e, { name: info.name, major: info.major, minor: info.minor, dev: info.dev });
    }
  });

  it('set_transaction_id moves the pool transaction id', async () => {
    assert.equal(await b.dmMessage(names.pool, 0, 'set_transaction_id 0 1'), '');
    assert.equal(parsePoolStatus((await b.dmStatus(names.pool))[0].params).tid, 1);
    // the old id no longer matches, and the error names the ioctl, the device and the message
    const e = await rejection(b.dmMessage(names.pool, 0, 'set_transaction_id 0 2'));
    assert.equal(e.code, 'EINVAL');
    assert.equal(e.syscall, 'ioctl(DM_TARGET_MSG)');
    assert.equal(e.path, names.pool);
    assert.match(e.message, /set_transaction_id 0 2/);
    // a sector past the end of the device finds no target
    const far = await rejection(b.dmMessage(names.pool, DATA_SIZE / SECTOR + 8, 'set_transaction_id 1 2'));
    assert.equal(far.code, 'EINVAL');
  });

  it('loads multi-target tables and honours readOnly', async () => {
    const lin = mm(fs.statSync(loops.lin).rdev);
    const targets = [
      { start: 0, length: 8, type: 'linear', params: `${lin} 0` },
      { start: 8, length: 16, type: 'error', params: '' },
      { start: 24, length: 1000, type: 'linear', params: `${lin} 1024` },
    ];
    const multi = await activate(names.multi, targets);
    assert.equal(multi.targetCount, 3);
    assert.equal(multi.readOnly, false);
    assert.deepEqual((await b.dmTable(names.multi)).map((t) => ({ ...t, params: t.params.trim() })), targets);
    assert.equal((await b.dmStatus(names.multi)).length, 3);

    const ro = await activate(names.ro, [{ start: 0, length: 8, type: 'linear', params: `${lin} 0` }], {
      readOnly: true,
    });
    assert.equal(ro.readOnly, true);
    assert.equal((await b.dmInfo(names.ro)).readOnly, true);

    for (const n of [names.ro, names.multi]) {
      await b.dmRemove(n);
      assert.equal(await b.dmInfo(n), null);
    }

    const bad = await rejection(b.dmLoad(names.pool, [{ start: 0, length: 8, type: 'no-such-target', params: '' }]));
    assert.equal(bad.syscall, 'ioctl(DM_TABLE_LOAD)');
    assert.equal(bad.path, names.pool);
    assert.match(bad.message, /no-such-target/);
    assert.equal((await b.dmInfo(names.pool)).inactiveTable, false, 'a failed load leaves no inactive table');
  });

  it('defers removal of an open device until it is closed', async () => {
    const node = await deviceNode(snap);
    heldFd = fs.openSync(node, 'r');
    const busy = await rejection(b.dmRemove(names.snap));
    assert.equal(busy.code, 'EBUSY');
    assert.equal(busy.syscall, 'ioctl(DM_DEV_REMOVE)');
    assert.equal(busy.path, names.snap);

    await b.dmRemove(names.snap, { deferred: true });
    const info = await b.dmInfo(names.snap);
    assert.ok(info, 'still present while open');
    assert.equal(info.deferredRemove, true);
    assert.ok(info.openCount >= 1);

    fs.closeSync(heldFd);
    heldFd = null;
    // the kernel removes it from a workqueue after the last close
    await waitFor(`${names.snap} to disappear`, async () => (await b.dmInfo(names.snap)) === null);
    assert.equal((await b.dmList()).some((e) => e.name === names.snap), false);
  });

  it('deletes thin devices and tears everything down', async () => {
    const before = parsePoolStatus((await b.dmStatus(names.pool))[0].params).usedData;
    assert.equal(await b.dmMessage(names.pool, 0, 'delete 1'), '');
    const gone = await rejection(b.dmMessage(names.pool, 0, 'delete 1'));
    assert.equal(gone.syscall, 'ioctl(DM_TARGET_MSG)');

    await b.dmRemove(names.thin);
    assert.equal(await b.dmInfo(names.thin), null);
    assert.equal(await b.dmMessage(names.pool, 0, 'delete 0'), '');
    const usage = parsePoolStatus((await b.dmStatus(names.pool))[0].params);
    assert.ok(usage.usedData < before, `deleting both thin devices frees data blocks (${before} -> ${usage.usedData})`);

    await b.dmRemove(names.pool);
    assert.equal(await b.dmInfo(names.pool), null);
    const missing = await rejection(b.dmRemove(names.pool));
    assert.equal(missing.code, 'ENXIO');

    for (const k of Object.keys(loops)) {
      await b.loopDetach(loops[k]);
      delete loops[k];
    }
  });
});
