/**
 * overlay2's on-disk vocabulary and the pure computations on it: link ids, `lower` files and the overlay mount
 * data, including the switch to relative paths when the absolute form does not fit in one page.
 * @module
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';

import { GraphdriverError } from '../../errors';
import { MountFlags } from '../../native/constants';

/** Directory of the short symlinks (`l/<link id>` → `../<id>/diff`). */
export const LINK_DIR = 'l';
export const DIFF_DIR = 'diff';
export const WORK_DIR = 'work';
export const MERGED_DIR = 'merged';
export const LOWER_FILE = 'lower';
export const LINK_FILE = 'link';
export const COMMITTED_FILE = 'committed';
/** Most lower layers a layer may have, as Docker: 128 relative `l/<26 chars>` entries fit in one page. */
export const MAX_DEPTH = 128;
/** Length of a link id, as Docker: ((26 + len('l/') + 1) * 128) stays below a page minus room for labels. */
export const LINK_ID_LENGTH = 26;
/** mount(2) copies at most one page of option data. */
export const PAGE_SIZE = 4096;

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const LINK_ID_RE = /^[A-Z2-7]{26}$/;
/** What a `lower` entry may look like: anything else could smuggle options into the mount data. */
const LOWER_ENTRY_RE = /^l\/[A-Za-z0-9]{1,64}$/;

/** A random link id: 26 characters of base32 (A-Z, 2-7) from 17 random bytes, as Docker's GenerateID. */
export function generateLinkId(random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(Math.ceil((LINK_ID_LENGTH * 5) / 8));
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < LINK_ID_LENGTH) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** Whether `s` is a link id this driver would generate. */
export function isLinkId(s: string): boolean {
  return LINK_ID_RE.test(s);
}

/** A layer whose metadata files are not what this driver writes. */
export class CorruptLayerError extends GraphdriverError {
  constructor(readonly id: string, what: string) {
    super('ERR_LAYER_CORRUPT', `overlay2: layer ${JSON.stringify(id)} is damaged: ${what}`);
  }
}

/** Too many ancestors (Docker's "max depth exceeded"). */
export class MaxDepthError extends GraphdriverError {
  constructor(readonly parent: string, depth: number) {
    super(
      'ERR_MAX_DEPTH',
      `overlay2: max depth exceeded: a layer on top of ${JSON.stringify(parent)} would have ${depth} lower layers (at most ${MAX_DEPTH})`,
    );
  }
}

/** The mount options did not fit in a page even with relative paths. */
export class MountDataTooLargeError extends GraphdriverError {
  constructor(readonly id: string, length: number) {
    super('ERR_MOUNT_DATA_TOO_LARGE', `overlay2: cannot mount layer ${JSON.stringify(id)}: mount data of ${length} bytes exceeds a page even with relative paths (mount label or options too large)`);
  }
}

/** Splits and checks the content of a `lower` file (`l/ABC:l/DEF`, nearest first). */
export function parseLowerFile(id: string, content: string): string[] {
  const text = content.endsWith('\n') ? content.slice(0, -1) : content;
  const parts = text.split(':');
  if (parts.length > MAX_DEPTH) throw new CorruptLayerError(id, `lower file lists ${parts.length} layers (at most ${MAX_DEPTH})`);
  for (const p of parts) {
    if (!LOWER_ENTRY_RE.test(p)) throw new CorruptLayerError(id, `lower file entry ${JSON.stringify(p.slice(0, 80))} is not l/<link id>`);
  }
  return parts;
}

/**
 * The `lower` content of a new layer on top of `parent`: the parent's own link first, then the parent's lowers.
 * Throws {@link MaxDepthError} past {@link MAX_DEPTH}.
 */
export function lowerForChild(parent: string, parentLink: string, parentLowers: readonly string[]): string {
  const lowers = [`${LINK_DIR}/${parentLink}`, ...parentLowers];
  if (lowers.length > MAX_DEPTH) throw new MaxDepthError(parent, lowers.length);
  return lowers.join(':');
}

/** Docker's label.FormatMountLabel: appends `context="<label>"` when there is a label. */
export function formatMountLabel(options: string, mountLabel: string | undefined): string {
  if (mountLabel === undefined || mountLabel === '') return options;
  const ctx = `context="${mountLabel}"`;
  return options === '' ? ctx : `${options},${ctx}`;
}

