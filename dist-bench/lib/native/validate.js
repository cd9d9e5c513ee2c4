"use strict";
/**
 * Argument checks that run in TypeScript before any native call: bad arguments become a TypeError (or
 * RangeError) here, so the addon only ever sees well-formed input.
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.checkString = checkString;
exports.checkInteger = checkInteger;
exports.checkArg = checkArg;
exports.checkFields = checkFields;
function describe(v) {
    if (v === null)
        return 'null';
    if (Array.isArray(v))
        return 'an array';
    return typeof v === 'string' ? `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}` : typeof v;
}
/** Throws a TypeError when `value` is not a string free of NUL bytes (and non-empty unless allowEmpty). */
function checkString(value, name, allowEmpty = false) {
    if (typeof value !== 'string')
        throw new TypeError(`${name} must be a string, got ${describe(value)}`);
    if (!allowEmpty && value.length === 0)
        throw new TypeError(`${name} must not be empty`);
    if (value.includes('\0'))
        throw new TypeError(`${name} must not contain NUL bytes`);
}
/** Throws unless `value` is a safe integer (non-negative unless `signed`). */
function checkInteger(value, name, signed = false) {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
        throw new TypeError(`${name} must be a safe integer, got ${describe(value)}`);
    }
    if (!signed && value < 0)
        throw new RangeError(`${name} must not be negative, got ${value}`);
}
/** Checks one argument against its kind. */
function checkArg(kind, value, name) {
    switch (kind) {
        case 'path':
            return checkString(value, name);
        case 'string':
            return checkString(value, name, true);
        case 'string?':
            if (value !== null && value !== undefined)
                checkString(value, name, true);
            return;
        case 'uint':
            return checkInteger(value, name);
        case 'int':
            return checkInteger(value, name, true);
        case 'fd':
            checkInteger(value, name);
            if (value > 0x7fffffff)
                throw new RangeError(`${name} is not a file descriptor: ${value}`);
            return;
        case 'bool?':
            if (value !== undefined && typeof value !== 'boolean')
                throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
            return;
        case 'buffer':
            if (!(value instanceof Uint8Array))
                throw new TypeError(`${name} must be a Buffer, got ${describe(value)}`);
            return;
        case 'object?':
            if (value === undefined || value === null)
                return;
            if (typeof value !== 'object' || Array.isArray(value))
                throw new TypeError(`${name} must be an object, got ${describe(value)}`);
            return;
        case 'object':
            if (typeof value !== 'object' || value === null || Array.isArray(value))
                throw new TypeError(`${name} must be an object, got ${describe(value)}`);
            return;
        case 'array':
            if (!Array.isArray(value))
                throw new TypeError(`${name} must be an array, got ${describe(value)}`);
            return;
    }
}
/** Checks the optional numeric and string fields of an options object. */
function checkFields(obj, fields, name) {
    if (obj === undefined || obj === null)
        return;
    const o = obj;
    for (const [key, kind] of Object.entries(fields)) {
        if (o[key] === undefined)
            continue;
        checkArg(kind, o[key], `${name}.${key}`);
    }
}
//# sourceMappingURL=validate.js.map