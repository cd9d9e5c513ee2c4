// Device-mapper bindings on the host. This kernel has no device-mapper, so the host can only check that every
// call reports the missing control node the Node way and that argument limits are enforced before any ioctl;
// the real DM round trips run inside the VM (test/vm/guest/dm-bindings.test.js).
import * as fs from 'node:fs';

import { loadBindings } from '../../lib/native/bindings';
import type { NativeError } from '../../lib/native/types';
import { describeIf } from '../support/native';

const CONTROL = '/dev/mapper/control';
const haveDm = fs.existsSync(CONTROL);

async function rejection(p: Promise<unknown>): Promise<NativeError> {
  try {
    await p;
  } catch (e) {
    return e as NativeError;
  }
  throw new Error('expected the call to reject');
}

/** Settles every call first so that one failed expectation never leaves the others unhandled. */
async function rejections(calls: Array<Promise<unknown>>): Promise<NativeError[]> {
  return Promise.all(calls.map(rejection));
}

describe('device-mapper argument limits (before any ioctl)', () => {
  const b = loadBindings();
  const long = 'x'.repeat(128); // DM_NAME_LEN is 128 including the NUL

  it('refuses device names of DM_NAME_LEN bytes or more with EINVAL', async () => {
    const errors = await rejections([
      b.dmCreate(long),
      b.dmLoad(long, [{ start: 0, length: 8, type: 'zero', params: '' }]),
      b.dmSuspend(long),
      b.dmResume(long),
      b.dmRemove(long),
      b.dmMessage(long, 0, 'create_thin 0'),
      b.dmStatus(long),
      b.dmTable(long),
      b.dmInfo(long),
    ]);
    for (const e of errors) {
      expect(e.code).toBe('EINVAL');
      expect(e.errno).toBe(-22);
      expect(e.syscall).toMatch(/^ioctl\(DM_[A-Z_]+\)$/);
      expect(e.path).toBe(long);
      expect(e.message).toMatch(/longer than 127 bytes/);
    }
  });

  it('refuses uuids of DM_UUID_LEN bytes or more and names with a slash', async () => {
    const e = await rejection(b.dmCreate('gd-test', { uuid: 'u'.repeat(129) }));
    expect(e.code).toBe('EINVAL');
    expect(e.syscall).toBe('ioctl(DM_DEV_CREATE)');
    expect(e.message).toMatch(/uuid/);
    const s = await rejection(b.dmCreate('a/b'));
    expect(s.code).toBe('EINVAL');
    expect(s.path).toBe('a/b');
  });

  it('refuses target types that do not fit dm_target_spec', async () => {
    const e = await rejection(b.dmLoad('gd-test', [{ start: 0, length: 8, type: 't'.repeat(16), params: '' }]));
    expect(e.code).toBe('EINVAL');
    expect(e.syscall).toBe('ioctl(DM_TABLE_LOAD)');
  });

  it('throws TypeError for malformed arguments', async () => {
    await expect(b.dmCreate(42 as unknown as string)).rejects.toThrow(TypeError);
    await expect(b.dmLoad('x', [{ start: -1, length: 8, type: 'zero', params: '' }])).rejects.toThrow(RangeError);
    await expect(b.dmMessage('x', 0, '')).rejects.toThrow(TypeError);
  });
});

describeIf(haveDm ? `${CONTROL} exists (device-mapper present); the ENOENT checks apply to hosts without it` : null,
  'device-mapper absent on this host', () => {
    const b = loadBindings();

    it('every call rejects with ENOENT from open(/dev/mapper/control)', async () => {
      const calls: Array<Promise<unknown>> = [
        b.dmVersion(),
        b.dmCreate('gd-test', { uuid: 'gd-test-uuid', readOnly: true }),
        b.dmLoad('gd-test', [{ start: 0, length: 8, type: 'zero', params: '' }]),
        b.dmSuspend('gd-test', { noFlush: true }),
        b.dmResume('gd-test'),
        b.dmRemove('gd-test', { deferred: true }),
        b.dmMessage('gd-test', 0, 'create_thin 0'),
        b.dmStatus('gd-test'),
        b.dmTable('gd-test'),
        b.dmInfo('gd-test'),
        b.dmList(),
      ];
      for (const e of await rejections(calls)) {
        // the addon builds its errors in the main realm, not jest's sandbox, so compare the brand, not the class
        expect(Object.prototype.toString.call(e)).toBe('[object Error]');
        expect(e.code).toBe('ENOENT');
        expect(e.errno).toBe(-2);
        expect(e.syscall).toBe('open');
        expect(e.path).toBe(CONTROL);
        expect(e.message).toMatch(/^ENOENT: no such file or directory, open '\/dev\/mapper\/control'$/i);
      }
    });

    it('dmInfo does not turn a missing control node into "no such device"', async () => {
      // null is reserved for ENXIO from the kernel; a host without DM must not look like an empty DM.
      await expect(b.dmInfo('gd-test')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    });
  });
