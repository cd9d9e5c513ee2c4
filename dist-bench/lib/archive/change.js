"use strict";
/**
 * The change list of a layer: what `docker diff` prints and what a layer diff is built from.
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.ChangeKind = void 0;
exports.changeKindLetter = changeKindLetter;
exports.comparePaths = comparePaths;
exports.compareWalkOrder = compareWalkOrder;
exports.sortChanges = sortChanges;
/** Kind of a change, with Docker's numbering (archive.ChangeType: ChangeModify = 0, ChangeAdd, ChangeDelete). */
var ChangeKind;
(function (ChangeKind) {
    ChangeKind[ChangeKind["Modify"] = 0] = "Modify";
    ChangeKind[ChangeKind["Add"] = 1] = "Add";
    ChangeKind[ChangeKind["Delete"] = 2] = "Delete";
})(ChangeKind || (exports.ChangeKind = ChangeKind = {}));
/** Docker's one-letter rendering of a change kind (`C`, `A`, `D`), as `docker diff` prints it. */
function changeKindLetter(kind) {
    return kind === ChangeKind.Modify ? 'C' : kind === ChangeKind.Add ? 'A' : 'D';
}
/**
 * Orders two paths by their UTF-8 bytes, the order Go's `sort` gives strings (and so Docker's change lists and
 * diffs). JavaScript compares UTF-16 code units, which differs for characters above U+FFFF against U+E000..U+FFFF;
 * the fix-up below maps code units so that their order becomes code point order, which equals UTF-8 byte order.
 */
function comparePaths(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
        let x = a.charCodeAt(i);
        let y = b.charCodeAt(i);
        if (x === y)
            continue;
        if (x >= 0xd800 && y >= 0xd800) {
            x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
            y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
        }
        return x - y;
    }
    return a.length - b.length;
}
/**
 * Orders two paths the way a depth-first walk that lists each directory by name visits them (Go's
 * filepath.Walk, which Docker's TarWithOptions uses): component by component, so `a/b` comes before `a.b`.
 * That is byte order with '/' sorting below every other byte.
 */
function compareWalkOrder(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
        const x = a.charCodeAt(i);
        const y = b.charCodeAt(i);
        if (x === y)
            continue;
        if (x === 0x2f)
            return -1;
        if (y === 0x2f)
            return 1;
        return comparePaths(a.slice(i, i + 2), b.slice(i, i + 2));
    }
    return a.length - b.length;
}
/** Sorts changes by path (bytewise), in place, and returns the array. */
function sortChanges(changes) {
    return changes.sort((x, y) => comparePaths(x.path, y.path) || x.kind - y.kind);
}
//# sourceMappingURL=change.js.map