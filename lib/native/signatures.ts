/**
 * The argument signature of every native function, checked by {@link checkedBindings} before the call.
 * @module
 */
import type { NativeBindings } from './types';
import { checkArg, checkFields, checkString, type ArgKind } from './validate';

type Extra = (args: unknown[]) => void;

/** One entry per NativeBindings method: positional argument kinds plus optional deep checks. */
export interface Signature {
  args: ReadonlyArray<readonly [name: string, kind: ArgKind]>;
  extra?: Extra;
}

const entryFields: Record<string, ArgKind> = {
  mode: 'uint', uid: 'uint', gid: 'uint', mtimeSec: 'int', mtimeNsec: 'uint', atimeSec: 'int', atimeNsec: 'uint',
  devMajor: 'uint', devMinor: 'uint', size: 'uint', keepOpen: 'bool?', deferTimes: 'bool?', noReplace: 'bool?',
  linkname: 'string',
};

function checkXattrs(x: unknown, name: string): void {
  if (x === undefined) return;
  checkArg('object', x, name);
  for (const [k, v] of Object.entries(x as Record<string, unknown>)) {
    checkString(k, `${name} key`);
    checkArg('buffer', v, `${name}[${JSON.stringify(k)}]`);
  }
}

function checkRelPath(p: unknown, name: string): void {
  checkString(p, name, true);
}

const OPS = new Set(['create', 'remove', 'whiteout', 'xattrs']);
const TYPES = new Set(['file', 'dir', 'symlink', 'link', 'char', 'block', 'fifo']);

function checkApplyEntries(args: unknown[]): void {
  const entries = args[1] as unknown[];
  entries.forEach((e, i) => {
    const n = `entries[${i}]`;
    checkArg('object', e, n);
    const o = e as Record<string, unknown>;
    if (typeof o.op !== 'string' || !OPS.has(o.op)) throw new TypeError(`${n}.op must be one of create, remove, whiteout, xattrs`);
    checkRelPath(o.path, `${n}.path`);
    if (o.op === 'create' && (typeof o.type !== 'string' || !TYPES.has(o.type))) {
      throw new TypeError(`${n}.type must be one of ${[...TYPES].join(', ')}`);
    }
    checkFields(o, entryFields, n);
    if (o.data !== undefined) checkArg('buffer', o.data, `${n}.data`);
    checkXattrs(o.xattrs, `${n}.xattrs`);
  });
}

const scanFields: Record<string, ArgKind> = { oneFilesystem: 'bool?', sort: 'bool?' };
function checkScanOpts(o: unknown, name: string): void {
  checkFields(o, scanFields, name);
  const x = (o as { xattrs?: unknown } | undefined)?.xattrs;
  if (x !== undefined && typeof x !== 'boolean') {
    checkArg('array', x, `${name}.xattrs`);
    (x as unknown[]).forEach((v, i) => checkString(v, `${name}.xattrs[${i}]`));
  }
}

