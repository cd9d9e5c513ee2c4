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
exports.NativeDiffUnsupportedError = exports.CAPABILITY_XATTR = void 0;
exports.isDir = isDir;
exports.isOverlayWhiteout = isOverlayWhiteout;
exports.isOpaqueValue = isOpaqueValue;
exports.parentPath = parentPath;
exports.sameFsTime = sameFsTime;
exports.statDifferent = statDifferent;
exports.ambiguousTimes = ambiguousTimes;
exports.compareTrees = compareTrees;
exports.changesDirs = changesDirs;
exports.changesUpper = changesUpper;
exports.diffSize = diffSize;
/**
 * Computing a layer's change list, the two ways Docker does it:
 *
 * - {@link changesDirs}: the naive algorithm over two complete trees (moby pkg/archive ChangesDirs), used by every
 *   driver without a diff directory of its own (vfs, btrfs, devicemapper) and by overlay2 in Docker since 18.06.
 * - {@link changesUpper}: the native algorithm over a layer's own diff/upper directory (moby pkg/archive
 *   `changes()` with the overlay and aufs whiteout rules), which reads only that directory plus point lookups
 *   in the lower layers.
 *
 * Both read their trees with one native scanTree call per tree, never a syscall per file from JavaScript.
 * @module
 */
const fs = __importStar(require("node:fs"));
const node_util_1 = require("node:util");
const errors_1 = require("../errors");
const bindings_1 = require("../native/bindings");
const constants_1 = require("../native/constants");
const change_1 = require("./change");
const whiteout_1 = require("./whiteout");
const fsOpen = (0, node_util_1.promisify)(fs.open);
const fsClose = (0, node_util_1.promisify)(fs.close);
const fsFstat = (0, node_util_1.promisify)(fs.fstat);
const fsRead = (0, node_util_1.promisify)(fs.read);
/** The only xattr Docker compares (and carries in diffs). */
exports.CAPABILITY_XATTR = 'security.capability';
/** Thrown when an upper directory uses overlay features the native algorithm cannot read (redirects, metacopy). */
class NativeDiffUnsupportedError extends errors_1.GraphdriverError {
    constructor(message) {
        super('ERR_NATIVE_DIFF_UNSUPPORTED', message);
    }
}
exports.NativeDiffUnsupportedError = NativeDiffUnsupportedError;
// ---- small helpers on scan entries and '/'-rooted paths ----
/** A directory (by its real file type, S_IFDIR). */
function isDir(e) {
    return (e.mode & constants_1.FileType.S_IFMT) === constants_1.FileType.S_IFDIR;
}
/** An overlay whiteout: a character device with device number 0/0. */
function isOverlayWhiteout(e) {
    return (e.mode & constants_1.FileType.S_IFMT) === constants_1.FileType.S_IFCHR && e.rdev === 0;
}
/** The xattr value is exactly "y" (how overlayfs marks opaque directories). */
function isOpaqueValue(v) {
    return v !== undefined && v.length === 1 && v[0] === 0x79;
}
/** Parent of a '/'-rooted path ('/' for top-level entries). */
function parentPath(p) {
    const i = p.lastIndexOf('/');
    return i <= 0 ? '/' : p.slice(0, i);
}
function baseName(p) {
    return p.slice(p.lastIndexOf('/') + 1);
}
function joinChild(dir, name) {
    return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
/** First component of a '/'-rooted path. */
function topComponent(p) {
    const i = p.indexOf('/', 1);
    return i < 0 ? p.slice(1) : p.slice(1, i);
}
/**
 * Docker's sameFsTimeSpec: equal times, or the same second with either nanosecond part 0 (tar and older
 * filesystems keep whole seconds, so a file that went through a tar compares equal to its source).
 */
function sameFsTime(aSec, aNsec, bSec, bNsec) {
    return aSec === bSec && (aNsec === bNsec || aNsec === 0 || bNsec === 0);
}
/**
 * Docker's statDifferent: type and permission bits, owner, device number; for non-directories also size and
 * mtime. Directory size and mtime change whenever an entry is added or removed, so they are not a change of the
 * directory itself (moby #9874). Note: moby tests `mode & S_IFDIR`, which also matches block devices and
 * sockets; we test the real file type, so a block device whose mtime changed is reported.
 */
function statDifferent(o, n) {
    if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev)
        return true;
    if (isDir(o))
        return false;
    return o.size !== n.size || !sameFsTime(o.mtimeSec, o.mtimeNsec, n.mtimeSec, n.mtimeNsec);
}
/** Times that {@link sameFsTime} calls equal only because one side has no nanoseconds. */
function ambiguousTimes(o, n) {
    return o.mtimeSec === n.mtimeSec && o.mtimeNsec !== n.mtimeNsec && (o.mtimeNsec === 0 || n.mtimeNsec === 0);
}
function isRegular(e) {
    return (e.mode & constants_1.FileType.S_IFMT) === constants_1.FileType.S_IFREG;
}
function isSymlink(e) {
    return (e.mode & constants_1.FileType.S_IFMT) === constants_1.FileType.S_IFLNK;
}
/** Compares one xattr of two entries; absent and empty are the same (as Go's bytes.Equal(nil, []byte{})). */
function sameXattr(a, b, name) {
    const x = a.xattrs?.[name];
    const y = b.xattrs?.[name];
    if (x === undefined || x.length === 0)
        return y === undefined || y.length === 0;
    return y !== undefined && x.equals(y);
}
// ---- naive changes over two trees ----
/**
 * The changes that turn the tree `oldEntries` into `newEntries` (both from scanTree of a layer root), by
 * Docker's rules:
 * - a path only in the new tree is Add (so a new directory reports its whole subtree as Add);
 * - a path in both is Modify when {@link statDifferent} or its security.capability differs; a file replaced by
 *   a directory (or the reverse) is therefore Modify, and the new directory's entries are Add while the old
 *   directory's entries are not reported;
 * - a path only in the old tree is Delete when its parent is still a directory in the new tree (a deleted
 *   directory is one Delete);
 * - a directory with any change below it gets a Modify of its own, unless it is itself added or modified.
 * The result is sorted by path.
 */
