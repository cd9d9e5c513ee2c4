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
exports.applyLayer = applyLayer;
/**
 * Applying a layer tar onto a directory, in one of three whiteout formats, through the native batched primitives.
 * Every path is resolved inside the root by the kernel (openat2 RESOLVE_IN_ROOT in native code), so whatever the
 * archive says, nothing outside the root is created, changed or removed.
 * @module
 */
const node_crypto_1 = require("node:crypto");
const fs = __importStar(require("node:fs"));
const node_util_1 = require("node:util");
const errors_1 = require("../errors");
const bindings_1 = require("../native/bindings");
const constants_1 = require("../native/constants");
const decompress_1 = require("./decompress");
const entry_path_1 = require("./entry-path");
const tar_reader_1 = require("./tar-reader");
const whiteout_1 = require("./whiteout");
const fsWrite = (0, node_util_1.promisify)(fs.write);
const fsOpen = (0, node_util_1.promisify)(fs.open);
const fsClose = (0, node_util_1.promisify)(fs.close);
/** Files up to this size travel inside a batch; larger ones are streamed through an fd. */
const INLINE_FILE_MAX = 1 << 20;
/** A batch is sent when it holds this many entries or bytes. */
const BATCH_ENTRIES = 512;
const BATCH_BYTES = 8 << 20;
const ZERO_BLOCK = Buffer.alloc(4096);
/** errnos that mean the archive asked for something impossible or hostile, rather than a system failure. */
const ARCHIVE_ERRNOS = new Set(['EXDEV', 'ELOOP', 'ENOTDIR', 'EISDIR', 'EEXIST', 'ENOENT', 'EPERM', 'EINVAL', 'ENAMETOOLONG', 'ENOTEMPTY', 'EMLINK']);
function systemError(r, path) {
    return Object.assign(new Error(`${r.code}: ${r.syscall} failed for ${JSON.stringify(path)} while applying a layer`), {
        code: r.code,
        errno: -r.errno,
        syscall: r.syscall,
        path,
    });
}
function entryType(h) {
    switch (h.type) {
        case 'dir':
            return 'dir';
        default:
            return h.type;
    }
}
/** Applies one layer; see {@link applyLayer}. Holds the state that lives for one archive. */
class LayerApplier {
    root;
    rootFd;
    warn;
    b;
    format;
    maxDepth;
    keepOwner;
    devices;
    /** Directories known to exist (created or checked during this apply); '' is the root. */
    knownDirs = new Set(['']);
    /** Every path written by this layer (for opaque directories: what must survive). */
    written = new Set();
    /** Directory times, set after all entries so that creating children does not disturb them. */
    dirTimes = [];
    batch = [];
    batchBytes = 0;
    inflight = null;
    rootMeta = null;
    rootOpaque = false;
    /** aufs hardlink stash: `.wh..wh.plnk/<name>` files are kept under a temp dir in the root until the end. */
    plnkDir = null;
    plnkNames = new Set();
    size = 0;
    constructor(root, rootFd, opts, warn) {
        this.root = root;
        this.rootFd = rootFd;
        this.warn = warn;
        this.b = opts.bindings ?? (0, bindings_1.loadBindings)();
        this.format = opts.format ?? 'naive';
        this.maxDepth = opts.maxDepth ?? 512;
        this.keepOwner = opts.keepOwnership ?? process.getuid?.() === 0;
        this.devices = opts.devices ?? 'create';
    }
    /** Sends the current batch; waits for the previous one first so entries apply strictly in archive order. */
    async flush() {
        if (this.inflight) {
            const p = this.inflight;
            this.inflight = null;
            await p;
        }
        if (this.batch.length === 0)
            return;
        const items = this.batch;
        this.batch = [];
        this.batchBytes = 0;
        this.inflight = this.b.applyEntries(this.rootFd, items.map((p) => p.entry)).then((results) => this.check(items, results));
    }
    /** Waits until every queued entry is on disk. */
    async drain() {
        await this.flush();
        await this.flush();
    }
    check(items, results) {
        results.forEach((r, i) => {
            const it = items[i];
            for (const w of r.warnings ?? [])
                this.warn({ path: it.entry.path, message: `xattr not applied: ${w}` });
            if (r.errno === 0)
                return;
            if (ARCHIVE_ERRNOS.has(r.code)) {
                const what = it.entry.op === 'create' ? `cannot create ${it.entry.type}` : `cannot apply ${it.entry.op}`;
                throw new errors_1.InvalidArchiveError(`${what} (${r.code} from ${r.syscall})`, it.name, {
                    cause: systemError(r, it.entry.path),
                });
            }
            throw systemError(r, it.entry.path);
        });
    }
    async push(entry, name, bytes = 0) {
        this.batch.push({ entry, name });
        this.batchBytes += bytes;
        if (this.batch.length >= BATCH_ENTRIES || this.batchBytes >= BATCH_BYTES)
            await this.flush();
    }
    /** Forgets known directories at or under `p` (after a removal or replacement). */
    forget(p) {
        if (!this.knownDirs.has(p))
            return;
        const prefix = p + '/';
        for (const d of this.knownDirs)
            if (d === p || d.startsWith(prefix))
                this.knownDirs.delete(d);
    }
    /**
     * Makes sure the parent directories of `p` exist. Layers normally list every directory before its contents;
     * when one is missing, it is created 0755 root-owned, as Docker does.
     */
    async ensureParents(p, name) {
        const parent = (0, entry_path_1.parentOf)(p);
        if (this.knownDirs.has(parent))
            return;
        const chain = [];
        for (let d = parent; d !== '' && !this.knownDirs.has(d); d = (0, entry_path_1.parentOf)(d))
            chain.unshift(d);
        await this.drain();
        const stats = await this.b.lstatMany(this.rootFd, chain);
        for (let i = 0; i < chain.length; i++) {
            const st = stats[i];
            const d = chain[i];
            if (st === null || st === undefined) {
                await this.push({ op: 'create', path: d, type: 'dir', mode: 0o755, ...(this.keepOwner ? { uid: 0, gid: 0 } : {}) }, name);
            }
            else if ((st.mode & 0o170000) !== 0o040000 && (st.mode & 0o170000) !== 0o120000) {
                throw new errors_1.InvalidArchiveError(`parent ${JSON.stringify(d)} is not a directory`, name);
            }
            this.knownDirs.add(d);
        }
    }
    owner(h) {
        return this.keepOwner ? { uid: h.uid, gid: h.gid } : {};
    }
    xattrs(h, p) {
        if (h.xattrs.size === 0)
            return undefined;
        const out = {};
        for (const [k, v] of h.xattrs) {
            // overlayfs interprets trusted.overlay.* (opaque, redirect, metacopy): only our own conversion may set them.
            if (k.startsWith(whiteout_1.OVERLAY_XATTR_PREFIX)) {
                this.warn({ path: p, message: `ignored overlay xattr ${k} from the archive` });
                continue;
            }
            out[k] = Buffer.from(v);
        }
        return Object.keys(out).length > 0 ? out : undefined;
    }
    /** Applies one entry. */
    async entry(h, body) {
        const p = (0, entry_path_1.cleanEntryPath)(h.name, this.maxDepth);
        if (h.type === 'file')
            this.size += h.size;
        if (p === '') {
            // The root directory itself: only its metadata can be applied.
            if (h.type !== 'dir')
                throw new errors_1.InvalidArchiveError('entry replaces the layer root with a non-directory', h.name);
            this.rootMeta = h;
            return;
        }
        // aufs metadata at the root: skipped, except hardlink targets kept for later links.
        if (p.startsWith(whiteout_1.WHITEOUT_META_PREFIX)) {
            if (p.startsWith(whiteout_1.WHITEOUT_LINK_DIR + '/') && h.type === 'file' && this.format !== 'aufs') {
                await this.stashPlnk(h, body, p);
                return;
            }
            if (p !== whiteout_1.WHITEOUT_OPAQUE)
                return;
        }
        const base = (0, entry_path_1.baseOf)(p);
        if (base.startsWith(whiteout_1.WHITEOUT_PREFIX) && this.format !== 'aufs') {
            await this.whiteout(p, base, h);
            return;
        }
        if (base.startsWith(whiteout_1.WHITEOUT_PREFIX)) {
            // aufs keeps whiteouts as files; still refuse names that could never be legal whiteouts.
            const target = base.slice(whiteout_1.WHITEOUT_PREFIX.length);
            if (target === '' || target === '.' || target === '..')
                throw new errors_1.InvalidArchiveError('whiteout names no file', h.name);
        }
        await this.ensureParents(p, h.name);
        if (h.type === 'char' || h.type === 'block') {
            if (this.devices === 'refuse')
                throw new errors_1.InvalidArchiveError('device nodes are not allowed in this layer', h.name);
            if (this.devices === 'skip') {
                this.warn({ path: p, message: 'device node skipped' });
                return;
            }
        }
        this.forget(p);
        this.written.add(p);
        const common = {
            op: 'create',
            path: p,
            type: entryType(h),
            mode: h.mode,
            ...this.owner(h),
            mtimeSec: h.mtimeSec,
            mtimeNsec: h.mtimeNsec,
            atimeSec: h.atimeSec ?? h.mtimeSec,
            atimeNsec: h.atimeNsec ?? h.mtimeNsec,
        };
        const xattrs = this.xattrs(h, p);
        if (xattrs)
            Object.assign(common, { xattrs });
        switch (h.type) {
            case 'dir':
                this.knownDirs.add(p);
                this.dirTimes.push({ path: p, mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec, atimeSec: common.atimeSec, atimeNsec: common.atimeNsec });
                await this.push({ ...common, deferTimes: true }, h.name);
                return;
            case 'symlink':
                await this.push({ ...common, linkname: h.linkname }, h.name);
                return;
            case 'link': {
                const target = this.linkTarget(h);
                await this.push({ op: 'create', path: p, type: 'link', linkname: target }, h.name);
                return;
            }
            case 'char':
            case 'block':
                await this.push({ ...common, devMajor: h.devMajor, devMinor: h.devMinor }, h.name);
                return;
            case 'fifo':
                await this.push(common, h.name);
                return;
            case 'file':
                await this.file(common, h, body);
                return;
        }
    }
    /** Resolves a hardlink's target name (cleaned, inside the root; aufs plnk targets map to the stash). */
    linkTarget(h) {
        const t = (0, entry_path_1.cleanEntryPath)(h.linkname, this.maxDepth, 'hardlink target');
        if (t === '')
            throw new errors_1.InvalidArchiveError('hardlink to the layer root', h.name);
        if (t.startsWith(whiteout_1.WHITEOUT_LINK_DIR + '/') && this.format !== 'aufs') {
            const stashed = (0, entry_path_1.baseOf)(t);
            if (!this.plnkNames.has(stashed) || this.plnkDir === null)
                throw new errors_1.InvalidArchiveError('hardlink to a missing aufs link target', h.name);
            return (0, entry_path_1.joinPath)(this.plnkDir, stashed);
        }
        return t;
    }
    async file(common, h, body) {
        if (h.size <= INLINE_FILE_MAX) {
            const parts = [];
            for await (const c of body())
                parts.push(Buffer.from(c));
            const data = parts.length === 1 ? parts[0] : Buffer.concat(parts, h.size);
            await this.push({ ...common, data, size: h.size }, h.name, h.size);
            return;
        }
        // Large file: create it open, stream the body through the fd skipping zero blocks (keeps sparse files
        // sparse), then set size and metadata.
        await this.drain();
        const [r] = await this.b.applyEntries(this.rootFd, [{ ...common, keepOpen: true }]);
        this.check([{ entry: common, name: h.name }], [r]);
        const fd = r.fd;
        const writer = new SparseWriter(fd);
        try {
            for await (const chunk of body())
                await writer.write(chunk);
            await writer.end();
        }
        catch (e) {
            await fsClose(fd).catch(() => undefined);
            throw e;
        }
        await this.b.finishFile(fd, {
            mode: h.mode,
            ...this.finishOwner(h),
            mtimeSec: h.mtimeSec,
            mtimeNsec: h.mtimeNsec,
            atimeSec: common.atimeSec ?? h.mtimeSec,
            atimeNsec: common.atimeNsec ?? h.mtimeNsec,
            size: h.size,
            ...(common.xattrs ? { xattrs: common.xattrs } : {}),
        });
    }
    /** finishFile always sets an owner: the archive's, or the caller's own when ownership is not kept. */
    finishOwner(h) {
        return this.keepOwner ? { uid: h.uid, gid: h.gid } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    }
    async whiteout(p, base, h) {
        const dir = (0, entry_path_1.parentOf)(p);
        if (base === whiteout_1.WHITEOUT_OPAQUE) {
            await this.ensureParents(p, h.name);
            if (this.format === 'overlay') {
                if (dir === '') {
                    // The root of an overlay diff is the layer's upper dir: opaque there means "hide all lowers".
                    this.rootOpaque = true;
                    return;
                }
                this.written.add(p);
                await this.push({ op: 'xattrs', path: dir, xattrs: { [whiteout_1.OVERLAY_OPAQUE_XATTR]: Buffer.from('y') } }, h.name);
                return;
            }
            await this.opaque(dir, h.name);
            return;
        }
        const victim = base.slice(whiteout_1.WHITEOUT_PREFIX.length);
        if (victim === '' || victim === '.' || victim === '..' || victim.startsWith(whiteout_1.WHITEOUT_META_PREFIX)) {
            throw new errors_1.InvalidArchiveError('whiteout names no file that can be removed', h.name);
        }
        const target = (0, entry_path_1.joinPath)(dir, victim);
        this.forget(target);
        this.written.delete(target);
        if (this.format === 'overlay') {
            await this.ensureParents(target, h.name);
            this.written.add(target);
            await this.push({ op: 'whiteout', path: target }, h.name);
        }
        else {
            await this.push({ op: 'remove', path: target }, h.name);
        }
    }
    /** Naive opaque directory: removes every entry under `dir` that this layer did not write. */
    async opaque(dir, name) {
        await this.drain();
        let fd;
        try {
            fd = await this.b.openBounded(this.root, dir === '' ? '.' : dir, { flags: constants_1.OpenFlags.O_RDONLY | constants_1.OpenFlags.O_DIRECTORY });
        }
        catch (e) {
            const code = e.code ?? '';
            if (ARCHIVE_ERRNOS.has(code))
                throw new errors_1.InvalidArchiveError(`opaque marker in a directory that cannot be opened (${code})`, name, { cause: e });
            throw e;
        }
        let children;
        try {
            children = await fs.promises.readdir(`/proc/self/fd/${fd}`);
        }
        finally {
            await fsClose(fd);
        }
        for (const c of children) {
            const p = (0, entry_path_1.joinPath)(dir, c);
            if (!this.written.has(p)) {
                this.forget(p);
                await this.push({ op: 'remove', path: p }, name);
            }
            else if (this.knownDirs.has(p)) {
                await this.opaque(p, name);
            }
        }
    }
    async stashPlnk(h, body, p) {
        if (this.plnkDir === null) {
            this.plnkDir = `.graphdriver-plnk-${process.pid}-${Date.now().toString(36)}`;
            await this.push({ op: 'create', path: this.plnkDir, type: 'dir', mode: 0o700 }, h.name);
        }
        const stashName = (0, entry_path_1.baseOf)(p);
        this.plnkNames.add(stashName);
        const parts = [];
        for await (const c of body())
            parts.push(Buffer.from(c));
        await this.push({
            op: 'create',
            path: (0, entry_path_1.joinPath)(this.plnkDir, stashName),
            type: 'file',
            mode: h.mode,
            ...this.owner(h),
            mtimeSec: h.mtimeSec,
            mtimeNsec: h.mtimeNsec,
            data: Buffer.concat(parts),
        }, h.name);
    }
    /** Finishes: pending entries, stash removal, directory times, root metadata. */
    async finish() {
        if (this.plnkDir !== null)
            await this.push({ op: 'remove', path: this.plnkDir }, this.plnkDir);
        await this.drain();
        for (let i = 0; i < this.dirTimes.length; i += 4096) {
            // Only directories that still exist as written (a later entry may have replaced or removed them).
            const chunk = this.dirTimes.slice(i, i + 4096).filter((d) => this.written.has(d.path) && this.knownDirs.has(d.path));
            if (chunk.length > 0)
                await this.b.setTimes(this.rootFd, chunk);
        }
        if (this.rootMeta) {
            const h = this.rootMeta;
            const fd = await fsOpen(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
            await this.b.finishFile(fd, {
                mode: h.mode,
                ...this.finishOwner(h),
                mtimeSec: h.mtimeSec,
                mtimeNsec: h.mtimeNsec,
                xattrs: { ...(this.xattrs(h, '') ?? {}), ...(this.rootOpaque ? { [whiteout_1.OVERLAY_OPAQUE_XATTR]: Buffer.from('y') } : {}) },
            });
        }
        else if (this.rootOpaque) {
            await this.b.lsetxattr(this.root, whiteout_1.OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
        }
    }
}
/**
 * Writes a file body sequentially through an fd, skipping whole 4 KiB blocks of zeros (file-offset aligned) so
 * sparse files stay sparse. Chunks arrive at arbitrary offsets, so an unaligned tail is carried to the next one.
 */
class SparseWriter {
    fd;
    pos = 0;
    carry = null;
    constructor(fd) {
        this.fd = fd;
    }
    async write(chunk) {
        let buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
        this.carry = null;
        const usable = buf.length - (buf.length % 4096);
        if (usable < buf.length) {
            this.carry = Buffer.from(buf.subarray(usable));
            buf = buf.subarray(0, usable);
        }
        await this.flushBlocks(buf);
    }
    async end() {
        if (this.carry) {
            await writeAll(this.fd, this.carry, this.pos);
            this.pos += this.carry.length;
            this.carry = null;
        }
    }
    /** `buf` starts at this.pos, which is always 4 KiB aligned here, and holds whole blocks. */
    async flushBlocks(buf) {
        let start = 0;
        for (let i = 0; i < buf.length; i += 4096) {
            if (buf.subarray(i, i + 4096).equals(ZERO_BLOCK)) {
                if (i > start)
                    await writeAll(this.fd, buf.subarray(start, i), this.pos + start);
                start = i + 4096;
            }
        }
        if (start < buf.length)
            await writeAll(this.fd, buf.subarray(start), this.pos + start);
        this.pos += buf.length;
    }
}
async function writeAll(fd, buf, pos) {
    let off = 0;
    while (off < buf.length) {
        const { bytesWritten } = await fsWrite(fd, buf, off, buf.length - off, pos + off);
        off += bytesWritten;
    }
}
/**
 * Applies a layer archive onto `root` and returns the bytes applied and the diffID. Input may be uncompressed,
 * gzip or zstd (detected by magic bytes). Hostile or malformed archives throw {@link InvalidArchiveError} and
 * leave a partial apply inside `root` (callers discard the layer).
 */
async function applyLayer(root, input, opts = {}) {
    const warn = opts.onWarning ?? (() => undefined);
    const hash = (0, node_crypto_1.createHash)('sha256');
    const source = opts.decompress === false ? input : (0, decompress_1.decompressStream)(input, opts);
    const rootFd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    const applier = new LayerApplier(root, rootFd, opts, warn);
    let entries = 0;
    try {
        for await (const e of (0, tar_reader_1.readTar)(source, { ...opts, onBytes: (c) => hash.update(c) })) {
            entries++;
            await applier.entry(e.header, () => e.body());
        }
        await applier.finish();
    }
    finally {
        await fsClose(rootFd).catch(() => undefined);
    }
    return { size: applier.size, diffId: `sha256:${hash.digest('hex')}`, entries };
}
//# sourceMappingURL=apply.js.map