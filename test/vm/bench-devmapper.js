#!/usr/bin/env node
'use strict';
// Speed of DevMapperDriver against the same steps done with dmsetup, in one VM run (the host may have no
// device-mapper). Run it with:
//
//   GRAPHDRIVER_VM_CMD='node test/vm/bench-devmapper.js' npm run test:vm
//
// Measured per layer, on the same pool and with the same parent:
//   ours:     driver.create(id, parent) + driver.get(id) + driver.put(id)
//   dmsetup:  dmsetup message <pool> 0 "create_snap <new> <parent>"; dmsetup message <pool> 0 "set_transaction_id
//             <t> <t+1>"; dmsetup create <name> --table "0 <sectors> thin <pool> <new>"; mount; umount;
//             dmsetup remove <name>
// The dmsetup sequence keeps no records (no transaction file, no per-device JSON): the driver's extra work is
// part of what is measured. Prints one JSON line per phase, a summary, and "BENCH-RESULT {...}".
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const JS = path.resolve(__dirname, '..', '..', 'node_modules', '.cache', 'graphdriver-vm');
const { DevMapperDriver } = require(path.join(JS, 'lib', 'drivers', 'devmapper'));

const { loadBindings } = require(path.join(JS, 'lib', 'native', 'bindings'));
const { defaultRunner } = require(path.join(JS, 'lib', 'drivers', 'devmapper', 'mkfs'));

const N = Number(process.env.BENCH_N || 10);

// BENCH_PROFILE=1: time spent per native call and per external tool, printed at the end.
const profile = new Map();
function account(key, t0) {
  const e = profile.get(key) ?? { calls: 0, ms: 0 };
  e.calls++;
  e.ms += now() - t0;
  profile.set(key, e);
}
const realBindings = loadBindings();
const bindings = process.env.BENCH_PROFILE
  ? new Proxy(realBindings, {
      get(target, prop) {
        const v = target[prop];
        if (typeof v !== 'function') return v;
        return async (...args) => {
          const t0 = now();
          try {
            return await v.apply(target, args);
          } finally {
            account(`native ${String(prop)}`, t0);
          }
        };
      },
    })
  : realBindings;
const run = async (file, args) => {
  const t0 = now();
  try {
    return await defaultRunner(file, args);
  } finally {
    account(`tool ${file}`, t0);
  }
};
const DEPS = { bindings, run };
const SCRATCH = process.env.SCRATCH || '/tmp';
const OPTIONS = (process.env.BENCH_OPTIONS || 'dm.basesize=1G,dm.loopdatasize=4G,dm.loopmetadatasize=64M').split(',');

const now = () => Number(process.hrtime.bigint()) / 1e6;
async function timed(label, fn) {
  const t0 = now();
  const r = await fn();
  const ms = now() - t0;
  console.log(JSON.stringify({ phase: label, ms: Math.round(ms * 10) / 10 }));
  return [r, ms];
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
// Without udev in the guest, libdevmapper must make the /dev/mapper nodes itself, as the driver does.
const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DM_DISABLE_UDEV: '1' } }).toString();

