/**
 * aufs's on-disk vocabulary, as Docker's: `diff/<id>` holds a layer's own files (whiteouts stored as `.wh.`
 * files), `layers/<id>` lists its parent and then every further ancestor (one id per line, nearest first; empty
 * for a base layer) and `mnt/<id>` is the union mount point. Removal renames to `<id>-removing` first.
 * @module
 */
import { GraphdriverError } from '../../errors';
import { InvalidIdError } from '../errors';
import { checkLayerId as checkIdPattern, checkParentId as checkParentPattern } from '../layer-id';

export const DIFF_DIR = 'diff';
export const LAYERS_DIR = 'layers';
export const MNT_DIR = 'mnt';
/** The three top directories of the home, in the order Docker creates them. */
export const TOP_DIRS = [MNT_DIR, DIFF_DIR, LAYERS_DIR] as const;
/** Suffix of `diff/` and `mnt/` entries being deleted; init removes leftovers. */
export const REMOVING_SUFFIX = '-removing';
/** Prefix of temp files in `layers/` and of scratch directories in the home (ids never start with '.'). */
export const TMP_PREFIX = '.tmp-';
export const CHECK_PREFIX = '.check-';

/** A layer whose files are not what this driver writes (a damaged `layers/` file, a missing diff directory). */
export class CorruptLayerError extends GraphdriverError {
  constructor(readonly id: string, what: string) {
    super('ERR_LAYER_CORRUPT', `aufs: layer ${JSON.stringify(id)} is damaged: ${what}`);
  }
}

/**
 * checkLayerId plus the names aufs keeps for itself: an id ending in `-removing` would be taken for a leftover
 * of an interrupted remove and deleted at the next init.
 */
export function checkLayerId(id: unknown): asserts id is string {
  checkIdPattern(id);
  if (id.endsWith(REMOVING_SUFFIX)) throw new InvalidIdError(id);
}

/** checkParentId plus the aufs reservations. */
export function checkParentId(parent: string | null | undefined): string | null {
  const p = checkParentPattern(parent);
  if (p !== null) checkLayerId(p);
  return p;
}

/** Whether `s` is a name this driver could have given a layer. */
export function isLayerId(s: string): boolean {
  try {
    checkLayerId(s);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses the content of `layers/<id>`: one ancestor id per line, nearest first, each line ended by '\n' (as
 * Docker's fmt.Fprintln writes it; a missing final newline is accepted). Every line must be a valid id, none
 * may repeat or name the layer itself: the ids become branch paths of the mount, so nothing else may pass.
 */
export function parseLayersFile(id: string, content: string): string[] {
  if (content === '') return [];
  const text = content.endsWith('\n') ? content.slice(0, -1) : content;
  const ids = text.split('\n');
  const seen = new Set<string>();
  for (const [i, p] of ids.entries()) {
    if (!isLayerId(p)) throw new CorruptLayerError(id, `line ${i + 1} of its layers file is not a layer id: ${JSON.stringify(p.slice(0, 80))}`);
    if (p === id || seen.has(p)) throw new CorruptLayerError(id, `its layers file names ${JSON.stringify(p)} twice (a cycle)`);
    seen.add(p);
  }
  return ids;
}

/** The `layers/<id>` content of a new layer on `parent`: the parent, then the parent's own ancestors. */
export function layersFileFor(parent: string | null, parentAncestors: readonly string[]): string {
  if (parent === null) return '';
  return [parent, ...parentAncestors].map((p) => `${p}\n`).join('');
}
