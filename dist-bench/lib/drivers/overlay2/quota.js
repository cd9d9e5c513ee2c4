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
exports.ProjectQuota = exports.BACKING_FS_DEV = void 0;
/**
 * Per-layer size limits through xfs project quotas, as Docker's daemon/graphdriver/quota Control: each limited
 * layer directory gets its own project id (inherited by everything created below it) and that project a block
 * limit, set through a block device node of the backing filesystem kept in the driver home.
 * @module
 */
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const constants_1 = require("../../native/constants");
/** Name of the device node in the home (Docker's). */
exports.BACKING_FS_DEV = 'backingFsBlockDev';
/** Project quota control for the filesystem of one directory. */
class ProjectQuota {
    b;
    device;
    nextId;
    ids;
    constructor(b, 
    /** The block device node quotactl is called on. */
    device, nextId, 
    /** Project ids of directories that have one, by directory name. */
    ids) {
        this.b = b;
        this.device = device;
        this.nextId = nextId;
        this.ids = ids;
    }
    /**
     * Sets up quota control for `home`: the project id of `home` plus one is the first id used; the device node is
     * (re)made; a limit of 0 on that id is set as the test that the filesystem enforces project quotas (throws
     * otherwise); directories of `home` that already have project ids are remembered, and new ids start above them.
     */
    static async open(home, b) {
        const minId = (await b.getProjectId(home)) + 1;
        const device = path.join(home, exports.BACKING_FS_DEV);
        const st = await fs.stat(home);
        await fs.rm(device, { force: true });
        await b.mknod(device, constants_1.FileType.S_IFBLK | 0o600, st.dev);
        await b.setProjectQuota(device, minId, 0);
        const ids = new Map();
        let next = minId + 1;
        for (const e of await fs.readdir(home, { withFileTypes: true })) {
            if (!e.isDirectory())
                continue;
            const id = await b.getProjectId(path.join(home, e.name)).catch(() => 0);
            if (id > 0 && id >= minId) {
                ids.set(e.name, id);
                if (id >= next)
                    next = id + 1;
            }
        }
        return new ProjectQuota(b, device, next, ids);
    }
    /**
     * Limits `dir` (a new, still empty directory) to `bytes`; `name` is the directory's final name in the home
     * (it may be created under a temp name and renamed).
     */
    async set(dir, name, bytes) {
        let id = this.ids.get(name);
        if (id === undefined) {
            id = this.nextId++;
            this.ids.set(name, id);
        }
        await this.b.setProjectId(dir, id);
        await this.b.setProjectQuota(this.device, id, bytes);
        return id;
    }
    /** Forgets the project of a removed directory (the id is not reused, as Docker). */
    forget(name) {
        this.ids.delete(name);
    }
    /** Limit and usage of the project of `name`, null when it has none. */
    async get(name) {
        const id = this.ids.get(name);
        return id === undefined ? null : this.b.getProjectQuota(this.device, id);
    }
}
exports.ProjectQuota = ProjectQuota;
//# sourceMappingURL=quota.js.map