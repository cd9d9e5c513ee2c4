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
exports.capabilityForTar = capabilityForTar;
exports.exportChanges = exportChanges;
exports.exportUpper = exportUpper;
/**
 * Layer diffs as tar streams, written the way Docker writes them:
 *
 * - {@link exportChanges}: a change list over a layer root (moby pkg/archive ExportChanges), for drivers that
 *   diff two trees;
 * - {@link exportUpper}: a layer's own diff directory (moby TarWithOptions with the overlay whiteout converter
 *   for overlay2, or the aufs exclusions), for drivers that keep one.
 *
 * Entries are PAX/USTAR (tar-writer), mtimes truncated to whole seconds, no user/group names, directories with a
 * trailing '/', `security.capability` the only xattr carried, hardlinks collapsed (the first path of an inode is
 * the file, later ones TypeLink to it). File content is read through native bounded opens (O_NOFOLLOW, resolved
 * inside the root) and checked to be a regular file, so a path swapped for a symlink or a device between the
 * scan and the read can never make us read outside the layer. Streams are pulled (backpressure) and hold at most
 * a few MiB.
 * @module
 */
const fs = __importStar(require("node:fs"));
const node_stream_1 = require("node:stream");
const node_util_1 = require("node:util");
const bindings_1 = require("../native/bindings");
const constants_1 = require("../native/constants");
const change_1 = require("./change");
const changes_1 = require("./changes");
const tar_writer_1 = require("./tar-writer");
const whiteout_1 = require("./whiteout");
const fsOpen = (0, node_util_1.promisify)(fs.open);
const fsClose = (0, node_util_1.promisify)(fs.close);
const fsFstat = (0, node_util_1.promisify)(fs.fstat);
const fsRead = (0, node_util_1.promisify)(fs.read);
/** Files up to this size are read whole, several at a time, ahead of where the stream is. */
const SMALL_FILE = 1 << 20;
/** Read-ahead limits: files and bytes. */
const AHEAD_FILES = 32;
const AHEAD_BYTES = 16 << 20;
/** Chunk size for large files, and the size at which small pieces are flushed as one buffer. */
const CHUNK = 1 << 20;
const FLUSH_AT = 256 << 10;
/** Changes stat'ed per lstatMany call. */
const STAT_BATCH = 1024;
/** errnos meaning a path changed between the scan and the read (the container is still running). */
const VANISHED = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'ENXIO', 'EXDEV']);
/** VFS_CAP_REVISION_3 (namespaced file capabilities) are written as revision 2, as Docker does. */
function capabilityForTar(v) {
    const VERSION_OFFSET = 3;
    const CAPS_V2_SIZE = 20;
    if (v.length > VERSION_OFFSET && v[VERSION_OFFSET] === 3) {
        const c = Buffer.from(v.subarray(0, Math.min(CAPS_V2_SIZE, v.length)));
        c[VERSION_OFFSET] = 2;
        return c;
    }
    return v;
}
function tarType(mode) {
    switch (mode & constants_1.FileType.S_IFMT) {
        case constants_1.FileType.S_IFREG:
            return 'file';
        case constants_1.FileType.S_IFDIR:
            return 'dir';
        case constants_1.FileType.S_IFLNK:
            return 'symlink';
        case constants_1.FileType.S_IFCHR:
            return 'char';
        case constants_1.FileType.S_IFBLK:
            return 'block';
        case constants_1.FileType.S_IFIFO:
            return 'fifo';
        default:
            return null; // sockets: Go's tar.FileInfoHeader refuses them and Docker skips them
    }
}
/** Turns scan entries into tar entries, keeping the hardlink map across the whole archive. */
class Planner {
    convertOverlay;
    opaqueXattr;
    warn;
    /** inode → tar name of its first path. Keyed by inode alone, like Docker's SeenFiles (one filesystem). */
    seen = new Map();
    constructor(convertOverlay, opaqueXattr, warn) {
        this.convertOverlay = convertOverlay;
        this.opaqueXattr = opaqueXattr;
        this.warn = warn;
    }
    /** `name` is the tar name (relative, no trailing slash). Returns nothing for entries Docker skips. */
    plan(name, st, out) {
        const type = tarType(st.mode);
        if (type === null) {
            this.warn({ path: `/${name}`, message: 'socket skipped (tar cannot hold sockets)' });
            return;
        }
        const h = {
            name,
            type,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            size: type === 'file' ? st.size : 0,
            mtimeSec: st.mtimeSec,
        };
        const cap = st.xattrs?.[changes_1.CAPABILITY_XATTR];
        if (cap !== undefined)
            h.xattrs = { [changes_1.CAPABILITY_XATTR]: capabilityForTar(cap) };
        if (type === 'symlink')
            h.linkname = st.linkname ?? '';
        if (type === 'char' || type === 'block') {
            h.devMajor = (0, constants_1.major)(st.rdev);
            h.devMinor = (0, constants_1.minor)(st.rdev);
        }
        if (this.convertOverlay && (0, changes_1.isOverlayWhiteout)(st)) {
            // overlayWhiteoutConverter.ConvertWrite: the char 0/0 device becomes an empty `.wh.<name>` file, 0600,
            // keeping owner and mtime. Never a hardlink (overlay shares one whiteout inode between many names).
            const slash = name.lastIndexOf('/');
            h.name = `${name.slice(0, slash + 1)}${whiteout_1.WHITEOUT_PREFIX}${name.slice(slash + 1)}`;
            h.type = 'file';
            h.mode = 0o600;
            h.size = 0;
            delete h.devMajor;
            delete h.devMinor;
            out.push({ headers: (0, tar_writer_1.encodeHeader)(h) });
            return;
        }
        if (type !== 'dir' && st.nlink > 1) {
            const first = this.seen.get(st.ino);
            if (first !== undefined) {
                h.type = 'link';
                h.linkname = first;
                h.size = 0;
                out.push({ headers: (0, tar_writer_1.encodeHeader)(h) });
                return;
            }
            this.seen.set(st.ino, name);
        }
        const planned = { headers: (0, tar_writer_1.encodeHeader)(h) };
        if (type === 'file' && st.size > 0)
            planned.body = { path: `/${name}`, size: st.size };
        out.push(planned);
        if (this.convertOverlay && type === 'dir' && (0, changes_1.isOpaqueValue)(st.xattrs?.[this.opaqueXattr])) {
            // The opaque marker follows its directory: an empty file with the directory's permission bits and owner,
            // and a zero mtime (Go writes a zero time.Time as the epoch).
            out.push({
                headers: (0, tar_writer_1.encodeHeader)({ name: `${name}/${whiteout_1.WHITEOUT_OPAQUE}`, type: 'file', mode: st.mode & 0o777, uid: st.uid, gid: st.gid, size: 0, mtimeSec: 0 }),
            });
        }
    }
}
/** Reads file content through bounded opens. */
class ContentReader {
    b;
    root;
    warn;
    constructor(b, root, warn) {
        this.b = b;
        this.root = root;
        this.warn = warn;
    }
    /** Opens a regular file without following symlinks anywhere outside the root; null when it went away. */
    async open(p) {
        let fd;
        try {
            fd = await this.b.openBounded(this.root, p.slice(1), {
                // O_NONBLOCK: a fifo swapped in must not block a pool thread; O_NOCTTY: a tty must not become ours.
                flags: constants_1.OpenFlags.O_RDONLY | constants_1.OpenFlags.O_NOFOLLOW | constants_1.OpenFlags.O_NONBLOCK | constants_1.OpenFlags.O_NOCTTY,
            });
        }
        catch (e) {
            const code = e.code;
            if (typeof code === 'string' && VANISHED.has(code)) {
                this.warn({ path: p, message: `file changed while the diff was written (${code}): content written as zeros` });
                return null;
            }
            throw e;
        }
        try {
            const st = await fsFstat(fd);
            if (!st.isFile()) {
                this.warn({ path: p, message: 'no longer a regular file: content written as zeros' });
                await fsClose(fd);
                return null;
            }
        }
        catch (e) {
            await fsClose(fd).catch(() => undefined);
            throw e;
        }
        return fd;
    }
    short(p, got, size) {
        this.warn({ path: p, message: `file shrank while the diff was written (${got} of ${size} bytes): padded with zeros` });
    }
    /** The first `size` bytes of the file, zero-padded if it got shorter. */
    async readSmall(p, size) {
        const buf = Buffer.alloc(size);
        const fd = await this.open(p);
        if (fd === null)
            return buf;
        try {
            let off = 0;
            while (off < size) {
                const { bytesRead } = await fsRead(fd, buf, off, size - off, off);
                if (bytesRead === 0)
                    break;
                off += bytesRead;
            }
            if (off < size)
                this.short(p, off, size);
        }
        finally {
            await fsClose(fd);
        }
        return buf;
    }
    /**
     * Exactly `size` bytes of the file in chunks: truncated if it grew, zero-padded if it shrank. The next chunk
     * is read while the consumer handles the current one (two chunks in memory at most).
     */
    async *readLarge(p, size) {
        const fd = await this.open(p);
        let off = 0;
        const readAt = async (pos) => {
            const want = Math.min(CHUNK, size - pos);
            const buf = Buffer.allocUnsafe(want);
            const { bytesRead } = await fsRead(fd, buf, 0, want, pos);
            return bytesRead === want ? buf : buf.subarray(0, bytesRead);
        };
        let next = null;
        try {
            if (fd !== null) {
                next = readAt(0);
                while (off < size) {
                    const chunk = await next;
                    next = null;
                    if (chunk.length === 0) {
                        this.short(p, off, size);
                        break;
                    }
                    off += chunk.length;
                    if (off < size)
                        next = readAt(off);
                    yield chunk;
                }
            }
        }
        finally {
            if (next !== null)
                await next.catch(() => undefined);
            if (fd !== null)
                await fsClose(fd);
        }
        while (off < size) {
            const n = Math.min(CHUNK, size - off);
            off += n;
            yield Buffer.alloc(n);
        }
    }
}
/** Small pieces are gathered and handed out as one buffer. */
class Gather {
    parts = [];
    bytes = 0;
    push(b) {
        if (b.length === 0)
            return;
        this.parts.push(b);
        this.bytes += b.length;
    }
    take() {
        const b = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.bytes);
        this.parts = [];
        this.bytes = 0;
        return b;
    }
}
/** Writes planned entries: headers, content (small files read ahead, large ones streamed), padding. */
async function* emit(plans, reader, out) {
    const ahead = new Map();
    let next = 0;
    let aheadBytes = 0;
    try {
        for (let i = 0; i < plans.length; i++) {
            if (next < i)
                next = i;
            while (next < plans.length && next < i + AHEAD_FILES && aheadBytes < AHEAD_BYTES) {
                const body = plans[next].body;
                if (body !== undefined && body.size <= SMALL_FILE) {
                    const pr = reader.readSmall(body.path, body.size);
                    pr.catch(() => undefined); // observed when awaited; keeps an abandoned read from being "unhandled"
                    ahead.set(next, pr);
                    aheadBytes += body.size;
                }
                next++;
            }
            const p = plans[i];
            out.push(p.headers);
            if (p.body !== undefined) {
                const pr = ahead.get(i);
                if (pr !== undefined) {
                    ahead.delete(i);
                    aheadBytes -= p.body.size;
                    out.push(await pr);
                }
                else {
                    for await (const chunk of reader.readLarge(p.body.path, p.body.size)) {
                        if (out.bytes > 0)
                            yield out.take();
                        yield chunk;
                    }
                }
                out.push(Buffer.alloc((0, tar_writer_1.paddingFor)(p.body.size)));
            }
            if (out.bytes >= FLUSH_AT)
                yield out.take();
        }
    }
    finally {
        // A consumer that stops early leaves reads in flight: let them finish (they close their fds).
        await Promise.allSettled(ahead.values());
    }
}
function whiteoutHeader(path, mtimeSec) {
    const slash = path.lastIndexOf('/');
    const name = `${path.slice(1, slash + 1)}${whiteout_1.WHITEOUT_PREFIX}${path.slice(slash + 1)}`;
    // As Docker: a USTAR regular file, mode 0, root-owned, empty.
    return (0, tar_writer_1.encodeHeader)({ name, type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtimeSec });
}
function opaqueName(opts) {
    return opts.userxattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque';
}
/**
 * A tar stream of `changes` over the tree at `root` (Docker's ExportChanges): changes sorted by path; Delete
 * becomes an empty `.wh.<name>` file; Add/Modify write the entry as it is now (one batched lstatMany per 1024
 * changes), paths that disappeared meanwhile are skipped with a warning.
 */
