"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.MountDataTooLargeError = exports.MaxDepthError = exports.CorruptLayerError = exports.PAGE_SIZE = exports.LINK_ID_LENGTH = exports.MAX_DEPTH = exports.COMMITTED_FILE = exports.LINK_FILE = exports.LOWER_FILE = exports.MERGED_DIR = exports.WORK_DIR = exports.DIFF_DIR = exports.LINK_DIR = void 0;
exports.generateLinkId = generateLinkId;
exports.isLinkId = isLinkId;
exports.parseLowerFile = parseLowerFile;
exports.lowerForChild = lowerForChild;
exports.formatMountLabel = formatMountLabel;
exports.splitMountFlags = splitMountFlags;
exports.planMount = planMount;
/**
 * overlay2's on-disk vocabulary and the pure computations on it: link ids, `lower` files and the overlay mount
 * data, including the switch to relative paths when the absolute form does not fit in one page.
 * @module
 */
const node_crypto_1 = require("node:crypto");
const path = __importStar(require("node:path"));
const errors_1 = require("../../errors");
const constants_1 = require("../../native/constants");
/** Directory of the short symlinks (`l/<link id>` → `../<id>/diff`). */
exports.LINK_DIR = 'l';
exports.DIFF_DIR = 'diff';
exports.WORK_DIR = 'work';
exports.MERGED_DIR = 'merged';
exports.LOWER_FILE = 'lower';
exports.LINK_FILE = 'link';
exports.COMMITTED_FILE = 'committed';
/** Most lower layers a layer may have, as Docker: 128 relative `l/<26 chars>` entries fit in one page. */
exports.MAX_DEPTH = 128;
/** Length of a link id, as Docker: ((26 + len('l/') + 1) * 128) stays below a page minus room for labels. */
exports.LINK_ID_LENGTH = 26;
/** mount(2) copies at most one page of option data. */
exports.PAGE_SIZE = 4096;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const LINK_ID_RE = /^[A-Z2-7]{26}$/;
/** What a `lower` entry may look like: anything else could smuggle options into the mount data. */
const LOWER_ENTRY_RE = /^l\/[A-Za-z0-9]{1,64}$/;
/** A random link id: 26 characters of base32 (A-Z, 2-7) from 17 random bytes, as Docker's GenerateID. */
function generateLinkId(random = node_crypto_1.randomBytes) {
    const bytes = random(Math.ceil((exports.LINK_ID_LENGTH * 5) / 8));
    let out = '';
    let acc = 0;
    let bits = 0;
    for (const byte of bytes) {
        acc = (acc << 8) | byte;
        bits += 8;
        while (bits >= 5 && out.length < exports.LINK_ID_LENGTH) {
            out += BASE32[(acc >>> (bits - 5)) & 31];
            bits -= 5;
        }
        acc &= (1 << bits) - 1;
    }
    return out;
}
/** Whether `s` is a link id this driver would generate. */
function isLinkId(s) {
    return LINK_ID_RE.test(s);
}
/** A layer whose metadata files are not what this driver writes. */
class CorruptLayerError extends errors_1.GraphdriverError {
    id;
    constructor(id, what) {
        super('ERR_LAYER_CORRUPT', `overlay2: layer ${JSON.stringify(id)} is damaged: ${what}`);
        this.id = id;
    }
}
exports.CorruptLayerError = CorruptLayerError;
/** Too many ancestors (Docker's "max depth exceeded"). */
class MaxDepthError extends errors_1.GraphdriverError {
    parent;
    constructor(parent, depth) {
        super('ERR_MAX_DEPTH', `overlay2: max depth exceeded: a layer on top of ${JSON.stringify(parent)} would have ${depth} lower layers (at most ${exports.MAX_DEPTH})`);
        this.parent = parent;
    }
}
exports.MaxDepthError = MaxDepthError;
/** The mount options did not fit in a page even with relative paths. */
class MountDataTooLargeError extends errors_1.GraphdriverError {
    id;
    constructor(id, length) {
        super('ERR_MOUNT_DATA_TOO_LARGE', `overlay2: cannot mount layer ${JSON.stringify(id)}: mount data of ${length} bytes exceeds a page even with relative paths (mount label or options too large)`);
        this.id = id;
    }
}
exports.MountDataTooLargeError = MountDataTooLargeError;
/** Splits and checks the content of a `lower` file (`l/ABC:l/DEF`, nearest first). */
function parseLowerFile(id, content) {
    const text = content.endsWith('\n') ? content.slice(0, -1) : content;
    const parts = text.split(':');
    if (parts.length > exports.MAX_DEPTH)
        throw new CorruptLayerError(id, `lower file lists ${parts.length} layers (at most ${exports.MAX_DEPTH})`);
    for (const p of parts) {
        if (!LOWER_ENTRY_RE.test(p))
            throw new CorruptLayerError(id, `lower file entry ${JSON.stringify(p.slice(0, 80))} is not l/<link id>`);
    }
    return parts;
}
/**
 * The `lower` content of a new layer on top of `parent`: the parent's own link first, then the parent's lowers.
 * Throws {@link MaxDepthError} past {@link MAX_DEPTH}.
 */
