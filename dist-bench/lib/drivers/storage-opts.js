"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.parseStorageOpts = parseStorageOpts;
exports.parseSize = parseSize;
exports.parseBool = parseBool;
/**
 * Parsing of Docker `--storage-opt` strings (`key=value`) and of human sizes (`10G`, `512MiB`).
 * @module
 */
const errors_1 = require("./errors");
/** Splits `key=value` options; keys are lower-cased; unknown keys (not in `known`) are an error naming them. */
function parseStorageOpts(driver, options, known) {
    const out = new Map();
    for (const opt of options) {
        if (typeof opt !== 'string')
            throw new errors_1.InvalidOptionError(`${driver}: storage option must be a string`);
        const eq = opt.indexOf('=');
        if (eq <= 0)
            throw new errors_1.InvalidOptionError(`${driver}: storage option ${JSON.stringify(opt)} is not key=value`);
        const key = opt.slice(0, eq).trim().toLowerCase();
        const value = opt.slice(eq + 1).trim();
        if (!known.includes(key)) {
            throw new errors_1.InvalidOptionError(`${driver}: unknown storage option ${JSON.stringify(key)}${known.length ? ` (known: ${known.join(', ')})` : ''}`);
        }
        out.set(key, value);
    }
    return out;
}
const UNITS = {
    '': 1, b: 1,
    k: 1024, kb: 1024, kib: 1024,
    m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
    g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
    t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
    p: 1024 ** 5, pb: 1024 ** 5, pib: 1024 ** 5,
};
/** Parses a size like Docker's units.RAMInBytes: binary multiples, case-insensitive suffixes. */
function parseSize(value, what) {
    const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
    const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
    if (!m || unit === undefined)
        throw new errors_1.InvalidOptionError(`invalid size ${JSON.stringify(value)} for ${what}`);
    const n = Math.floor(Number(m[1]) * unit);
    if (!Number.isSafeInteger(n))
        throw new errors_1.InvalidOptionError(`size ${JSON.stringify(value)} for ${what} is too large`);
    return n;
}
/** Parses a boolean option value (true/false/1/0/yes/no). */
function parseBool(value, what) {
    const v = value.toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v))
        return true;
    if (['false', '0', 'no', 'off'].includes(v))
        return false;
    throw new errors_1.InvalidOptionError(`invalid boolean ${JSON.stringify(value)} for ${what}`);
}
//# sourceMappingURL=storage-opts.js.map