function compareTrees(newEntries, oldEntries, opts = {}) {
    const oldByPath = new Map();
    for (const e of oldEntries)
        oldByPath.set(e.path, e);
    const newByPath = new Map();
    for (const e of newEntries)
        newByPath.set(e.path, e);
    const out = new Map();
    for (const n of newEntries) {
        if (n.path === '/')
            continue;
        const o = oldByPath.get(n.path);
        if (o === undefined)
            out.set(n.path, change_1.ChangeKind.Add);
        else if (statDifferent(o, n) || !sameXattr(o, n, exports.CAPABILITY_XATTR))
            out.set(n.path, change_1.ChangeKind.Modify);
        else if (opts.contentDiffers !== undefined && !isDir(n) && ambiguousTimes(o, n) && opts.contentDiffers(o, n))
            out.set(n.path, change_1.ChangeKind.Modify);
    }
    for (const o of oldEntries) {
        if (o.path === '/' || newByPath.has(o.path))
            continue;
        const parent = parentPath(o.path);
        // Docker only looks for deletions inside directories that are directories in the new tree (the root
        // always counts as one); below a replaced or deleted directory nothing more is reported.
        const np = parent === '/' ? undefined : newByPath.get(parent);
        if (parent === '/' || (np !== undefined && isDir(np)))
            out.set(o.path, change_1.ChangeKind.Delete);
    }
    addParentModifies(out);
    return toSortedList(out);
}
/** A directory holding changes is reported Modify (needed to restore its metadata when the diff is applied). */
function addParentModifies(out) {
    for (const p of [...out.keys()]) {
        for (let a = parentPath(p); a !== '/'; a = parentPath(a)) {
            if (out.has(a))
                break; // reported itself, or already handled with its own ancestors
            out.set(a, change_1.ChangeKind.Modify);
        }
    }
}
function toSortedList(m) {
    const list = [];
    for (const [path, kind] of m)
        list.push({ path, kind });
    return (0, change_1.sortChanges)(list);
}
/**
 * Changes of the tree at `newRoot` relative to `oldRoot` (Docker's ChangesDirs, see {@link compareTrees}); with
 * `oldRoot` null every entry is an Add. One scanTree per tree (security.capability read with it); file content
 * is only read for the ambiguous-mtime case of {@link ChangesDirsOptions.verifyContent}.
 */
