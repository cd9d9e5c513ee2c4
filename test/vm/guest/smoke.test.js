'use strict';
// Runs inside the test VM (npm run test:vm): checks that the guest is what the device-mapper tests rely on, so a
// broken image fails here with a plain message instead of somewhere deep in a DM test.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const read = (file) => fs.readFileSync(file, 'utf8');

test('runs under the kernel the image was built for, not the host kernel', () => {
  assert.ok(process.env.VMTEST_KERNEL, 'VMTEST_KERNEL is set by the VM init');
  assert.equal(os.release(), process.env.VMTEST_KERNEL);
  assert.match(os.release(), /-amd64$/);
});

test('device-mapper is available with the thin-pool target', () => {
  assert.ok(fs.statSync('/dev/mapper/control').isCharacterDevice(), '/dev/mapper/control is a character device');
  assert.match(read('/proc/misc'), /^\s*\d+ device-mapper$/m);
  assert.match(read('/proc/devices'), /^\s*\d+ device-mapper$/m);
  // a module parameter directory exists whether dm-thin-pool is a loaded module or built in
  assert.ok(fs.existsSync('/sys/module/dm_thin_pool'), 'dm_thin_pool is loaded');
  assert.ok(fs.existsSync('/sys/module/dm_persistent_data'), 'dm_persistent_data is loaded');
});

test('loop devices and the filesystems the drivers use are available', () => {
  assert.ok(fs.statSync('/dev/loop-control').isCharacterDevice(), '/dev/loop-control is a character device');
  const filesystems = read('/proc/filesystems').split('\n').map((l) => l.trim().split(/\s+/).pop());
  for (const fsType of ['ext4', 'xfs', 'overlay', 'tmpfs', '9p']) {
    assert.ok(filesystems.includes(fsType), `${fsType} in /proc/filesystems`);
  }
});

test('mkfs, losetup and blkid are on PATH and run', () => {
  for (const [tool, args] of [['mkfs.ext4', ['-V']], ['mke2fs', ['-V']], ['mkfs.xfs', ['-V']], ['losetup', ['--version']], ['blkid', ['-V']]]) {
    // mke2fs -V prints its version on stderr; all of them exit 0
    execFileSync(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  }
});

test('the checkout is shared read-only and /scratch is a writable tmpfs', () => {
  const mounts = read('/proc/mounts').split('\n').map((l) => l.split(' '));
  const host = mounts.find((m) => m[1] === '/host');
  assert.ok(host, '/host is mounted');
  assert.equal(host[2], '9p');
  assert.ok(host[3].split(',').includes('ro'), `/host is mounted read-only (${host[3]})`);
  assert.throws(() => fs.writeFileSync('/host/.vm-write-probe', 'x'), { code: 'EROFS' });

  assert.equal(process.env.SCRATCH, '/scratch');
  const scratch = mounts.find((m) => m[1] === '/scratch');
  assert.ok(scratch, '/scratch is mounted');
  assert.equal(scratch[2], 'tmpfs');
  // the DM tests put sparse pool files here; a 2 GiB one must fit
  const dir = fs.mkdtempSync(path.join(process.env.SCRATCH, 'smoke-'));
  try {
    const file = path.join(dir, 'sparse');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 2 * 1024 ** 3);
    assert.equal(fs.statSync(file).size, 2 * 1024 ** 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the addon loads and talks to the kernel device-mapper (DM interface version 4)', async () => {
  const addonPath = process.env.GRAPHDRIVER_ADDON;
  assert.ok(addonPath, 'GRAPHDRIVER_ADDON is set by the VM init');
  const addon = require(addonPath);
  assert.equal(typeof addon, 'object');
  assert.equal(typeof addon.dmVersion, 'function', 'dmVersion is implemented in this addon build');
  const version = await addon.dmVersion();
  assert.ok(Array.isArray(version) && version.length === 3, `dmVersion() returns [major, minor, patch]: ${version}`);
  assert.ok(version.every((n) => Number.isInteger(n) && n >= 0), `non-negative integers: ${version}`);
  assert.equal(version[0], 4);
});
