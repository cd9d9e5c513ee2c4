/**
 * Crash consistency on btrfs (issue 11 item 3), on a loop-mounted btrfs image: see crash-harness.ts.
 * GRAPHDRIVER_CRASH_TRIALS overrides the number of trials.
 */
import * as path from 'node:path';

import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';
import { runCrashTrials } from './crash-harness';
import { makeLoopFs, transpileLib, unmountAll, type LoopFs } from './helpers';

const TRIALS = Number(process.env.GRAPHDRIVER_CRASH_TRIALS ?? 100);
const REASON = !isRoot
  ? 'needs root (loop device, mount, btrfs ioctls)'
  : !kernelHasFs('btrfs')
    ? 'the kernel has no btrfs'
    : !haveTool('mkfs.btrfs')
      ? 'mkfs.btrfs is not installed (apt-get install btrfs-progs)'
      : null;

describeIf(REASON, 'crash consistency (btrfs on a loop device)', () => {
  let tmp: string;
  let loop: LoopFs | null = null;
  beforeAll(async () => {
    tmp = makeTmp('gd-crash-btrfs-');
    transpileLib(path.join(tmp, 'js'));
    loop = await makeLoopFs(tmp, 'btrfs', 512, ['-q']);
  });
  afterAll(async () => {
    await loop?.dispose();
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test(`${TRIALS} kills at random points: nothing partial or lost after reopen`, async () => {
    const stats = await runCrashTrials({ driver: 'btrfs', trials: TRIALS, base: loop!.mnt, js: path.join(tmp, 'js'), seed: 3303, maxDelayMs: 200, earlyShare: 0.2 });
    // eslint-disable-next-line no-console
    console.log(`crash btrfs: ${JSON.stringify(stats)}`);
    expect(stats.trials).toBe(TRIALS);
    expect(stats.failures).toBe(0);
    expect(Object.keys(stats.interrupted).filter((k) => k !== 'between operations').length).toBeGreaterThanOrEqual(3);
  }, 600_000);
});
