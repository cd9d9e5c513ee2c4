/**
 * Reading /proc/self/mountinfo: which mounts lie below a directory, and with which superblock options.
 * @module
 */
import * as fs from 'node:fs/promises';

/** One mount of the calling process's mount namespace. */
export interface MountInfoEntry {
  /** Mount point, unescaped. */
  mountPoint: string;
  /** Filesystem type, e.g. 'overlay', 'xfs'. */
  fstype: string;
  /** Mount source (device or 'overlay'). */
  source: string;
  /** Superblock options, e.g. ['rw', 'prjquota']. */
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as `\ooo`. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses mountinfo text; malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 3) continue;
    out.push({
      mountPoint: unescape(fields[4]!),
      fstype: fields[sep + 1]!,
      source: unescape(fields[sep + 2]!),
      superOptions: (fields[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

/** The current mounts (reads /proc/self/mountinfo). */
export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountInfoEntry[]> {
  return parseMountInfo(await fs.readFile(file, 'utf8'));
}

/** Mounts strictly below `dir` (an absolute, symlink-free path), deepest first. */
export function mountsBelow(entries: readonly MountInfoEntry[], dir: string): MountInfoEntry[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return entries
    .filter((e) => e.mountPoint.startsWith(prefix))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}

/** The mount holding `p` (an absolute, symlink-free path): the last-mounted entry with the longest matching mount point. */
export function mountOf(entries: readonly MountInfoEntry[], p: string): MountInfoEntry | null {
  let best: MountInfoEntry | null = null;
  for (const e of entries) {
    const mp = e.mountPoint;
    const covers = mp === '/' || p === mp || p.startsWith(mp.endsWith('/') ? mp : `${mp}/`);
    if (covers && (best === null || mp.length >= best.mountPoint.length)) best = e;
  }
  return best;
}
