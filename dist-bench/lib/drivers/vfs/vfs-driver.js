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
exports.VfsDriver = exports.VfsProtoDriver = void 0;
/**
 * The vfs driver, as Docker's: every layer is a plain directory `<home>/dir/<id>` holding a full copy of its
 * parent. No mounts, no kernel features: it works anywhere, also without root (for content an unprivileged user
 * may create). Copies share extents (FICLONE) or go through copy_file_range where the filesystem allows. On xfs
 * mounted with pquota, layers may be limited in size (`size` storage option), as with Docker's vfs.
 * @module
 */
const node_crypto_1 = require("node:crypto");
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const errors_1 = require("../../errors");
const bindings_1 = require("../../native/bindings");
const errors_2 = require("../errors");
const keyed_lock_1 = require("../keyed-lock");
const layer_id_1 = require("../layer-id");
const naive_diff_driver_1 = require("../naive-diff-driver");
const ref_counter_1 = require("../ref-counter");
const storage_opts_1 = require("../storage-opts");
const parents_1 = require("./parents");
const quota_1 = require("./quota");
const remove_tree_1 = require("./remove-tree");
/** Storage options vfs understands, at init (`--storage-opt size=...`, the default for every layer) and per layer
 *  (`storageOpt.size`); both need project quotas (xfs mounted with pquota). */
const KNOWN_OPTIONS = ['size'];
/** Prefixes of the driver's own entries in `dir/`; layer ids never start with '.', so they cannot collide. */
const TMP_PREFIX = '.tmp-';
const REMOVING_PREFIX = '.removing-';
function suffix() {
    return (0, node_crypto_1.randomBytes)(6).toString('hex');
}
async function isDirectory(p) {
    try {
        return (await fs.lstat(p)).isDirectory();
    }
    catch (e) {
        if ((0, remove_tree_1.errCode)(e) === 'ENOENT' || (0, remove_tree_1.errCode)(e) === 'ENOTDIR')
            return false;
        throw e;
    }
}
async function pathExists(p) {
    try {
        await fs.lstat(p);
        return true;
    }
    catch (e) {
        if ((0, remove_tree_1.errCode)(e) === 'ENOENT' || (0, remove_tree_1.errCode)(e) === 'ENOTDIR')
            return false;
        throw e;
    }
}
const notMounted = () => Promise.resolve(false);
/**
 * The ProtoDriver half of vfs: layer directories, copies, reference counts and the parent records. The public
 * {@link VfsDriver} wraps it with the naive diff methods.
 */