/** Signatures of all native functions. */
export const signatures: { readonly [K in keyof NativeBindings]: Signature } = {
  mount: { args: [['source', 'string'], ['target', 'path'], ['fstype', 'string?'], ['flags', 'uint'], ['data', 'string?']] },
  umount: { args: [['target', 'path'], ['flags', 'uint']] },
  bindMount: {
    args: [['source', 'path'], ['target', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[2], { recursive: 'bool?', readOnly: 'bool?' }, 'opts'),
  },
  makeMount: {
    args: [['target', 'path'], ['propagation', 'string'], ['recursive', 'bool?']],
    extra: (a) => {
      if (!['private', 'shared', 'slave', 'unbindable'].includes(a[1] as string)) {
        throw new TypeError(`propagation must be private, shared, slave or unbindable, got ${String(a[1])}`);
      }
    },
  },
  isMountpoint: { args: [['path', 'path']] },
  statfs: { args: [['path', 'path']] },
  mountFrom: {
    args: [['dir', 'path'], ['source', 'string'], ['target', 'path'], ['fstype', 'string?'], ['flags', 'uint'], ['data', 'string?']],
  },
  getProjectId: { args: [['path', 'path']] },
  setProjectId: { args: [['path', 'path'], ['projectId', 'uint']] },
  setProjectQuota: { args: [['device', 'path'], ['projectId', 'uint'], ['bytes', 'uint']] },
  getProjectQuota: { args: [['device', 'path'], ['projectId', 'uint']] },

  loopGetFree: { args: [] },
  loopAttach: {
    args: [['file', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[1], { readOnly: 'bool?', autoclear: 'bool?', directIo: 'bool?', offset: 'uint', sizeLimit: 'uint' }, 'opts'),
  },
  loopDetach: { args: [['device', 'path']] },
  loopInfo: { args: [['device', 'path']] },
  loopSetCapacity: { args: [['device', 'path']] },
  blockDeviceSize: { args: [['device', 'path']] },

  fallocate: { args: [['path', 'path'], ['mode', 'uint'], ['offset', 'uint'], ['length', 'uint']] },
  truncate: { args: [['path', 'path'], ['size', 'uint'], ['create', 'bool?']] },
  blkDiscard: { args: [['device', 'path'], ['offset', 'uint'], ['length', 'uint']] },

  dmVersion: { args: [] },
  dmCreate: {
    args: [['name', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[1], { uuid: 'string', readOnly: 'bool?' }, 'opts'),
  },
  dmLoad: {
    args: [['name', 'path'], ['targets', 'array']],
    extra: (a) =>
      (a[1] as unknown[]).forEach((t, i) => {
        checkArg('object', t, `targets[${i}]`);
        const o = t as Record<string, unknown>;
        checkArg('uint', o.start, `targets[${i}].start`);
        checkArg('uint', o.length, `targets[${i}].length`);
        checkArg('path', o.type, `targets[${i}].type`);
        checkArg('string', o.params, `targets[${i}].params`);
      }),
  },
  dmSuspend: {
    args: [['name', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[1], { noFlush: 'bool?', skipLockfs: 'bool?' }, 'opts'),
  },
  dmResume: { args: [['name', 'path']] },
  dmRemove: {
    args: [['name', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[1], { deferred: 'bool?' }, 'opts'),
  },
  dmMessage: { args: [['name', 'path'], ['sector', 'uint'], ['message', 'path']] },
  dmStatus: { args: [['name', 'path']] },
  dmTable: { args: [['name', 'path']] },
  dmInfo: { args: [['name', 'path']] },
  dmList: { args: [] },

  btrfsSubvolumeCreate: { args: [['path', 'path']] },
  btrfsSnapshot: {
    args: [['source', 'path'], ['dest', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[2], { readOnly: 'bool?' }, 'opts'),
  },
  btrfsSubvolumeDelete: { args: [['path', 'path']] },
  btrfsIsSubvolume: { args: [['path', 'path']] },
  btrfsSubvolumeInfo: { args: [['path', 'path']] },
  btrfsQuotaCtl: { args: [['path', 'path'], ['enable', 'bool?']] },
  btrfsQgroupLimit: { args: [['path', 'path'], ['maxReferenced', 'uint']] },

  lgetxattr: { args: [['path', 'path'], ['name', 'path']] },
  lsetxattr: {
    args: [['path', 'path'], ['name', 'path'], ['value', 'buffer']],
    extra: (a) => {
      if (a[3] !== undefined) checkArg('uint', a[3], 'flags');
    },
  },
  llistxattr: { args: [['path', 'path']] },
  lremovexattr: { args: [['path', 'path'], ['name', 'path']] },

  mknod: { args: [['path', 'path'], ['mode', 'uint'], ['dev', 'uint']] },
  renameat2: { args: [['oldPath', 'path'], ['newPath', 'path'], ['flags', 'uint']] },
  syncfs: { args: [['path', 'path']] },
  openBounded: {
    args: [['root', 'path'], ['path', 'string'], ['opts', 'object?']],
    extra: (a) => {
      checkFields(a[2], { flags: 'uint', mode: 'uint', noSymlinks: 'bool?' }, 'opts');
      const r = (a[2] as { resolve?: unknown } | undefined)?.resolve;
      if (r !== undefined && r !== 'in-root' && r !== 'beneath') throw new TypeError(`opts.resolve must be 'in-root' or 'beneath'`);
    },
  },

  applyEntries: { args: [['rootFd', 'fd'], ['entries', 'array']], extra: checkApplyEntries },
  finishFile: {
    args: [['fd', 'fd'], ['opts', 'object']],
    extra: (a) => {
      const o = a[1] as Record<string, unknown>;
      for (const k of ['mode', 'uid', 'gid', 'mtimeNsec']) checkArg('uint', o[k], `opts.${k}`);
      checkArg('int', o.mtimeSec, 'opts.mtimeSec');
      checkFields(o, { atimeSec: 'int', atimeNsec: 'uint', size: 'uint' }, 'opts');
      checkXattrs(o.xattrs, 'opts.xattrs');
    },
  },
  setTimes: {
    args: [['rootFd', 'fd'], ['entries', 'array']],
    extra: (a) =>
      (a[1] as unknown[]).forEach((e, i) => {
        checkArg('object', e, `entries[${i}]`);
        const o = e as Record<string, unknown>;
        checkRelPath(o.path, `entries[${i}].path`);
        checkArg('int', o.mtimeSec, `entries[${i}].mtimeSec`);
        checkArg('uint', o.mtimeNsec, `entries[${i}].mtimeNsec`);
        checkFields(o, { atimeSec: 'int', atimeNsec: 'uint' }, `entries[${i}]`);
      }),
  },
  openApplySession: { args: [['rootFd', 'fd']] },
  createSha256: { args: [] },
  scanTree: { args: [['root', 'path'], ['opts', 'object?']], extra: (a) => checkScanOpts(a[1], 'opts') },
  readFiles: {
    args: [['rootFd', 'fd'], ['paths', 'array'], ['sizes', 'array'], ['opts', 'object?']],
    extra: (a) => {
      (a[1] as unknown[]).forEach((p, i) => checkRelPath(p, `paths[${i}]`));
      (a[2] as unknown[]).forEach((n, i) => checkArg('uint', n, `sizes[${i}]`));
      if ((a[1] as unknown[]).length !== (a[2] as unknown[]).length) throw new RangeError('readFiles: paths and sizes must have the same length');
      checkFields(a[3], { align: 'uint' }, 'opts');
    },
  },
  lstatMany: {
    args: [['rootFd', 'fd'], ['paths', 'array']],
    extra: (a) => {
      (a[1] as unknown[]).forEach((p, i) => checkRelPath(p, `paths[${i}]`));
      if (a[2] !== undefined) {
        checkArg('object?', a[2], 'opts');
        checkScanOpts(a[2], 'opts');
      }
    },
  },
  copyTree: {
    args: [['source', 'path'], ['dest', 'path'], ['opts', 'object?']],
    extra: (a) => checkFields(a[2], { reflink: 'bool?' }, 'opts'),
  },
  removeTree: { args: [['path', 'path']] },
};
