"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.MAX_PATH_BYTES = void 0;
exports.cleanEntryPath = cleanEntryPath;
exports.parentOf = parentOf;
exports.baseOf = baseOf;
exports.joinPath = joinPath;
/**
 * Cleaning of archive entry names into root-relative paths, the first line of defence against traversal:
 * absolute names are taken relative to the layer root (as Docker does), `.` and empty components vanish, `..`
 * that stays inside is folded, and any `..` that would climb above the root is refused.
 * @module
 */
const errors_1 = require("../errors");
/** Longest cleaned path accepted (PATH_MAX minus room for the root prefix). */
exports.MAX_PATH_BYTES = 4000;
/**
 * Cleans an entry name to a relative path without leading/trailing slashes ('' is the root itself).
 * Throws InvalidArchiveError for names that climb out of the root, hold NUL bytes, or exceed `maxDepth`
 * components / {@link MAX_PATH_BYTES} bytes.
 */
function cleanEntryPath(name, maxDepth, what = 'entry') {
    if (name.includes('\0'))
        throw new errors_1.InvalidArchiveError(`NUL byte in ${what} name`, name);
    const out = [];
    for (const part of name.split('/')) {
        if (part === '' || part === '.')
            continue;
        if (part === '..') {
            if (out.length === 0)
                throw new errors_1.InvalidArchiveError(`${what} name escapes the layer root`, name);
            out.pop();
            continue;
        }
        out.push(part);
        if (out.length > maxDepth)
            throw new errors_1.InvalidArchiveError(`${what} is nested deeper than ${maxDepth} levels`, name.slice(0, 200));
    }
    const p = out.join('/');
    if (Buffer.byteLength(p) > exports.MAX_PATH_BYTES)
        throw new errors_1.InvalidArchiveError(`${what} name longer than ${exports.MAX_PATH_BYTES} bytes`, name.slice(0, 200));
    return p;
}
/** Parent of a cleaned path ('' for top-level entries and for the root). */
function parentOf(p) {
    const i = p.lastIndexOf('/');
    return i < 0 ? '' : p.slice(0, i);
}
/** Last component of a cleaned path. */
function baseOf(p) {
    return p.slice(p.lastIndexOf('/') + 1);
}
/** Joins a cleaned directory path and a name. */
function joinPath(dir, name) {
    return dir === '' ? name : `${dir}/${name}`;
}
//# sourceMappingURL=entry-path.js.map