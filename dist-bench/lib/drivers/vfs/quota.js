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
exports.VfsQuota = exports.BACKING_FS_DEV = void 0;
/**
 * Per-layer size limits for vfs through xfs project quotas, as Docker's vfs does with daemon/graphdriver/quota:
 * a layer directory gets its own project id before anything is copied into it (new entries inherit the id), and
 * the project a block limit. quotactl needs a block device node of the filesystem: `<home>/backingFsBlockDev`.
 * @module
 */
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const constants_1 = require("../../native/constants");
/** Name of the device node in the home (Docker's). */
exports.BACKING_FS_DEV = 'backingFsBlockDev';
/** Project quota control for the layers of one vfs home. */
class VfsQuota {
    b;
    device;
    minId;
    nextId;
    constructor(b, device, 
    /** Lowest project id this home hands out (the home's own id plus one). */
    minId, nextId) {
        this.b = b;
        this.device = device;
        this.minId = minId;
        this.nextId = nextId;
    }
    /**
     * Sets up quota control when the home is on xfs and project quotas work there (tested by setting a limit of 0
     * on the first id, as Docker does); otherwise resolves to the reason there is none. Project ids already used by
     * layers in `layersDir` are skipped, so a restart never hands out an id twice.
     */
    static async open(home, layersDir, b) {
        const sf = await b.statfs(home);
        if (sf.type !== constants_1.FsMagic.XFS)
            return { quota: null, reason: `${home} is not on xfs` };
        const device = path.join(home, exports.BACKING_FS_DEV);
        let minId;
        try {
            minId = (await b.getProjectId(home)) + 1;
            const st = await fs.stat(home);
            await fs.rm(device, { force: true });
            await b.mknod(device, constants_1.FileType.S_IFBLK | 0o600, st.dev);
            await b.setProjectQuota(device, minId, 0);
        }
        catch (e) {
            await fs.rm(device, { force: true }).catch(() => undefined);
            const code = e.code;
            if (code === 'ERR_NATIVE_MISSING')
                return { quota: null, reason: 'project quota control is not in this build of the addon' };
            return { quota: null, reason: `project quotas do not work on the xfs filesystem of ${home} (mount it with pquota): ${e instanceof Error ? e.message : String(e)}` };
        }
        let next = minId + 1;
        let names = [];
        try {
            names = await fs.readdir(layersDir);
        }
        catch {
            // no layers yet
        }
        for (const name of names) {
            const id = await b.getProjectId(path.join(layersDir, name)).catch(() => 0);
            if (id >= next)
                next = id + 1;
        }
        return { quota: new VfsQuota(b, device, minId, next), reason: '' };
    }
    /** Gives the (empty) directory `dir` a new project id, inherited by what is created below it, limited to `bytes`. */
    async limit(dir, bytes) {
        const id = this.nextId++;
        await this.b.setProjectId(dir, id);
        await this.b.setProjectQuota(this.device, id, bytes);
        return id;
    }
    /** Limit and usage of the project of `dir` (null when it has no project id of ours). */
    async usage(dir) {
        const id = await this.b.getProjectId(dir);
        return id <= this.minId ? null : this.b.getProjectQuota(this.device, id);
    }
}
exports.VfsQuota = VfsQuota;
//# sourceMappingURL=quota.js.map