/**
 * The aufs mount data of a layer, as Docker's aufsMount builds it, with exact page accounting: the first mount(2)
 * carries `br:<rw>=rw:<ro1>=ro+wh:...` and the fixed options; the read-only branches that do not fit in its page
 * are added by `MS_REMOUNT` calls whose data is a list of `append:<dir>=ro+wh` options, each list under a page.
 * Docker appends one branch per remount; several per call are accepted by aufs (every remount option is applied
 * in order), which keeps a 200-layer mount to a handful of calls. No branch is ever cut or dropped: the kernel
 * copies at most one page of mount data, so anything longer would be truncated silently.
 * @module
 */
import { GraphdriverError } from '../../errors';
import { MountFlags } from '../../native/constants';
import { formatMountLabel } from '../overlay2/layout';

/** mount(2) copies at most one page of option data, NUL included. */
export const PAGE_SIZE = 4096;
/** The external inode number table every union shares, as Docker's. */
export const XINO_OPTION = 'xino=/dev/shm/aufs.xino';
/** Options every union mount carries, as Docker: direct I/O and the shared xino file. */
export const BASE_OPTIONS = `dio,${XINO_OPTION}`;
export const DIRPERM1_OPTION = 'dirperm1';
/** Source of every aufs mount (aufs ignores it). */
export const MOUNT_SOURCE = 'none';
export const FSTYPE = 'aufs';

/** A branch, a label or the fixed options do not fit in one page even on their own. */
export class MountDataTooLargeError extends GraphdriverError {
  constructor(what: string, length: number, limit: number) {
    super('ERR_MOUNT_DATA_TOO_LARGE', `aufs: ${what} needs ${length} bytes of mount data, more than the ${limit} one page holds`);
  }
}

/** One mount(2) call of a plan. */
export interface AufsMountCall {
  /** 0 for the first call, MS_REMOUNT for the appends. */
  flags: number;
  data: string;
}

/** Everything the mount data depends on. */
export interface AufsMountInput {
  /** The layer's own diff directory (absolute): the read-write branch. */
  rw: string;
  /** Diff directories of the ancestors, nearest first (absolute). */
  ro: readonly string[];
  /** Add `dirperm1` (the kernel's aufs supports it). */
  dirperm1: boolean;
  /** SELinux label, appended as `context="<label>"` to every call, as Docker. */
  mountLabel?: string;
  /** Page size (default 4096); each call's data is at most `pageSize - 1` bytes. */
  pageSize?: number;
}

const bytes = (s: string): number => Buffer.byteLength(s);

/**
 * The mount(2) calls that mount the union: `calls[0]` without flags, then the appends with MS_REMOUNT, branches
 * in order (nearest ancestor first, so each append goes below the ones already there). Throws
 * {@link MountDataTooLargeError} when a single branch (with the label) cannot fit in a call.
 */
export function planAufsMount(i: AufsMountInput): AufsMountCall[] {
  const limit = (i.pageSize ?? PAGE_SIZE) - 1;
  const options = i.dirperm1 ? `${BASE_OPTIONS},${DIRPERM1_OPTION}` : BASE_OPTIONS;
  // What the first call holds besides the ro branches: br:<rw>=rw, the options and the label.
  const first = (branches: string): string => formatMountLabel(`br:${i.rw}=rw${branches},${options}`, i.mountLabel);
  const fixed = bytes(first(''));
  if (fixed > limit) throw new MountDataTooLargeError('the read-write branch with the mount options and label', fixed, limit);

  let used = fixed;
  let n = 0;
  while (n < i.ro.length) {
    const more = bytes(`:${i.ro[n]}=ro+wh`);
    if (used + more > limit) break;
    used += more;
    n++;
  }
  const calls: AufsMountCall[] = [{ flags: 0, data: first(i.ro.slice(0, n).map((d) => `:${d}=ro+wh`).join('')) }];

  // The label is the only thing besides the appends in a remount; it costs the same in every call.
  const labelCost = bytes(formatMountLabel('x', i.mountLabel)) - 1;
  let chunk: string[] = [];
  let chunkBytes = labelCost;
  const flush = (): void => {
    calls.push({ flags: MountFlags.MS_REMOUNT, data: formatMountLabel(chunk.join(','), i.mountLabel) });
    chunk = [];
    chunkBytes = labelCost;
  };
  for (const dir of i.ro.slice(n)) {
    const opt = `append:${dir}=ro+wh`;
    const alone = bytes(opt) + labelCost;
    if (alone > limit) throw new MountDataTooLargeError(`branch ${JSON.stringify(dir.slice(0, 120))}`, alone, limit);
    // Joined to a non-empty list it costs one comma more.
    if (chunk.length > 0 && chunkBytes + 1 + bytes(opt) > limit) flush();
    chunkBytes += (chunk.length > 0 ? 1 : 0) + bytes(opt);
    chunk.push(opt);
  }
  if (chunk.length > 0) flush();
  return calls;
}
