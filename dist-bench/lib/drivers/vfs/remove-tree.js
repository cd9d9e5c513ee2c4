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
exports.removeTree = removeTree;
exports.errCode = errCode;
/**
 * Recursive removal of a layer tree that also copes with directories the caller cannot write (a layer of an
 * image may hold `dr-xr-xr-x` directories; without CAP_DAC_OVERRIDE their entries cannot be unlinked).
 * @module
 */
const fs = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
function errCode(e) {
    return typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : undefined;
}
/** Adds owner rwx to every directory below (and including) `dir` that the caller owns; never follows symlinks. */
async function makeDirsWritable(dir, uid) {
    let st;
    try {
        st = await fs.lstat(dir);
    }
    catch {
        return;
    }
    if (!st.isDirectory())
        return;
    if ((st.mode & 0o700) !== 0o700 && (uid === undefined || uid === 0 || st.uid === uid)) {
        await fs.chmod(dir, (st.mode & 0o7777) | 0o700).catch(() => undefined);
    }
    let entries;
    try {
        entries = await fs.readdir(dir, { withFileTypes: true });
    }
    catch {
        return;
    }
    for (const e of entries) {
        if (e.isDirectory())
            await makeDirsWritable(path.join(dir, e.name), uid);
    }
}
/**
 * Removes `target` and everything below it; a missing target is not an error. When permissions get in the way
 * the directories are made writable and the removal is retried once.
 */
async function removeTree(target) {
    try {
        await fs.rm(target, { recursive: true, force: true, maxRetries: 2 });
        return;
    }
    catch (e) {
        const code = errCode(e);
        if (code !== 'EACCES' && code !== 'EPERM')
            throw e;
    }
    await makeDirsWritable(target, process.getuid?.());
    await fs.rm(target, { recursive: true, force: true, maxRetries: 2 });
}
//# sourceMappingURL=remove-tree.js.map