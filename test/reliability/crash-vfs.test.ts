/**
 * Crash consistency on vfs (issue 11 item 3): see crash-harness.ts. At least 100 SIGKILLs of a child looping over
 * register / import / commit / create / remove; after each, the reopened store is whole and verify() is clean.
 * GRAPHDRIVER_CRASH_TRIALS overrides the number of trials.
 */
import * as path from 'node:path';

import { describeIf, isRoot } from '../support/native';
import { makeTmp, removeTmp } from '../support/tmp';
import { runCrashTrials } from './crash-harness';
import { transpileLib, unmountAll } from './helpers';

const TRIALS = Number(process.env.GRAPHDRIVER_CRASH_TRIALS ?? 100);

describeIf(isRoot ? null : 'needs root (ownership in the layers)', 'crash consistency (vfs)', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = makeTmp('gd-crash-vfs-');
    transpileLib(path.join(tmp, 'js'));
  });
  afterAll(async () => {
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test(`${TRIALS} kills at random points: nothing partial or lost after reopen`, async () => {
    const stats = await runCrashTrials({ driver: 'vfs', trials: TRIALS, base: tmp, js: path.join(tmp, 'js'), seed: 1101, maxDelayMs: 200, earlyShare: 0.2 });
    // eslint-disable-next-line no-console
    console.log(`crash vfs: ${JSON.stringify(stats)}`);
    expect(stats.trials).toBe(TRIALS);
    expect(stats.failures).toBe(0);
    // The kills must land inside operations, not only between them.
    expect(Object.keys(stats.interrupted).filter((k) => k !== 'between operations').length).toBeGreaterThanOrEqual(3);
  }, 600_000);
});