function exportChanges(root, changes, opts = {}) {
    const b = opts.bindings ?? (0, bindings_1.loadBindings)();
    const warn = opts.onWarning ?? (() => undefined);
    const overlay = opts.format === 'overlay';
    const opaque = opaqueName(opts);
    const xattrs = overlay ? [changes_1.CAPABILITY_XATTR, opaque] : [changes_1.CAPABILITY_XATTR];
    async function* generate() {
        const sorted = (0, change_1.sortChanges)(changes.filter((c) => c.path !== '/' && c.path !== '').map((c) => ({ ...c })));
        const whiteoutMtime = opts.whiteoutMtime ?? Math.round(Date.now() / 1000);
        const planner = new Planner(overlay, opaque, warn);
        const reader = new ContentReader(b, root, warn);
        const out = new Gather();
        const rootFd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
        try {
            for (let i = 0; i < sorted.length; i += STAT_BATCH) {
                const batch = sorted.slice(i, i + STAT_BATCH);
                const wanted = batch.filter((c) => c.kind !== change_1.ChangeKind.Delete);
                const stats = wanted.length === 0 ? [] : await b.lstatMany(rootFd, wanted.map((c) => c.path.slice(1)), { xattrs });
                const plans = [];
                let k = 0;
                for (const c of batch) {
                    if (c.kind === change_1.ChangeKind.Delete) {
                        plans.push({ headers: whiteoutHeader(c.path, whiteoutMtime) });
                        continue;
                    }
                    const st = stats[k++] ?? null;
                    if (st === null) {
                        warn({ path: c.path, message: 'changed path no longer exists: skipped' });
                        continue;
                    }
                    planner.plan(c.path.slice(1), st, plans);
                }
                yield* emit(plans, reader, out);
            }
        }
        finally {
            await fsClose(rootFd);
        }
        out.push(tar_writer_1.END_OF_ARCHIVE);
        yield out.take();
    }
    return node_stream_1.Readable.from(generate(), { objectMode: false });
}
/**
 * A tar stream of a layer's own diff directory (Docker's overlay2 / aufs Diff): every entry below `upperDir`
 * (not the directory itself) in walk order (each directory's entries by name, depth first, as Go's
 * filepath.Walk), from one scanTree.
 * - 'overlay': char 0/0 whiteouts become `.wh.<name>` files, opaque directories are followed by a
 *   `.wh..wh..opq` entry (moby's overlayWhiteoutConverter);
 * - 'aufs': written as stored, minus the aufs metadata at the root (`.wh..wh.*` and what is below it) except
 *   `.wh..wh..opq`.
 */
