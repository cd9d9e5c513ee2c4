"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.BLOCK = void 0;
exports.isEndBlock = isEndBlock;
exports.decodeText = decodeText;
exports.utf8 = utf8;
exports.parseNumeric = parseNumeric;
exports.decodeHeader = decodeHeader;
exports.decodePax = decodePax;
exports.paxInteger = paxInteger;
exports.paxTime = paxTime;
/**
 * Decoding of single tar header blocks (ustar, GNU, v7) and PAX extended records, strictly: checksums verified,
 * octal and base-256 numbers range-checked, negative sizes refused, PAX records length-checked and kept as raw
 * bytes so binary xattr values (security.capability) survive.
 * @module
 */
const errors_1 = require("../errors");
exports.BLOCK = 512;
function isZeroBlock(b) {
    for (let i = 0; i < exports.BLOCK; i += 8) {
        if (b.readBigUInt64LE(i) !== 0n)
            return false;
    }
    return true;
}
/** True when the block is all zeros (end-of-archive marker). */
function isEndBlock(b) {
    return isZeroBlock(b);
}
/** Decodes a NUL-terminated text field as UTF-8, refusing byte sequences that are not valid UTF-8. */
function decodeText(b, start, len, field) {
    let end = start;
    const max = start + len;
    while (end < max && b[end] !== 0)
        end++;
    return utf8(b.subarray(start, end), field);
}
const fatalDecoder = new TextDecoder('utf-8', { fatal: true });
/** UTF-8 decode that throws InvalidArchiveError instead of silently replacing invalid bytes. */
function utf8(bytes, field) {
    const s = bytes.toString('utf8');
    if (s.includes('\ufffd')) {
        try {
            fatalDecoder.decode(bytes);
        }
        catch {
            throw new errors_1.InvalidArchiveError(`${field} is not valid UTF-8`, bytes.toString('latin1'));
        }
    }
    return s;
}
/** Parses an octal or base-256 numeric field; refuses negative numbers and values beyond 2^53. */
function parseNumeric(b, start, len, field) {
    const first = b[start];
    if (first & 0x80) {
        // GNU base-256: two's complement big-endian; 0xff marks a negative number.
        if (first === 0xff)
            throw new errors_1.InvalidArchiveError(`negative ${field} in header`);
        let v = first & 0x7f;
        for (let i = 1; i < len; i++) {
            v = v * 256 + b[start + i];
            if (v > Number.MAX_SAFE_INTEGER)
                throw new errors_1.InvalidArchiveError(`${field} too large in header`);
        }
        return v;
    }
    let i = start;
    const end = start + len;
    while (i < end && (b[i] === 0x20 || b[i] === 0))
        i++;
    let v = 0;
    let digits = 0;
    for (; i < end; i++) {
        const c = b[i];
        if (c === 0x20 || c === 0)
            break;
        if (c < 0x30 || c > 0x37)
            throw new errors_1.InvalidArchiveError(`invalid octal digit in ${field} field`);
        v = v * 8 + (c - 0x30);
        digits++;
    }
    for (; i < end; i++) {
        if (b[i] !== 0x20 && b[i] !== 0)
            throw new errors_1.InvalidArchiveError(`garbage after ${field} field`);
    }
    if (v > Number.MAX_SAFE_INTEGER)
        throw new errors_1.InvalidArchiveError(`${field} too large in header`);
    return digits === 0 ? 0 : v;
}
function checksumOk(b) {
    const want = parseNumeric(b, 148, 8, 'checksum');
    let unsigned = 0;
    let signed = 0;
    for (let i = 0; i < exports.BLOCK; i++) {
        const c = i >= 148 && i < 156 ? 0x20 : b[i];
        unsigned += c;
        signed += c > 127 ? c - 256 : c;
    }
    // Some old writers summed signed chars; accept both, as GNU tar and Go do.
    return want === unsigned || want === signed;
}
const TYPEFLAGS = {
    '0': 'file',
    '\0': 'file',
    '7': 'file',
    '1': 'link',
    '2': 'symlink',
    '3': 'char',
    '4': 'block',
    '5': 'dir',
    '6': 'fifo',
    x: 'pax',
    X: 'pax', // Solaris extended header, same format
    g: 'pax-global',
    L: 'gnu-longname',
    K: 'gnu-longlink',
    V: 'volume',
};
/** Decodes one (non-zero) header block. */
function decodeHeader(b) {
    if (!checksumOk(b))
        throw new errors_1.InvalidArchiveError('tar header checksum mismatch (not a tar archive, or corrupted)');
    const magic = b.toString('latin1', 257, 263);
    const version = b.toString('latin1', 263, 265);
    let format = 'v7';
    if (magic === 'ustar\0' && version === '00')
        format = 'ustar';
    else if (magic === 'ustar ' && version === ' \0')
        format = 'gnu';
    else if (magic.startsWith('ustar'))
        format = 'ustar';
    const flagChar = String.fromCharCode(b[156]);
    let name = decodeText(b, 0, 100, 'name');
    if (format === 'ustar') {
        const prefix = decodeText(b, 345, 155, 'prefix');
        if (prefix !== '')
            name = `${prefix}/${name}`;
    }
    let typeflag = TYPEFLAGS[flagChar];
    if (typeflag === undefined) {
        const what = /[ -~]/.test(flagChar) ? `'${flagChar}'` : `0x${b[156].toString(16)}`;
        const hint = flagChar === 'S' ? ' (GNU sparse entries are not supported)' : '';
        throw new errors_1.InvalidArchiveError(`unsupported tar entry type ${what}${hint}`, name);
    }
    // v7 archives mark directories only by a trailing slash.
    if (typeflag === 'file' && flagChar === '\0' && name.endsWith('/'))
        typeflag = 'dir';
    const hasDev = format !== 'v7';
    return {
        typeflag,
        name,
        linkname: decodeText(b, 157, 100, 'linkname'),
        mode: parseNumeric(b, 100, 8, 'mode'),
        uid: parseNumeric(b, 108, 8, 'uid'),
        gid: parseNumeric(b, 116, 8, 'gid'),
        size: parseNumeric(b, 124, 12, 'size'),
        mtime: parseNumeric(b, 136, 12, 'mtime'),
        uname: format === 'v7' ? '' : decodeText(b, 265, 32, 'uname'),
        gname: format === 'v7' ? '' : decodeText(b, 297, 32, 'gname'),
        devMajor: hasDev ? parseNumeric(b, 329, 8, 'devmajor') : 0,
        devMinor: hasDev ? parseNumeric(b, 337, 8, 'devminor') : 0,
        format,
    };
}
/**
 * Parses PAX extended header records ("<len> <key>=<value>\n"). Values stay raw bytes; a record whose length
 * does not match, lacks '=' or the final newline, or whose key holds a NUL, makes the archive invalid.
 */
