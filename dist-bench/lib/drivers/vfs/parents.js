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
exports.ParentIndex = void 0;
/**
 * Which vfs layer was created from which. Docker's vfs keeps no such record (each layer is a full copy), but the
 * driver contract refuses to remove a layer that other layers name as their parent, so the driver records the
 * parent of every layer in `<home>/parents/<id>` (one small file holding the parent id) and keeps an in-memory
 * index of children, loaded once at init.
 * @module
 */
const node_crypto_1 = require("node:crypto");
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const layer_id_1 = require("../layer-id");
const remove_tree_1 = require("./remove-tree");
function isValidId(s) {
    try {
        (0, layer_id_1.checkLayerId)(s);
        return true;
    }
    catch {
        return false;
    }
}
/** The persistent parent records and the in-memory child index. Callers serialise changes (the driver's graph lock). */
class ParentIndex {
    dir;
    parentOf = new Map();
    childrenOf = new Map();
    constructor(dir) {
        this.dir = dir;
    }
    /**
     * Reads the records. Records of layers that do not exist (left by a crash between writing the record and
     * publishing the layer, or between unpublishing and deleting it), temp files and unreadable records are removed.
     */
    async load(layerExists) {
        let names;
        try {
            names = await fs.readdir(this.dir);
        }
        catch (e) {
            if ((0, remove_tree_1.errCode)(e) === 'ENOENT')
                return;
            throw e;
        }
        await Promise.all(names.map(async (name) => {
            const file = path.join(this.dir, name);
            if (!isValidId(name)) {
                if (name.startsWith('.tmp-'))
                    await fs.rm(file, { force: true });
                return;
            }
            let parent;
            try {
                parent = (await fs.readFile(file, 'utf8')).trim();
            }
            catch {
                return;
            }
            if (!isValidId(parent) || !(await layerExists(name))) {
                await fs.rm(file, { force: true });
                return;
            }
            this.link(name, parent);
        }));
    }
    link(child, parent) {
        this.parentOf.set(child, parent);
        let set = this.childrenOf.get(parent);
        if (!set) {
            set = new Set();
            this.childrenOf.set(parent, set);
        }
        set.add(child);
    }
    /** Records in memory that `child` is being created from `parent` (before the copy, so the parent stays). */
    add(child, parent) {
        this.drop(child);
        this.link(child, parent);
    }
    /** Forgets `child` in memory. */
    drop(child) {
        const parent = this.parentOf.get(child);
        if (parent === undefined)
            return;
        this.parentOf.delete(child);
        const set = this.childrenOf.get(parent);
        if (set) {
            set.delete(child);
            if (set.size === 0)
                this.childrenOf.delete(parent);
        }
    }
    /** The recorded parent of `id`, null for a base layer (or a layer created by a driver that kept no record). */
    parent(id) {
        return this.parentOf.get(id) ?? null;
    }
    /** Ids of the layers created from `id`. */
    children(id) {
        return [...(this.childrenOf.get(id) ?? [])];
    }
    /** Writes the record of `child` atomically (temp file + rename). */
    async persist(child, parent) {
        await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
        const tmp = path.join(this.dir, `.tmp-${child}-${(0, node_crypto_1.randomBytes)(6).toString('hex')}`);
        try {
            await fs.writeFile(tmp, `${parent}\n`, { mode: 0o600 });
            await fs.rename(tmp, path.join(this.dir, child));
        }
        catch (e) {
            await fs.rm(tmp, { force: true }).catch(() => undefined);
            throw e;
        }
    }
    /** Deletes the record of `id` (a missing record is fine). */
    async unpersist(id) {
        await fs.rm(path.join(this.dir, id), { force: true });
    }
}
exports.ParentIndex = ParentIndex;
//# sourceMappingURL=parents.js.map