function exportUpper(upperDir, format, opts = {}) {
    const b = opts.bindings ?? (0, bindings_1.loadBindings)();
    const warn = opts.onWarning ?? (() => undefined);
    const overlay = format === 'overlay';
    const opaque = opaqueName(opts);
    async function* generate() {
        const scan = await b.scanTree(upperDir, { xattrs: overlay ? [changes_1.CAPABILITY_XATTR, opaque] : [changes_1.CAPABILITY_XATTR], sort: false });
        const entries = scan.filter((e) => {
            if (e.path === '/')
                return false;
            if (overlay)
                return true;
            const slash = e.path.indexOf('/', 1);
            const top = slash < 0 ? e.path.slice(1) : e.path.slice(1, slash);
            return !top.startsWith(whiteout_1.WHITEOUT_META_PREFIX) || e.path === `/${whiteout_1.WHITEOUT_OPAQUE}`;
        });
        entries.sort((x, y) => (0, change_1.compareWalkOrder)(x.path, y.path));
        const planner = new Planner(overlay, opaque, warn);
        const reader = new ContentReader(b, upperDir, warn);
        const out = new Gather();
        for (let i = 0; i < entries.length; i += STAT_BATCH) {
            const plans = [];
            for (const e of entries.slice(i, i + STAT_BATCH))
                planner.plan(e.path.slice(1), e, plans);
            yield* emit(plans, reader, out);
        }
        out.push(tar_writer_1.END_OF_ARCHIVE);
        yield out.take();
    }
    return node_stream_1.Readable.from(generate(), { objectMode: false });
}
//# sourceMappingURL=diff.js.map