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
exports.parseMountInfo = parseMountInfo;
exports.readMountInfo = readMountInfo;
exports.mountsBelow = mountsBelow;
exports.mountOf = mountOf;
/**
 * Reading /proc/self/mountinfo: which mounts lie below a directory, and with which superblock options.
 * @module
 */
const fs = __importStar(require("node:fs/promises"));
/** mountinfo escapes space, tab, newline and backslash as `\ooo`. */
function unescape(s) {
    return s.replace(/\\([0-7]{3})/g, (_m, oct) => String.fromCharCode(parseInt(oct, 8)));
}
/** Parses mountinfo text; malformed lines are skipped. */
function parseMountInfo(text) {
    const out = [];
    for (const line of text.split('\n')) {
        if (line === '')
            continue;
        const fields = line.split(' ');
        const sep = fields.indexOf('-', 6);
        if (sep < 0 || fields.length < sep + 3)
            continue;
        out.push({
            mountPoint: unescape(fields[4]),
            fstype: fields[sep + 1],
            source: unescape(fields[sep + 2]),
            superOptions: (fields[sep + 3] ?? '').split(','),
        });
    }
    return out;
}
/** The current mounts (reads /proc/self/mountinfo). */
async function readMountInfo(file = '/proc/self/mountinfo') {
    return parseMountInfo(await fs.readFile(file, 'utf8'));
}
/** Mounts strictly below `dir` (an absolute, symlink-free path), deepest first. */
function mountsBelow(entries, dir) {
    const prefix = dir.endsWith('/') ? dir : `${dir}/`;
    return entries
        .filter((e) => e.mountPoint.startsWith(prefix))
        .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}
/** The mount holding `p` (an absolute, symlink-free path): the last-mounted entry with the longest matching mount point. */
function mountOf(entries, p) {
    let best = null;
    for (const e of entries) {
        const mp = e.mountPoint;
        const covers = mp === '/' || p === mp || p.startsWith(mp.endsWith('/') ? mp : `${mp}/`);
        if (covers && (best === null || mp.length >= best.mountPoint.length))
            best = e;
    }
    return best;
}
//# sourceMappingURL=mountinfo.js.map