function lowerForChild(parent, parentLink, parentLowers) {
    const lowers = [`${exports.LINK_DIR}/${parentLink}`, ...parentLowers];
    if (lowers.length > exports.MAX_DEPTH)
        throw new MaxDepthError(parent, lowers.length);
    return lowers.join(':');
}
/** Docker's label.FormatMountLabel: appends `context="<label>"` when there is a label. */
function formatMountLabel(options, mountLabel) {
    if (mountLabel === undefined || mountLabel === '')
        return options;
    const ctx = `context="${mountLabel}"`;
    return options === '' ? ctx : `${options},${ctx}`;
}
/** Generic mount options that are mount(2) flags, not filesystem data: [sets the flag?, flag]. */
const FLAG_OPTIONS = {
    ro: [true, constants_1.MountFlags.MS_RDONLY],
    rw: [false, constants_1.MountFlags.MS_RDONLY],
    nosuid: [true, constants_1.MountFlags.MS_NOSUID],
    suid: [false, constants_1.MountFlags.MS_NOSUID],
    nodev: [true, constants_1.MountFlags.MS_NODEV],
    dev: [false, constants_1.MountFlags.MS_NODEV],
    noexec: [true, constants_1.MountFlags.MS_NOEXEC],
    exec: [false, constants_1.MountFlags.MS_NOEXEC],
    sync: [true, constants_1.MountFlags.MS_SYNCHRONOUS],
    async: [false, constants_1.MountFlags.MS_SYNCHRONOUS],
    dirsync: [true, constants_1.MountFlags.MS_DIRSYNC],
    noatime: [true, constants_1.MountFlags.MS_NOATIME],
    atime: [false, constants_1.MountFlags.MS_NOATIME],
    nodiratime: [true, constants_1.MountFlags.MS_NODIRATIME],
    diratime: [false, constants_1.MountFlags.MS_NODIRATIME],
    relatime: [true, constants_1.MountFlags.MS_RELATIME],
    norelatime: [false, constants_1.MountFlags.MS_RELATIME],
    strictatime: [true, constants_1.MountFlags.MS_STRICTATIME],
    nostrictatime: [false, constants_1.MountFlags.MS_STRICTATIME],
    lazytime: [true, constants_1.MountFlags.MS_LAZYTIME],
    nolazytime: [false, constants_1.MountFlags.MS_LAZYTIME],
};
/** Splits options into mount(2) flags (`nodev`, `ro`, ...) and filesystem data options, like mount(8) does. */
function splitMountFlags(options) {
    let flags = 0;
    const flagOptions = [];
    const data = [];
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
function buildData(lowerdir, upper, work, i, extra) {
    let opts = (i.indexOff ? 'index=off,' : '') + (i.userxattr ? 'userxattr,' : '') + `lowerdir=${lowerdir}`;
    if (upper !== null && work !== null)
        opts += `,upperdir=${upper},workdir=${work}`;
    for (const e of extra)
        opts += `,${e}`;
    return formatMountLabel(opts, i.mountLabel);
}
/**
 * The mount data of a layer, as Docker's overlay2 Get: absolute paths (`<home>/l/<link id>` lowers, the layer's
 * diff and work dirs) when they fit in a page, else the same relative to the home (`l/<link id>`, `<id>/diff`),
 * mounted from there. Throws {@link MountDataTooLargeError} when neither fits.
 */
function planMount(i) {
    const limit = (i.pageSize ?? exports.PAGE_SIZE) - 1;
    const { flags, flagOptions, data: extra } = splitMountFlags(i.extra);
    const dir = path.join(i.home, i.id);
    const absLowers = i.lowers.map((l) => path.join(i.home, l)).join(':');
    const absDiff = path.join(dir, exports.DIFF_DIR);
    const abs = i.readonly
        ? buildData(`${absDiff}:${absLowers}`, null, null, i, extra)
        : buildData(absLowers, absDiff, path.join(dir, exports.WORK_DIR), i, extra);
    if (Buffer.byteLength(abs) <= limit)
        return { data: abs, target: path.join(dir, exports.MERGED_DIR), flags, flagOptions };
    const relLowers = i.lowers.join(':');
    const relDiff = `${i.id}/${exports.DIFF_DIR}`;
    const rel = i.readonly
        ? buildData(`${relDiff}:${relLowers}`, null, null, i, extra)
        : buildData(relLowers, relDiff, `${i.id}/${exports.WORK_DIR}`, i, extra);
    if (Buffer.byteLength(rel) > limit)
        throw new MountDataTooLargeError(i.id, Buffer.byteLength(rel));
    return { data: rel, target: `${i.id}/${exports.MERGED_DIR}`, from: i.home, flags, flagOptions };
}
//# sourceMappingURL=layout.js.map