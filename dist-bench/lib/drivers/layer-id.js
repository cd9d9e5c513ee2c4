"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.checkLayerId = checkLayerId;
exports.checkParentId = checkParentId;
/**
 * Layer id validation: ids become directory and device names, so they are restricted to a safe alphabet.
 * @module
 */
const errors_1 = require("./errors");
const ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
/** Throws {@link InvalidIdError} unless `id` is 1-128 chars of [A-Za-z0-9_.-] not starting with '.' or '-'. */
function checkLayerId(id) {
    if (typeof id !== 'string' || !ID.test(id))
        throw new errors_1.InvalidIdError(id);
}
/** Normalises an optional parent id ('' / null / undefined mean none) and validates it. */
function checkParentId(parent) {
    if (parent === undefined || parent === null || parent === '')
        return null;
    checkLayerId(parent);
    return parent;
}
//# sourceMappingURL=layer-id.js.map