class VfsProtoDriver {
    home;
    b;
    quota;
    quotaReason;
    defaultSize;
    name = 'vfs';
    /** `<home>/dir`: one directory per layer. */
    layersDir;
    locks = new keyed_lock_1.KeyedLock();
    /** Serialises the short parent/child bookkeeping steps (never held during a copy or a delete). */
    graph = new keyed_lock_1.KeyedLock();
    refs = new ref_counter_1.RefCounter();
    parents;
    closed = false;
    dirsReady = null;
    constructor(home, b, 
    /** Project quota control (xfs with pquota), null elsewhere. */
    quota, 
    /** Why there is no quota control. */
    quotaReason, 
    /** Default size limit of every layer (`size` init option), 0 = none. */
    defaultSize) {
        this.home = home;
        this.b = b;
        this.quota = quota;
        this.quotaReason = quotaReason;
        this.defaultSize = defaultSize;
        this.layersDir = path.join(home, 'dir');
        this.parents = new parents_1.ParentIndex(path.join(home, 'parents'));
    }
    /**
     * Opens (creating when needed) the driver home: mode 0700, leftovers of interrupted creates and removes
     * deleted, parent records loaded, project quotas set up where the home is on xfs with pquota (as Docker).
     * `options` are `--storage-opt` strings; vfs knows only `size` (default limit of every layer), which needs
     * those quotas.
     */
    static async open(home, options, bindings) {
        if (typeof home !== 'string' || home === '')
            throw new TypeError('vfs: home must be a non-empty path');
        const opts = (0, storage_opts_1.parseStorageOpts)('vfs', options, KNOWN_OPTIONS);
        const sizeOpt = opts.get('size');
        const defaultSize = sizeOpt === undefined ? 0 : (0, storage_opts_1.parseSize)(sizeOpt, 'vfs option size');
        const absHome = path.resolve(home);
        await fs.mkdir(absHome, { recursive: true, mode: 0o700 });
        await fs.chmod(absHome, 0o700);
        const layersDir = path.join(absHome, 'dir');
        const { quota, reason } = await quota_1.VfsQuota.open(absHome, layersDir, bindings);
        if (defaultSize > 0 && quota === null)
            throw VfsProtoDriver.quotaError(reason);
        const d = new VfsProtoDriver(absHome, bindings, quota, reason, defaultSize);
        await d.removeLeftovers();
        await d.parents.load((id) => isDirectory(d.dir(id)));
        return d;
    }
    static quotaError(reason) {
        return new errors_2.InvalidOptionError(`vfs: storage option "size" is not supported here: per-layer size limits need xfs project quotas (xfs mounted with pquota); ${reason}`);
    }
    /** Deletes temp copies and half-removed layers left by a crash. */
    async removeLeftovers() {
        let names;
        try {
            names = await fs.readdir(this.layersDir);
        }
        catch (e) {
            if ((0, remove_tree_1.errCode)(e) === 'ENOENT')
                return;
            throw e;
        }
        await Promise.all(names
            .filter((n) => n.startsWith(TMP_PREFIX) || n.startsWith(REMOVING_PREFIX))
            .map((n) => (0, remove_tree_1.removeTree)(path.join(this.layersDir, n))));
    }
    /** The directory of layer `id` (Docker's vfs `Dir`). */
    dir(id) {
        (0, layer_id_1.checkLayerId)(id);
        return path.join(this.layersDir, id);
    }
    /** The recorded parent of layer `id` (null for base layers). */
    parentOf(id) {
        (0, layer_id_1.checkLayerId)(id);
        return this.parents.parent(id);
    }
    checkOpen() {
        if (this.closed)
            throw new errors_1.GraphdriverError('ERR_DRIVER_CLOSED', `vfs driver at ${this.home} has been cleaned up`);
    }
    /** `dir/` is created with the first layer, so that a home without layers holds no state (see newDriver). */
    ensureDirs() {
        this.dirsReady ??= fs.mkdir(this.layersDir, { recursive: true, mode: 0o700 }).then(() => undefined, (e) => {
            this.dirsReady = null;
            throw e;
        });
        return this.dirsReady;
    }
    /** Validates per-layer storage options before anything is touched; resolves to the layer's size limit (0 = none). */
    layerSize(storageOpt) {
        let size = this.defaultSize;
        if (storageOpt === undefined || storageOpt === null)
            return size;
        if (typeof storageOpt !== 'object')
            throw new errors_2.InvalidOptionError('vfs: storageOpt must be an object');
        for (const [rawKey, value] of Object.entries(storageOpt)) {
            const key = rawKey.toLowerCase();
            if (key !== 'size') {
                throw new errors_2.InvalidOptionError(`vfs: storage option ${JSON.stringify(rawKey)} is not supported (known: ${KNOWN_OPTIONS.join(', ')})`);
            }
            if (typeof value !== 'string')
                throw new errors_2.InvalidOptionError('vfs: storage option "size" must be a string');
            size = (0, storage_opts_1.parseSize)(value, 'vfs storage option size');
        }
        if (size > 0 && this.quota === null)
            throw VfsProtoDriver.quotaError(this.quotaReason);
        return size;
    }
    create(id, parent, opts) {
        return this.createLayer(id, parent, opts);
    }
    /** vfs layers are all writable directories: the same as {@link create}. */
    createReadWrite(id, parent, opts) {
        return this.createLayer(id, parent, opts);
    }
    /**
     * Builds the layer under a temp name (an empty 0755 directory owned by root for a base layer, else a copy of
     * the parent) and renames it into place, so a failure or crash never leaves a half-made layer behind. With a
     * size limit the layer is built inside a staging directory that carries the project id, so that everything
     * copied inherits it (and counts against the limit), then moved out.
     */
    async createLayer(id, parentArg, opts) {
        (0, layer_id_1.checkLayerId)(id);
        const parent = (0, layer_id_1.checkParentId)(parentArg);
        const size = this.layerSize(opts?.storageOpt);
        this.checkOpen();
        await this.locks.run(id, async () => {
            this.checkOpen();
            const dest = this.dir(id);
            if (await pathExists(dest))
                throw new errors_2.LayerExistsError(id);
            if (parent !== null) {
                // Registered before the copy: from here on the parent cannot be removed under us.
                await this.graph.run('', async () => {
                    if (!(await isDirectory(this.dir(parent))))
                        throw new errors_2.LayerNotFoundError(parent);
                    this.parents.add(id, parent);
                });
            }
            await this.ensureDirs();
            const staging = path.join(this.layersDir, `${TMP_PREFIX}${id}-${suffix()}`);
            const tmp = size > 0 ? path.join(staging, 'root') : staging;
            try {
                if (size > 0 && this.quota !== null) {
                    await fs.mkdir(staging, { mode: 0o700 });
                    await this.quota.limit(staging, size);
                }
                if (parent === null) {
                    await fs.mkdir(tmp, { mode: 0o755 });
                    // mkdir's mode is filtered by the umask, and a set-group-id home would hand down its group.
                    await fs.chmod(tmp, 0o755);
                    if (process.geteuid?.() === 0)
                        await fs.chown(tmp, 0, 0);
                    await this.parents.unpersist(id);
                }
                else {
                    await this.b.copyTree(this.dir(parent), tmp, { reflink: true });
                    await this.parents.persist(id, parent);
                }
                await fs.rename(tmp, dest);
            }
            catch (e) {
                await (0, remove_tree_1.removeTree)(staging).catch(() => undefined);
                if (parent !== null) {
                    await this.graph.run('', async () => this.parents.drop(id));
                    await this.parents.unpersist(id).catch(() => undefined);
                }
                throw e;
            }
            // The layer is in place; an empty staging directory that cannot go now is removed at the next init.
            if (tmp !== staging)
                await fs.rmdir(staging).catch(() => undefined);
        });
    }
    /** Removes the layer: refused while it is got or while layers created from it exist. */
    async remove(id) {
        (0, layer_id_1.checkLayerId)(id);
        this.checkOpen();
        await this.locks.run(id, async () => {
            this.checkOpen();
            const n = this.refs.count(id);
            if (n > 0)
                throw new errors_2.LayerInUseError(id, `it is mounted (${n} get${n === 1 ? '' : 's'} without put)`);
            const doomed = path.join(this.layersDir, `${REMOVING_PREFIX}${id}-${suffix()}`);
            await this.graph.run('', async () => {
                const kids = this.parents.children(id);
                if (kids.length > 0) {
                    const shown = kids.slice(0, 3).map((k) => JSON.stringify(k)).join(', ');
                    throw new errors_2.LayerInUseError(id, `it is the parent of ${kids.length} layer${kids.length === 1 ? '' : 's'} (${shown}${kids.length > 3 ? ', ...' : ''})`);
                }
                try {
                    await fs.rename(this.dir(id), doomed);
                }
                catch (e) {
                    if ((0, remove_tree_1.errCode)(e) === 'ENOENT')
                        throw new errors_2.LayerNotFoundError(id);
                    throw e;
                }
                this.parents.drop(id);
            });
            this.refs.reset(id);
            await this.parents.unpersist(id);
            await (0, remove_tree_1.removeTree)(doomed);
        });
    }
    /** Returns the layer directory; reference counted so that remove can refuse a layer in use. */
    async get(id, _opts) {
        (0, layer_id_1.checkLayerId)(id);
        this.checkOpen();
        return this.locks.run(id, async () => {
            this.checkOpen();
            const dir = this.dir(id);
            if (!(await isDirectory(dir)))
                throw new errors_2.LayerNotFoundError(id);
            await this.refs.increment(id, notMounted);
            return dir;
        });
    }
    /** Releases one {@link get}; NotMountedError without one. */
    async put(id) {
        (0, layer_id_1.checkLayerId)(id);
        this.checkOpen();
        await this.locks.run(id, async () => {
            await this.refs.decrement(id, notMounted);
        });
    }
    async exists(id) {
        (0, layer_id_1.checkLayerId)(id);
        return isDirectory(this.dir(id));
    }
    /** Docker's vfs reports no status. */
    async status() {
        return [];
    }
    /** Whether per-layer size limits work here, and why not. */
    quotaSupport() {
        return { supported: this.quota !== null, reason: this.quotaReason };
    }
    /** Size limit and usage of layer `id` in bytes, null when it has no limit. */
    async quotaUsage(id) {
        if (this.quota === null)
            return null;
        if (!(await isDirectory(this.dir(id))))
            throw new errors_2.LayerNotFoundError(id);
        return this.quota.usage(this.dir(id));
    }
    /** vfs layers have no metadata (null); unknown ids are LayerNotFoundError. */
    async getMetadata(id) {
        (0, layer_id_1.checkLayerId)(id);
        if (!(await isDirectory(this.dir(id))))
            throw new errors_2.LayerNotFoundError(id);
        return null;
    }
    /** Nothing is mounted; forgets the reference counts and refuses further use. */
    async cleanup() {
        this.closed = true;
        for (const id of this.refs.active())
            this.refs.reset(id);
    }
}
exports.VfsProtoDriver = VfsProtoDriver;
/**
 * The vfs graph driver: {@link VfsProtoDriver} plus Docker's naive diff methods (layers compared as whole trees,
 * diffs applied with whiteouts turned into deletions).
 */
