'use strict';
// The shared driver conformance suite (test/conformance/driver-conformance.ts, compiled by compile.js) against
// DevMapperDriver on a real thin pool: loop files in /scratch, an ext4 base device, every layer a thin snapshot.
// The suite is split in two guest files (devmapper-conformance-{1,2}.test.js) that the VM runs side by side on its
// two CPUs; together they are the whole suite.
//
// Scale (the VM emulates its CPU, so every mount costs a fraction of a second): the deep-chain tests use
// DM_CONFORMANCE_DEPTH layers (default 4; the suite's own default elsewhere is 128 for overlay2) and the diff/apply
// test DM_CONFORMANCE_FILES files (default 40). Set them in GRAPHDRIVER_VM_ENV for a longer run.
require('./jest-shim');
const path = require('node:path');

const JS = path.resolve(__dirname, '..', '..', 'node_modules', '.cache', 'graphdriver-vm');

/**
 * The top-level groups of the suite in two parts. Part 1 is the longest guest file and starts first; part 2 is
 * shorter by about the time of devmapper-driver.test.js and the small files, which run after it on the other CPU.
 */
const PARTS = {
  1: ['graphtest', 'containerd snapshotter cases', 'bad input'],
  2: ['diff and changes', 'get/put and concurrency', 'cleanup'],
};

// Small sizes keep each test's fresh pool cheap: a 40M ext4 base (so the 50M `size` test grows it), a 1G sparse
// data file and 16M of metadata. Discards on delete are off here (dm.blkdiscard=false): they cost two more device
// activations per removed layer, and devmapper-driver.test.js covers them.
const OPTIONS = ['dm.basesize=40M', 'dm.fs=ext4', 'dm.loopdatasize=1G', 'dm.loopmetadatasize=16M', 'dm.blkdiscard=false'];

function run(part) {
  const groups = PARTS[part];
  if (!groups) throw new Error(`no conformance part ${part}`);
  // path = [suite title, group, ..., test name]: the suite itself, and the groups of this part
  globalThis.vmTestFilter = (p) => p.length < 2 || groups.includes(p[1]);
  const { runDriverConformance } = require(path.join(JS, 'test', 'conformance', 'driver-conformance.js'));
  const { DevMapperDriver } = require(path.join(JS, 'lib', 'drivers', 'devmapper'));
  runDriverConformance('devicemapper', (home) => DevMapperDriver.init(home, OPTIONS), {
    deepChain: Number(process.env.DM_CONFORMANCE_DEPTH || 4),
    quota: true,
    diffApplyFiles: Number(process.env.DM_CONFORMANCE_FILES || 40),
    tmpBase: () => process.env.SCRATCH,
    label: `thin pool on loop files, ext4, real kernel; part ${part} of 2`,
  });
}

module.exports = { run, PARTS, OPTIONS };