async function changesDirs(newRoot, oldRoot, opts = {}) {
    const b = opts.bindings ?? (0, bindings_1.loadBindings)();
    const scan = { xattrs: [exports.CAPABILITY_XATTR] };
    const [newEntries, oldEntries] = await Promise.all([
        b.scanTree(newRoot, scan),
        oldRoot === null ? Promise.resolve([]) : b.scanTree(oldRoot, scan),
    ]);
    if (oldRoot === null || opts.verifyContent === false)
        return compareTrees(newEntries, oldEntries);
    // Regular files whose times are ambiguous get their content compared (rare: a tar-applied parent rewritten
    // within the same second); symlinks compare their targets, already in the scan.
    const oldByPath = new Map();
    for (const e of oldEntries)
        oldByPath.set(e.path, e);
    const suspects = [];
    for (const n of newEntries) {
        const o = oldByPath.get(n.path);
        if (o === undefined || !isRegular(n) || n.size === 0 || statDifferent(o, n) || !ambiguousTimes(o, n))
            continue;
        if (sameXattr(o, n, exports.CAPABILITY_XATTR))
            suspects.push(n.path);
    }
    const differing = suspects.length === 0 ? new Set() : await differingContents(b, newRoot, oldRoot, suspects);
    return compareTrees(newEntries, oldEntries, {
        contentDiffers: (o, n) => (isSymlink(n) ? o.linkname !== n.linkname : differing.has(n.path)),
    });
}
/** Files compared at once, and the chunk they are compared by. */
const COMPARE_PARALLEL = 8;
const COMPARE_CHUNK = 256 << 10;
/**
 * The paths (regular files of equal size in both trees) whose content differs. Files are opened bounded to
 * their root without following symlinks; anything that cannot be compared (gone, no longer a regular file)
 * counts as different.
 */
async function differingContents(b, newRoot, oldRoot, paths) {
    const out = new Set();
    const flags = constants_1.OpenFlags.O_RDONLY | constants_1.OpenFlags.O_NOFOLLOW | constants_1.OpenFlags.O_NONBLOCK | constants_1.OpenFlags.O_NOCTTY;
    const openFile = async (root, p) => {
        let fd;
        try {
            fd = await b.openBounded(root, rel(p), { flags });
        }
        catch {
            return null;
        }
        const st = await fsFstat(fd).catch(() => null);
        if (st === null || !st.isFile()) {
            await fsClose(fd).catch(() => undefined);
            return null;
        }
        return fd;
    };
    const same = async (p) => {
        const [x, y] = await Promise.all([openFile(newRoot, p), openFile(oldRoot, p)]);
        try {
            if (x === null || y === null)
                return false;
            const bx = Buffer.allocUnsafe(COMPARE_CHUNK);
            const by = Buffer.allocUnsafe(COMPARE_CHUNK);
            for (let pos = 0;; pos += COMPARE_CHUNK) {
                const [rx, ry] = await Promise.all([readFull(x, bx, pos), readFull(y, by, pos)]);
                if (rx !== ry || bx.compare(by, 0, ry, 0, rx) !== 0)
                    return false;
                if (rx < COMPARE_CHUNK)
                    return true;
            }
        }
        finally {
            await Promise.all([x, y].map((fd) => (fd === null ? undefined : fsClose(fd).catch(() => undefined))));
        }
    };
    let next = 0;
    const worker = async () => {
        while (next < paths.length) {
            const p = paths[next++];
            if (!(await same(p)))
                out.add(p);
        }
    };
    await Promise.all(Array.from({ length: Math.min(COMPARE_PARALLEL, paths.length) }, worker));
    return out;
}
/** Reads up to buf.length bytes at `pos` (fewer only at end of file). */
async function readFull(fd, buf, pos) {
    let off = 0;
    while (off < buf.length) {
        const { bytesRead } = await fsRead(fd, buf, off, buf.length - off, pos + off);
        if (bytesRead === 0)
            break;
        off += bytesRead;
    }
    return off;
}
/** Default of {@link UpperChangesOptions.prefetchLookups}. */
const PREFETCH_LOOKUPS = 20_000;
/** Paths are passed to lstatMany relative to each layer root. */
function rel(p) {
    return p === '/' ? '' : p.slice(1);
}
/**
 * Point lookups in a stack of lower layers, resolved the way overlayfs (and aufs) merge them: nearest layer
 * first; a whiteout hides the name in every layer below; a non-directory ends the merge of a path; an opaque
 * directory (overlay xattr, or aufs `.wh..wh..opq` inside it) hides the layers below it; a child is only
 * looked for in the layers where its parent is a merged directory. No layer is ever walked: every lookup is an
 * lstat, batched per layer and per depth into one native lstatMany call.
 */
