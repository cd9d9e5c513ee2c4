/** Temporary directories for tests, removed afterwards even when a test fails. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Creates a fresh temp dir under the OS temp dir (or GRAPHDRIVER_TEST_TMP). */
export function makeTmp(prefix = 'gd-'): string {
  const base = process.env.GRAPHDRIVER_TEST_TMP ?? os.tmpdir();
  return fs.mkdtempSync(path.join(base, prefix));
}

/** Removes a temp dir recursively, ignoring errors. */
export function removeTmp(dir: string | undefined): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