/** Generic mount options that are mount(2) flags, not filesystem data: [sets the flag?, flag]. */
const FLAG_OPTIONS: Readonly<Record<string, readonly [boolean, number]>> = {
  ro: [true, MountFlags.MS_RDONLY],
  rw: [false, MountFlags.MS_RDONLY],
  nosuid: [true, MountFlags.MS_NOSUID],
  suid: [false, MountFlags.MS_NOSUID],
  nodev: [true, MountFlags.MS_NODEV],
  dev: [false, MountFlags.MS_NODEV],
  noexec: [true, MountFlags.MS_NOEXEC],
  exec: [false, MountFlags.MS_NOEXEC],
  sync: [true, MountFlags.MS_SYNCHRONOUS],
  async: [false, MountFlags.MS_SYNCHRONOUS],
  dirsync: [true, MountFlags.MS_DIRSYNC],
  noatime: [true, MountFlags.MS_NOATIME],
  atime: [false, MountFlags.MS_NOATIME],
  nodiratime: [true, MountFlags.MS_NODIRATIME],
  diratime: [false, MountFlags.MS_NODIRATIME],
  relatime: [true, MountFlags.MS_RELATIME],
  norelatime: [false, MountFlags.MS_RELATIME],
  strictatime: [true, MountFlags.MS_STRICTATIME],
  nostrictatime: [false, MountFlags.MS_STRICTATIME],
  lazytime: [true, MountFlags.MS_LAZYTIME],
  nolazytime: [false, MountFlags.MS_LAZYTIME],
};

/** Splits options into mount(2) flags (`nodev`, `ro`, ...) and filesystem data options, like mount(8) does. */
export function splitMountFlags(options: readonly string[]): { flags: number; flagOptions: string[]; data: string[] } {
  let flags = 0;
  const flagOptions: string[] = [];
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f === undefined) {
      data.push(o);
      continue;
    }
    flagOptions.push(o);
    flags = f[0] ? flags | f[1] : flags & ~f[1];
  }
  return { flags, flagOptions, data };
}

/** Everything needed to build the mount data of one layer. */
export interface MountDataInput {
  /** Driver home (absolute). */
  home: string;
  id: string;
  /** Entries of the layer's `lower` file (`l/<link id>`, nearest first). */
  lowers: readonly string[];
  /** Committed layers (parents of other layers) are mounted read-only: their diff becomes the top lower. */
  readonly: boolean;
  /** Prefix `index=off,` (kernels with the overlay index feature). */
  indexOff: boolean;
  /** Prefix `userxattr,` (unprivileged overlay). */
  userxattr: boolean;
  /** Extra options (overlay2.mountopt, MountOpts.options), appended before the label. */
  extra: readonly string[];
  mountLabel?: string;
  /** Page size (default 4096); data longer than `pageSize - 1` bytes does not fit. */
  pageSize?: number;
}

/** How to call mount(2): absolute data on `target`, or relative data on `target` from the directory `from`. */
export interface MountPlan {
  data: string;
  target: string;
  /** mount(2) flags from generic options among `extra` (nodev, noexec, ...). */
  flags: number;
  /** Those options by name (for mount(8)). */
  flagOptions: string[];
  /** Set when the paths in `data` and `target` are relative to this directory (the home). */
  from?: string;
}

function buildData(lowerdir: string, upper: string | null, work: string | null, i: MountDataInput, extra: readonly string[]): string {
  let opts = (i.indexOff ? 'index=off,' : '') + (i.userxattr ? 'userxattr,' : '') + `lowerdir=${lowerdir}`;
  if (upper !== null && work !== null) opts += `,upperdir=${upper},workdir=${work}`;
  for (const e of extra) opts += `,${e}`;
  return formatMountLabel(opts, i.mountLabel);
}

/**
 * The mount data of a layer, as Docker's overlay2 Get: absolute paths (`<home>/l/<link id>` lowers, the layer's
 * diff and work dirs) when they fit in a page, else the same relative to the home (`l/<link id>`, `<id>/diff`),
 * mounted from there. Throws {@link MountDataTooLargeError} when neither fits.
 */
export function planMount(i: MountDataInput): MountPlan {
  const limit = (i.pageSize ?? PAGE_SIZE) - 1;
  const { flags, flagOptions, data: extra } = splitMountFlags(i.extra);
  const dir = path.join(i.home, i.id);
  const absLowers = i.lowers.map((l) => path.join(i.home, l)).join(':');
  const absDiff = path.join(dir, DIFF_DIR);
  const abs = i.readonly
    ? buildData(`${absDiff}:${absLowers}`, null, null, i, extra)
    : buildData(absLowers, absDiff, path.join(dir, WORK_DIR), i, extra);
  if (Buffer.byteLength(abs) <= limit) return { data: abs, target: path.join(dir, MERGED_DIR), flags, flagOptions };

  const relLowers = i.lowers.join(':');
  const relDiff = `${i.id}/${DIFF_DIR}`;
  const rel = i.readonly
    ? buildData(`${relDiff}:${relLowers}`, null, null, i, extra)
    : buildData(relLowers, relDiff, `${i.id}/${WORK_DIR}`, i, extra);
  if (Buffer.byteLength(rel) > limit) throw new MountDataTooLargeError(i.id, Buffer.byteLength(rel));
  return { data: rel, target: `${i.id}/${MERGED_DIR}`, from: i.home, flags, flagOptions };
}