class LowerView {
    b;
    dirs;
    fds;
    format;
    opaqueXattr;
    prefetch;
    found = new Map();
    constructor(b, dirs, fds, format, opaqueXattr, prefetch) {
        this.b = b;
        this.dirs = dirs;
        this.fds = fds;
        this.format = format;
        this.opaqueXattr = opaqueXattr;
        this.prefetch = prefetch;
    }
    static async open(b, dirs, format, opaqueXattr, prefetch) {
        const opened = await Promise.allSettled(dirs.map((d) => fsOpen(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)));
        const fds = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const failed = opened.find((r) => r.status === 'rejected');
        if (failed !== undefined) {
            await Promise.all(fds.map((fd) => fsClose(fd).catch(() => undefined)));
            throw failed.reason;
        }
        return new LowerView(b, dirs, fds, format, opaqueXattr, prefetch);
    }
    async close() {
        await Promise.all(this.fds.map((fd) => fsClose(fd).catch(() => undefined)));
    }
    get(p) {
        const r = this.found.get(p);
        if (r === undefined)
            throw new Error(`internal: lower lookup of ${JSON.stringify(p)} was not resolved`);
        return r;
    }
    /** What is asked of a layer about `p`: the path itself, and for aufs its whiteout and opaque marker. */
    probes(p) {
        if (p === '/')
            return [this.format === 'overlay' ? '' : whiteout_1.WHITEOUT_OPAQUE];
        if (this.format === 'overlay')
            return [rel(p)];
        return [rel(p), rel(joinChild(parentPath(p), whiteout_1.WHITEOUT_PREFIX + baseName(p))), rel(joinChild(p, whiteout_1.WHITEOUT_OPAQUE))];
    }
    /** One lstatMany per layer (concurrently), answers indexed by the query path. */
    async ask(queries) {
        const opts = this.format === 'overlay' ? { xattrs: [this.opaqueXattr] } : undefined;
        const answers = await Promise.all(queries.map((q, j) => (q.length === 0 ? Promise.resolve([]) : this.b.lstatMany(this.fds[j], q, opts))));
        return answers.map((a, j) => {
            const m = new Map();
            queries[j].forEach((q, i) => m.set(q, a[i] ?? null));
            return m;
        });
    }
    /**
     * Resolves `paths` ('/'-rooted) and all their ancestors. When the lookups are few (paths x layers within
     * {@link UpperChangesOptions.prefetchLookups}), every layer is asked about every path in one round trip and the merge is worked
     * out in memory; otherwise one round per depth level asks each layer only about paths whose parent it holds.
     */
    async resolve(paths) {
        const byDepth = [];
        const want = new Set();
        for (const p of paths) {
            for (let a = p; a !== '/' && !this.found.has(a) && !want.has(a); a = parentPath(a)) {
                want.add(a);
                const depth = a.split('/').length - 1;
                (byDepth[depth] ??= []).push(a);
            }
        }
        const needRoot = !this.found.has('/');
        if (want.size === 0 && !needRoot)
            return;
        const n = this.fds.length;
        let pre = null;
        if ((want.size + 1) * n <= this.prefetch) {
            const all = [...(needRoot ? this.probes('/') : []), ...[...want].flatMap((p) => this.probes(p))];
            pre = await this.ask(Array.from({ length: n }, () => all));
        }
        if (needRoot)
            this.resolveRoot(pre ?? (await this.ask(Array.from({ length: n }, () => this.probes('/')))));
        for (const level of byDepth) {
            if (level === undefined || level.length === 0)
                continue;
            let at = pre;
            if (at === null) {
                const queries = Array.from({ length: n }, () => []);
                for (const p of level)
                    for (const j of this.get(parentPath(p)).layers)
                        queries[j].push(...this.probes(p));
                at = await this.ask(queries);
            }
            for (const p of level)
                this.resolveOne(p, at);
        }
    }
    /** The root is merged from every layer down to the first one whose root is opaque. */
    resolveRoot(at) {
        const probe = this.probes('/')[0];
        const layers = [];
        for (let j = 0; j < at.length; j++) {
            layers.push(j);
            const st = at[j].get(probe) ?? null;
            const opaque = this.format === 'overlay' ? isOpaqueValue(st?.xattrs?.[this.opaqueXattr]) : st !== null;
            if (opaque)
                break;
        }
        this.found.set('/', { entry: null, layers });
    }
    /** Works out one path from the layers' answers; its parent is already resolved. */
    resolveOne(p, at) {
        const [self, whiteoutName, opaqueName] = this.probes(p);
        // undefined: not seen yet; null: whited out before any layer showed it.
        let entry;
        const layers = [];
        for (const j of this.get(parentPath(p)).layers) {
            const st = at[j].get(self) ?? null;
            const whiteout = this.format === 'aufs' ? (at[j].get(whiteoutName) ?? null) !== null : st !== null && isOverlayWhiteout(st);
            if (st !== null && !(this.format === 'overlay' && whiteout)) {
                if (entry === undefined)
                    entry = st;
                // A non-directory ends the path's merge (and below a directory, hides the deeper layers). `entry` is
                // not null here: a whiteout ends the loop.
                if (!isDir(st) || !isDir(entry))
                    break;
                layers.push(j);
                const opaque = this.format === 'overlay' ? isOpaqueValue(st.xattrs?.[this.opaqueXattr]) : (at[j].get(opaqueName) ?? null) !== null;
                if (opaque)
                    break;
                continue;
            }
            if (whiteout) {
                if (entry === undefined)
                    entry = null;
                break;
            }
        }
        this.found.set(p, { entry: entry ?? null, layers: entry !== null && entry !== undefined && isDir(entry) ? layers : [] });
    }
    /** Names in the directory `p` of each merged layer (one directory read per layer, bounded, no symlinks). */
    async listNames(p) {
        const names = new Set();
        for (const j of this.get(p).layers) {
            const fd = await this.b.openBounded(this.dirs[j], p === '/' ? '.' : rel(p), {
                flags: constants_1.OpenFlags.O_RDONLY | constants_1.OpenFlags.O_DIRECTORY,
                noSymlinks: true,
            });
            try {
                for (const name of await fs.promises.readdir(`/proc/self/fd/${fd}`))
                    names.add(name);
            }
            finally {
                await fsClose(fd);
            }
        }
        return names;
    }
}
/**
 * Changes of a layer from its own diff directory (`upperDir`, an overlay upper dir or an aufs branch) over its
 * lower layers (`lowerDirs`, diff directories of the parent layers, nearest first), like moby's native
 * `changes()` (OverlayChanges / aufs Changes):
 * - the upper directory is read with one scanTree; the lower layers only get lookups (see LowerView);
 * - overlay: a char 0/0 device is a Delete of its path; aufs: `.wh.X` is a Delete of X, and `.wh..wh.*` entries
 *   at the root (aufs metadata, with everything under them) are skipped;
 * - every other entry is Add, or Modify when the lower layers show the path, except a directory identical to
 *   the lower one in size, mode and mtime (copied up only because of its children), which is not reported;
 * - an Add or Delete whose parent directory was not reported gets a Modify of that parent (only the
 *   immediate parent, as moby does);
 * - opaque directories (overlay `trusted.overlay.opaque=y`, aufs `.wh..wh..opq`): moby's own OverlayChanges
 *   reported them as deleted, which was wrong (moby #37313; Docker 18.06+ and v23 compute overlay2 changes
 *   naively, on the mounted trees). Here an opaque directory is reported like any directory, and every entry
 *   of the lower directory it hides gets a Delete, which is what Docker's naive diff reports for it. Listing
 *   those takes one directory read of that directory per lower layer.
 * The result is sorted by path. Redirected or metacopy-only entries (overlay `redirect_dir`/`metacopy`) cannot
 * be read this way and raise {@link NativeDiffUnsupportedError}: use {@link changesDirs} then.
 */
