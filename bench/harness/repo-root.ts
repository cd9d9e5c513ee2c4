/**
 * The checkout the bench scripts belong to (found from dist-bench/bench/... or bench/... alike), and the addon
 * they load from it unless GRAPHDRIVER_ADDON says otherwise.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

function findRoot(): string {
  for (let d = __dirname; d !== path.dirname(d); d = path.dirname(d)) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')) as { name?: string }).name === 'graphdriver') return d;
    } catch {
      // not here
    }
  }
  return process.cwd();
}

/** The repository root. */
export const ROOT = findRoot();

/** The addon built in the checkout (what `npm ci` builds). */
export const DEFAULT_ADDON = path.join(ROOT, 'build', 'Release', 'graphdriver.node');
