/**
 * Crash consistency on overlay2 (issue 11 item 3): see crash-harness.ts. At least 100 SIGKILLs of a child looping over
 * register / import / commit / create / remove; after each, the reopened store is whole and verify() is clean.
 * GRAPHDRIVER_CRASH_TRIALS overrides the number of trials.
 *
 * Also: mounts kept on purpose (close({ keepMounts }), the CLI's `graphdriver mount`) survive the reopen, while
 * mounts a dead process left are unmounted by it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { KEPT_MOUNTS_FILE } from '../../lib/storage/stale-mounts';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
import { runCrashTrials } from './crash-harness';
import { CLEAN_REPORT, mountsBelow, problems, transpileLib, unmountAll } from './helpers';

const TRIALS = Number(process.env.GRAPHDRIVER_CRASH_TRIALS ?? 100);

describeIf(!isRoot ? 'needs root' : !kernelHasFs('overlay') ? 'the kernel has no overlay' : null, 'crash consistency (overlay2)', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = makeTmp('gd-crash-overlay2-');
    transpileLib(path.join(tmp, 'js'));
  });
  afterAll(async () => {
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test(`${TRIALS} kills at random points: nothing partial or lost after reopen`, async () => {
    const stats = await runCrashTrials({ driver: 'overlay2', trials: TRIALS, base: tmp, js: path.join(tmp, 'js'), seed: 2202, maxDelayMs: 200, earlyShare: 0.2 });
    // eslint-disable-next-line no-console
    console.log(`crash overlay2: ${JSON.stringify(stats)}`);
    expect(stats.trials).toBe(TRIALS);
    expect(stats.failures).toBe(0);
    // The kills must land inside operations, not only between them.
    expect(Object.keys(stats.interrupted).filter((k) => k !== 'between operations').length).toBeGreaterThanOrEqual(3);
  }, 600_000);

  test('mounts kept on purpose survive the reopen; the ones a dead process left do not', async () => {
    const root = path.join(tmp, 'kept');
    const s1 = await Storage.open({ root, driver: 'overlay2' });
    await s1.importImage(Readable.from([buildTar([{ name: 'f', data: 'x' }])]), { reference: 'kept:1' });
    const [a, b, c] = [await s1.createContainer('kept:1'), await s1.createContainer('kept:1'), await s1.createContainer('kept:1')];
    const pa = await s1.mountContainer(a.id);
    const pb = await s1.mountContainer(b.id);
    await s1.close({ keepMounts: true });
    expect(mountsBelow(root).sort()).toEqual([pa, pb].sort());

    // A later process keeps them, adopts them, drops one with unmountContainer, mounts a third and keeps it.
    const s2 = await Storage.open({ root, driver: 'overlay2' });
    expect(mountsBelow(root).sort()).toEqual([pa, pb].sort());
    expect(await s2.mountContainer(a.id)).toBe(pa);
    await s2.unmountContainer(a.id);
    expect(mountsBelow(root)).toContain(pa);
    await s2.unmountContainer(b.id);
    const pc = await s2.mountContainer(c.id);
    await s2.close({ keepMounts: true });
    expect(mountsBelow(root).sort()).toEqual([pa, pc].sort());

    // As if the process that mounted c had died before recording it: the next open unmounts c, keeps a.
    const record = path.join(root, KEPT_MOUNTS_FILE);
    fs.writeFileSync(record, JSON.stringify((JSON.parse(fs.readFileSync(record, 'utf8')) as Array<{ container: string }>).filter((k) => k.container !== c.id)));
    const s3 = await Storage.open({ root, driver: 'overlay2' });
    try {
      expect(mountsBelow(root)).toEqual([pa]);
      // Removing a container whose mount was kept takes the mount with it.
      await s3.removeContainer(a.id);
      expect(mountsBelow(root)).toEqual([]);
      expect(problems(await s3.verify())).toEqual(CLEAN_REPORT);
    } finally {
      await s3.close();
    }
    expect(fs.existsSync(record)).toBe(false);
    expect(mountsBelow(root)).toEqual([]);
  });
});