async function changesUpper(upperDir, lowerDirs, format, opts = {}) {
    const b = opts.bindings ?? (0, bindings_1.loadBindings)();
    const prefix = opts.userxattr ? 'user.overlay.' : 'trusted.overlay.';
    const opaqueXattr = `${prefix}opaque`;
    const unsupported = [`${prefix}redirect`, `${prefix}metacopy`];
    // The upper scan and the opening of the lower layers do not depend on each other.
    const [scanned, opened] = await Promise.allSettled([
        b.scanTree(upperDir, format === 'overlay' ? { xattrs: [opaqueXattr, ...unsupported] } : {}),
        LowerView.open(b, lowerDirs, format, opaqueXattr, opts.prefetchLookups ?? PREFETCH_LOOKUPS),
    ]);
    if (scanned.status === 'rejected' || opened.status === 'rejected') {
        if (opened.status === 'fulfilled')
            await opened.value.close();
        throw scanned.status === 'rejected' ? scanned.reason : opened.reason;
    }
    const entries = scanned.value;
    const view = opened.value;
    try {
        return await upperChanges(entries, view, format, opaqueXattr, unsupported, upperDir);
    }
    finally {
        await view.close();
    }
}
/** The body of {@link changesUpper}, once the upper dir is scanned and the lower layers are open. */
async function upperChanges(entries, view, format, opaqueXattr, unsupported, upperDir) {
    const visible = new Map();
    const deletes = [];
    const opaqueDirs = [];
    const namesIn = new Map();
    const note = (dir, name) => {
        let s = namesIn.get(dir);
        if (s === undefined)
            namesIn.set(dir, (s = new Set()));
        s.add(name);
    };
    for (const e of entries) {
        if (e.path === '/') {
            if (format === 'overlay' && isOpaqueValue(e.xattrs?.[opaqueXattr]))
                opaqueDirs.push('/');
            continue;
        }
        const name = baseName(e.path);
        const dir = parentPath(e.path);
        if (format === 'aufs') {
            if (topComponent(e.path).startsWith(whiteout_1.WHITEOUT_META_PREFIX)) {
                // aufs metadata (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph and their contents) is not part of the layer.
                if (e.path === `/${whiteout_1.WHITEOUT_OPAQUE}`)
                    opaqueDirs.push('/');
                continue;
            }
            if (name === whiteout_1.WHITEOUT_OPAQUE) {
                opaqueDirs.push(dir);
                continue;
            }
            if (name.startsWith(whiteout_1.WHITEOUT_META_PREFIX))
                continue;
            if (name.startsWith(whiteout_1.WHITEOUT_PREFIX)) {
                const victim = name.slice(whiteout_1.WHITEOUT_PREFIX.length);
                if (victim !== '' && victim !== '.' && victim !== '..') {
                    deletes.push(joinChild(dir, victim));
                    note(dir, victim);
                }
                continue;
            }
        }
        else {
            for (const x of unsupported) {
                if (e.xattrs?.[x] !== undefined) {
                    throw new NativeDiffUnsupportedError(`${JSON.stringify(e.path)} in ${upperDir} has ${x}: native overlay changes cannot follow it`);
                }
            }
            if (isOverlayWhiteout(e)) {
                deletes.push(e.path);
                note(dir, name);
                continue;
            }
            if (isDir(e) && isOpaqueValue(e.xattrs?.[opaqueXattr]))
                opaqueDirs.push(e.path);
        }
        visible.set(e.path, e);
        note(dir, name);
    }
    await view.resolve(visible.keys());
    const out = new Map();
    const changedDirs = new Set();
    for (const [p, e] of visible) {
        const lower = view.get(p).entry;
        if (lower === null) {
            out.set(p, change_1.ChangeKind.Add);
        }
        else if (isDir(e) &&
            isDir(lower) &&
            e.size === lower.size &&
            e.mode === lower.mode &&
            sameFsTime(e.mtimeSec, e.mtimeNsec, lower.mtimeSec, lower.mtimeNsec)) {
            continue; // copied up only because something below it changed
        }
        else {
            out.set(p, change_1.ChangeKind.Modify);
        }
        if (isDir(e))
            changedDirs.add(p);
    }
    for (const d of deletes)
        if (!out.has(d))
            out.set(d, change_1.ChangeKind.Delete);
    for (const d of opaqueDirs) {
        const lower = view.get(d);
        if (lower.layers.length === 0)
            continue; // nothing below to hide (a new directory, or over a non-directory)
        const upperNames = namesIn.get(d) ?? new Set();
        const hidden = [];
        for (const name of await view.listNames(d)) {
            if (upperNames.has(name))
                continue;
            if (format === 'aufs' && name.startsWith(whiteout_1.WHITEOUT_PREFIX))
                continue;
            hidden.push(joinChild(d, name));
        }
        await view.resolve(hidden);
        for (const h of hidden)
            if (view.get(h).entry !== null && !out.has(h))
                out.set(h, change_1.ChangeKind.Delete);
    }
    for (const [p, kind] of [...out]) {
        if (kind === change_1.ChangeKind.Modify)
            continue;
        const parent = parentPath(p);
        if (parent === '/' || changedDirs.has(parent))
            continue;
        out.set(parent, change_1.ChangeKind.Modify);
        changedDirs.add(parent);
    }
    return toSortedList(out);
}
/**
 * Docker's ChangesSize: the sum of the sizes of added and modified non-directories under `root`, each hardlinked
 * inode counted once. Paths that no longer exist are skipped. Sizes come from `opts.entries` or from one
 * batched lstatMany of the changed paths.
 */
async function diffSize(changes, root, opts = {}) {
    const paths = changes.filter((c) => c.kind !== change_1.ChangeKind.Delete).map((c) => c.path);
    let stats;
    if (opts.entries !== undefined) {
        const byPath = new Map();
        for (const e of opts.entries)
            byPath.set(e.path, e);
        stats = paths.map((p) => byPath.get(p));
    }
    else {
        const b = opts.bindings ?? (0, bindings_1.loadBindings)();
        const fd = await fsOpen(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
        try {
            stats = paths.length === 0 ? [] : await b.lstatMany(fd, paths.map(rel));
        }
        finally {
            await fsClose(fd);
        }
    }
    let size = 0;
    const seen = new Set();
    for (const st of stats) {
        if (st === null || st === undefined || isDir(st))
            continue;
        if (st.nlink > 1) {
            if (seen.has(st.ino))
                continue;
            seen.add(st.ino);
        }
        size += st.size;
    }
    return size;
}
//# sourceMappingURL=changes.js.map