class VfsDriver extends naive_diff_driver_1.NaiveDiffDriver {
    vfs;
    constructor(vfs, bindings) {
        super(vfs, { bindings, format: 'naive' });
        this.vfs = vfs;
    }
    /**
     * Opens the driver at `home` (`<root>/vfs`). `options` are `--storage-opt` strings: only `size` (default limit
     * of every layer) is known, and it needs xfs project quotas; any other key is an InvalidOptionError naming it.
     */
    static async init(home, options = [], deps = {}) {
        const bindings = deps.bindings ?? (0, bindings_1.loadBindings)();
        const proto = await VfsProtoDriver.open(home, options, bindings);
        return new VfsDriver(proto, bindings);
    }
    /** The driver home. */
    get home() {
        return this.vfs.home;
    }
    /** The directory of layer `id` (whether or not it exists). */
    dir(id) {
        return this.vfs.dir(id);
    }
    /** The parent layer `id` was created from, as recorded at create (null for base layers). */
    parentOf(id) {
        return this.vfs.parentOf(id);
    }
    /** Whether the `size` storage option works here (xfs with pquota), and why not. */
    quotaSupport() {
        return this.vfs.quotaSupport();
    }
    /** Size limit and usage of layer `id` in bytes (null without a limit). */
    quotaUsage(id) {
        return this.vfs.quotaUsage(id);
    }
}
exports.VfsDriver = VfsDriver;
//# sourceMappingURL=vfs-driver.js.map