/**
 * Helpers for tests: a fully mocked NativeBindings, and root/kernel prerequisites that integration tests use to
 * say (in the output) why they do not run.
 */
import * as fs from 'node:fs';

import { signatures } from '../../lib/native/signatures';
import type { NativeBindings } from '../../lib/native/types';

/** Methods that by default behave as in an addon built before they existed (ERR_NATIVE_MISSING), because their
 *  callers fall back to plain node code then: drivers tested with mocks keep removing trees with fs.rm. */
const MISSING_BY_DEFAULT = new Set<string>(['removeTree']);

/** A NativeBindings whose every method is a jest.fn() rejecting with "not mocked" until a test sets it. */
export function mockBindings(overrides: Partial<NativeBindings> = {}): jest.Mocked<NativeBindings> {
  const m: Record<string, jest.Mock> = {};
  for (const name of Object.keys(signatures)) {
    m[name] = jest.fn(async () => {
      if (MISSING_BY_DEFAULT.has(name)) {
        throw Object.assign(new Error(`mock bindings: ${name} is not available`), { code: 'ERR_NATIVE_MISSING' });
      }
      throw new Error(`mock bindings: ${name} not mocked`);
    });
  }
  Object.assign(m, overrides);
  return m as unknown as jest.Mocked<NativeBindings>;
}

/** True when running as root. */
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Whether the kernel lists `fs` in /proc/filesystems. */
export function kernelHasFs(fsName: string): boolean {
  try {
    return fs
      .readFileSync('/proc/filesystems', 'utf8')
      .split('\n')
      .some((l) => l.trim().split(/\s+/).pop() === fsName);
  } catch {
    return false;
  }
}

/** Whether an executable exists on PATH. */
export function haveTool(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .concat(['/usr/sbin', '/sbin'])
    .some((d) => {
      try {
        fs.accessSync(`${d}/${tool}`, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/**
 * `describe` that runs only when `reason` is null; otherwise it registers one skipped test and prints why, so the
 * output (and the totals line) shows what could not run here.
 */
export function describeIf(reason: string | null, name: string, fn: () => void): void {
  if (reason === null) {
    describe(name, fn);
    return;
  }
  describe(name, () => {
    // eslint-disable-next-line no-console
    console.warn(`SKIPPED: ${name}: ${reason}`);
    it.skip(`${name} (cannot run here: ${reason})`, () => undefined);
  });
}