function decodePax(data, into) {
    let off = 0;
    while (off < data.length) {
        // Trailing NUL padding after the last record is tolerated (some writers pad the block).
        if (data[off] === 0) {
            for (let i = off; i < data.length; i++) {
                if (data[i] !== 0)
                    throw new errors_1.InvalidArchiveError('garbage after PAX records');
            }
            return;
        }
        let sp = off;
        while (sp < data.length && sp - off < 20 && data[sp] !== 0x20)
            sp++;
        if (sp >= data.length || data[sp] !== 0x20)
            throw new errors_1.InvalidArchiveError('malformed PAX record length');
        const lenText = data.toString('latin1', off, sp);
        if (!/^[1-9][0-9]*$/.test(lenText))
            throw new errors_1.InvalidArchiveError('malformed PAX record length');
        const len = Number(lenText);
        const end = off + len;
        if (end > data.length || len < sp - off + 3)
            throw new errors_1.InvalidArchiveError('PAX record length out of range');
        if (data[end - 1] !== 0x0a)
            throw new errors_1.InvalidArchiveError('PAX record does not end with a newline');
        const rec = data.subarray(sp + 1, end - 1);
        const eq = rec.indexOf(0x3d);
        if (eq <= 0)
            throw new errors_1.InvalidArchiveError('PAX record without a key');
        const keyBytes = rec.subarray(0, eq);
        if (keyBytes.includes(0))
            throw new errors_1.InvalidArchiveError('NUL byte in PAX record key');
        const key = utf8(keyBytes, 'PAX key');
        into.set(key, rec.subarray(eq + 1));
        off = end;
    }
}
/** Parses a decimal PAX number field (size, uid, gid): digits only, within 2^53. */
function paxInteger(v, key) {
    const s = v.toString('latin1');
    if (!/^[0-9]{1,16}$/.test(s))
        throw new errors_1.InvalidArchiveError(`invalid PAX ${key} ${JSON.stringify(s.slice(0, 40))}`);
    const n = Number(s);
    if (!Number.isSafeInteger(n))
        throw new errors_1.InvalidArchiveError(`PAX ${key} too large`);
    return n;
}
/** Parses a PAX time ("sec[.frac]", possibly negative) into seconds and nanoseconds. */
function paxTime(v, key) {
    const s = v.toString('latin1');
    const m = /^(-?)([0-9]{1,15})(?:\.([0-9]*))?$/.exec(s);
    if (m === null)
        throw new errors_1.InvalidArchiveError(`invalid PAX ${key} ${JSON.stringify(s.slice(0, 40))}`);
    const neg = m[1] === '-';
    const whole = Number(m[2]);
    const frac = Number(((m[3] ?? '') + '000000000').slice(0, 9));
    if (!neg)
        return [whole, frac];
    // -1.5 means 1.5 s before the epoch: sec -2, nsec 5e8.
    return frac === 0 ? [-whole, 0] : [-whole - 1, 1e9 - frac];
}
//# sourceMappingURL=tar-header.js.map