"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.signatures = void 0;
const validate_1 = require("./validate");
const entryFields = {
    mode: 'uint', uid: 'uint', gid: 'uint', mtimeSec: 'int', mtimeNsec: 'uint', atimeSec: 'int', atimeNsec: 'uint',
    devMajor: 'uint', devMinor: 'uint', size: 'uint', keepOpen: 'bool?', deferTimes: 'bool?', noReplace: 'bool?',
    linkname: 'string',
};
function checkXattrs(x, name) {
    if (x === undefined)
        return;
    (0, validate_1.checkArg)('object', x, name);
    for (const [k, v] of Object.entries(x)) {
        (0, validate_1.checkString)(k, `${name} key`);
        (0, validate_1.checkArg)('buffer', v, `${name}[${JSON.stringify(k)}]`);
    }
}
function checkRelPath(p, name) {
    (0, validate_1.checkString)(p, name, true);
}
const OPS = new Set(['create', 'remove', 'whiteout', 'xattrs']);
const TYPES = new Set(['file', 'dir', 'symlink', 'link', 'char', 'block', 'fifo']);
function checkApplyEntries(args) {
    const entries = args[1];
    entries.forEach((e, i) => {
        const n = `entries[${i}]`;
        (0, validate_1.checkArg)('object', e, n);
        const o = e;
        if (typeof o.op !== 'string' || !OPS.has(o.op))
            throw new TypeError(`${n}.op must be one of create, remove, whiteout, xattrs`);
        checkRelPath(o.path, `${n}.path`);
        if (o.op === 'create' && (typeof o.type !== 'string' || !TYPES.has(o.type))) {
            throw new TypeError(`${n}.type must be one of ${[...TYPES].join(', ')}`);
        }
        (0, validate_1.checkFields)(o, entryFields, n);
        if (o.data !== undefined)
            (0, validate_1.checkArg)('buffer', o.data, `${n}.data`);
        checkXattrs(o.xattrs, `${n}.xattrs`);
    });
}
const scanFields = { oneFilesystem: 'bool?', sort: 'bool?' };
function checkScanOpts(o, name) {
    (0, validate_1.checkFields)(o, scanFields, name);
    const x = o?.xattrs;
    if (x !== undefined && typeof x !== 'boolean') {
        (0, validate_1.checkArg)('array', x, `${name}.xattrs`);
        x.forEach((v, i) => (0, validate_1.checkString)(v, `${name}.xattrs[${i}]`));
    }
}
/** Signatures of all native functions. */
exports.signatures = {
    mount: { args: [['source', 'string'], ['target', 'path'], ['fstype', 'string?'], ['flags', 'uint'], ['data', 'string?']] },
    umount: { args: [['target', 'path'], ['flags', 'uint']] },
    bindMount: {
        args: [['source', 'path'], ['target', 'path'], ['opts', 'object?']],
        extra: (a) => (0, validate_1.checkFields)(a[2], { recursive: 'bool?', readOnly: 'bool?' }, 'opts'),
    },
    makeMount: {
        args: [['target', 'path'], ['propagation', 'string'], ['recursive', 'bool?']],
        extra: (a) => {
            if (!['private', 'shared', 'slave', 'unbindable'].includes(a[1])) {
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
        extra: (a) => (0, validate_1.checkFields)(a[1], { readOnly: 'bool?', autoclear: 'bool?', directIo: 'bool?', offset: 'uint', sizeLimit: 'uint' }, 'opts'),
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
        extra: (a) => (0, validate_1.checkFields)(a[1], { uuid: 'string', readOnly: 'bool?' }, 'opts'),
    },
    dmLoad: {
        args: [['name', 'path'], ['targets', 'array']],
        extra: (a) => a[1].forEach((t, i) => {
            (0, validate_1.checkArg)('object', t, `targets[${i}]`);
            const o = t;
            (0, validate_1.checkArg)('uint', o.start, `targets[${i}].start`);
            (0, validate_1.checkArg)('uint', o.length, `targets[${i}].length`);
            (0, validate_1.checkArg)('path', o.type, `targets[${i}].type`);
            (0, validate_1.checkArg)('string', o.params, `targets[${i}].params`);
        }),
    },
    dmSuspend: {
        args: [['name', 'path'], ['opts', 'object?']],
        extra: (a) => (0, validate_1.checkFields)(a[1], { noFlush: 'bool?', skipLockfs: 'bool?' }, 'opts'),
    },
    dmResume: { args: [['name', 'path']] },
    dmRemove: {
        args: [['name', 'path'], ['opts', 'object?']],
        extra: (a) => (0, validate_1.checkFields)(a[1], { deferred: 'bool?' }, 'opts'),
    },
    dmMessage: { args: [['name', 'path'], ['sector', 'uint'], ['message', 'path']] },
    dmStatus: { args: [['name', 'path']] },
    dmTable: { args: [['name', 'path']] },
    dmInfo: { args: [['name', 'path']] },
    dmList: { args: [] },
    btrfsSubvolumeCreate: { args: [['path', 'path']] },
    btrfsSnapshot: {
        args: [['source', 'path'], ['dest', 'path'], ['opts', 'object?']],
        extra: (a) => (0, validate_1.checkFields)(a[2], { readOnly: 'bool?' }, 'opts'),
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
            if (a[3] !== undefined)
                (0, validate_1.checkArg)('uint', a[3], 'flags');
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
            (0, validate_1.checkFields)(a[2], { flags: 'uint', mode: 'uint', noSymlinks: 'bool?' }, 'opts');
            const r = a[2]?.resolve;
            if (r !== undefined && r !== 'in-root' && r !== 'beneath')
                throw new TypeError(`opts.resolve must be 'in-root' or 'beneath'`);
        },
    },
    applyEntries: { args: [['rootFd', 'fd'], ['entries', 'array']], extra: checkApplyEntries },
    finishFile: {
        args: [['fd', 'fd'], ['opts', 'object']],
        extra: (a) => {
            const o = a[1];
            for (const k of ['mode', 'uid', 'gid', 'mtimeNsec'])
                (0, validate_1.checkArg)('uint', o[k], `opts.${k}`);
            (0, validate_1.checkArg)('int', o.mtimeSec, 'opts.mtimeSec');
            (0, validate_1.checkFields)(o, { atimeSec: 'int', atimeNsec: 'uint', size: 'uint' }, 'opts');
            checkXattrs(o.xattrs, 'opts.xattrs');
        },
    },
    setTimes: {
        args: [['rootFd', 'fd'], ['entries', 'array']],
        extra: (a) => a[1].forEach((e, i) => {
            (0, validate_1.checkArg)('object', e, `entries[${i}]`);
            const o = e;
            checkRelPath(o.path, `entries[${i}].path`);
            (0, validate_1.checkArg)('int', o.mtimeSec, `entries[${i}].mtimeSec`);
            (0, validate_1.checkArg)('uint', o.mtimeNsec, `entries[${i}].mtimeNsec`);
            (0, validate_1.checkFields)(o, { atimeSec: 'int', atimeNsec: 'uint' }, `entries[${i}]`);
        }),
    },
    scanTree: { args: [['root', 'path'], ['opts', 'object?']], extra: (a) => checkScanOpts(a[1], 'opts') },
    lstatMany: {
        args: [['rootFd', 'fd'], ['paths', 'array']],
        extra: (a) => {
            a[1].forEach((p, i) => checkRelPath(p, `paths[${i}]`));
            if (a[2] !== undefined) {
                (0, validate_1.checkArg)('object?', a[2], 'opts');
                checkScanOpts(a[2], 'opts');
            }
        },
    },
    copyTree: {
        args: [['source', 'path'], ['dest', 'path'], ['opts', 'object?']],
        extra: (a) => (0, validate_1.checkFields)(a[2], { reflink: 'bool?' }, 'opts'),
    },
};
//# sourceMappingURL=signatures.js.map