async function main() {
  const root = fs.mkdtempSync(path.join(SCRATCH, 'bench-dm-'));
  const home = path.join(root, 'devicemapper');
  let driver = null;
  try {
    const [d1] = await timed('init (new pool, mkfs of the base device)', () => DevMapperDriver.init(home, OPTIONS, DEPS));
    driver = d1;
    await timed('cleanup', () => driver.cleanup());
    const [d2] = await timed('init (existing pool)', () => DevMapperDriver.init(home, OPTIONS, DEPS));
    driver = d2;
    const fsType = (await driver.status()).find(([k]) => k === 'Backing Filesystem')[1];

    // A parent layer with some content, as an image layer would be.
    await driver.create('parent', null);
    const dir = await driver.get('parent');
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(dir, `f${i}`), `content ${i}\n`);
    await driver.put('parent');

    // ---- ours
    const ours = { create: [], get: [], put: [], total: [] };
    for (let i = 0; i < N; i++) {
      const id = `layer-${i}`;
      const t0 = now();
      await driver.create(id, 'parent');
      const t1 = now();
      const rootfs = await driver.get(id);
      const t2 = now();
      assert.ok(fs.existsSync(path.join(rootfs, 'f1')));
      const t3 = now();
      await driver.put(id);
      const t4 = now();
      ours.create.push(t1 - t0);
      ours.get.push(t2 - t1);
      ours.put.push(t4 - t3);
      ours.total.push(t1 - t0 + (t2 - t1) + (t4 - t3));
    }

    // ---- dmsetup, on the same pool, snapshotting the same parent device
    const pool = driver.devices.pool.name;
    const poolDev = driver.devices.pool.devString;
    const parentId = Number((await driver.getMetadata('parent')).DeviceId);
    const sectors = Math.floor(Number((await driver.getMetadata('parent')).DeviceSize) / 512);
    const mnt = path.join(root, 'dmsetup-mnt');
    fs.mkdirSync(mnt);
    const mountArgs = fsType === 'xfs' ? ['-t', 'xfs', '-o', 'nouuid'] : ['-t', fsType];
    const dm = { create: [], get: [], put: [], total: [] };
    const made = [];
    for (let i = 0; i < N; i++) {
      const tid = Number(sh('dmsetup', ['status', pool]).trim().split(/\s+/)[3]);
      const devId = 0xff0000 + i;
      const name = `bench-dmsetup-${i}`;
      const t0 = now();
      sh('dmsetup', ['message', pool, '0', `create_snap ${devId} ${parentId}`]);
      sh('dmsetup', ['message', pool, '0', `set_transaction_id ${tid} ${tid + 1}`]);
      made.push(devId);
      const t1 = now();
      sh('dmsetup', ['create', name, '--table', `0 ${sectors} thin ${poolDev} ${devId}`]);
      sh('/bb/mount', [...mountArgs, `/dev/mapper/${name}`, mnt]);
      const t2 = now();
      assert.ok(fs.existsSync(path.join(mnt, 'rootfs', 'f1')));
      const t3 = now();
      sh('/bb/umount', [mnt]);
      sh('dmsetup', ['remove', name]);
      const t4 = now();
      dm.create.push(t1 - t0);
      dm.get.push(t2 - t1);
      dm.put.push(t4 - t3);
      dm.total.push(t1 - t0 + (t2 - t1) + (t4 - t3));
    }
    // Give the ids back and put the transaction id where the driver left it... then the driver cannot know about
    // them: delete them and restore the pool's transaction id as the driver expects it.
    const tidNow = Number(sh('dmsetup', ['status', pool]).trim().split(/\s+/)[3]);
    for (const id of made) sh('dmsetup', ['message', pool, '0', `delete ${id}`]);
    sh('dmsetup', ['message', pool, '0', `set_transaction_id ${tidNow} ${tidNow - N}`]);

    const summary = {};
    for (const k of ['create', 'get', 'put', 'total']) {
      summary[k] = {
        oursMedianMs: Math.round(median(ours[k]) * 10) / 10,
        dmsetupMedianMs: Math.round(median(dm[k]) * 10) / 10,
        ratio: Math.round((sum(ours[k]) / sum(dm[k])) * 100) / 100,
      };
    }
    console.log(`BENCH-RESULT ${JSON.stringify({ n: N, fs: fsType, options: OPTIONS, ...summary })}`);
    if (process.env.BENCH_PROFILE) {
      for (const [k, v] of [...profile].sort((a, b) => b[1].ms - a[1].ms)) {
        console.log(`profile ${k}: ${v.calls} calls, ${Math.round(v.ms)} ms`);
      }
    }

    for (let i = 0; i < N; i++) await driver.remove(`layer-${i}`);
    await driver.remove('parent');
  } finally {
    if (driver) await driver.cleanup().catch((e) => console.error(`cleanup: ${e.message}`));
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
