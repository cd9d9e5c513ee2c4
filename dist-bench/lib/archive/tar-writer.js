"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.END_OF_ARCHIVE = void 0;
exports.paxRecord = paxRecord;
exports.paddingFor = paddingFor;
exports.encodeHeader = encodeHeader;
const tar_header_1 = require("./tar-header");
const TYPEFLAG = {
    file: '0',
    link: '1',
    symlink: '2',
    char: '3',
    block: '4',
    dir: '5',
    fifo: '6',
};
function isAscii(s) {
    // eslint-disable-next-line no-control-regex
    return /^[\x01-\x7f]*$/.test(s);
}
function fitsOctal(n, width) {
    return n >= 0 && n < 8 ** (width - 1);
}
function writeOctal(b, off, width, n) {
    // width-1 zero-padded digits and a NUL, as Go's archive/tar formats numeric fields.
    b.write(n.toString(8).padStart(width - 1, '0'), off, width - 1, 'latin1');
    b[off + width - 1] = 0;
}
function writeString(b, off, width, s) {
    b.write(s, off, Math.min(width, Buffer.byteLength(s)), 'utf8');
}
/** Splits a long ASCII name into USTAR prefix/name, or returns null when it cannot be split. */
function splitUstar(name) {
    if (name.length <= 100)
        return ['', name];
    for (let i = name.length - 1; i > 0; i--) {
        if (name[i] !== '/')
            continue;
        const prefix = name.slice(0, i);
        const rest = name.slice(i + 1);
        if (prefix.length <= 155 && rest.length <= 100 && rest.length > 0)
            return [prefix, rest];
        if (prefix.length <= 155)
            return null;
    }
    return null;
}
/** One PAX record "<len> <key>=<value>\n" where len counts the whole record including its own digits. */
function paxRecord(key, value) {
    const body = Buffer.byteLength(key) + value.length + 3; // ' ', '=', '\n'
    let len = body + String(body).length;
    if (String(len).length !== String(body).length)
        len = body + String(len).length;
    return Buffer.concat([Buffer.from(`${len} ${key}=`, 'utf8'), value, Buffer.from('\n')]);
}
function ustarBlock(name, prefix, typeflag, h, size, fields, linkname) {
    const b = Buffer.alloc(tar_header_1.BLOCK);
    writeString(b, 0, 100, name);
    writeOctal(b, 100, 8, fields.mode);
    writeOctal(b, 108, 8, fields.uid);
    writeOctal(b, 116, 8, fields.gid);
    writeOctal(b, 124, 12, size);
    writeOctal(b, 136, 12, fields.mtime);
    b.write('        ', 148, 8, 'latin1');
    b.write(typeflag, 156, 1, 'latin1');
    writeString(b, 157, 100, linkname);
    b.write('ustar\u000000', 257, 8, 'latin1');
    writeString(b, 265, 32, h.uname ?? '');
    writeString(b, 297, 32, h.gname ?? '');
    if (h.type === 'char' || h.type === 'block') {
        writeOctal(b, 329, 8, h.devMajor ?? 0);
        writeOctal(b, 337, 8, h.devMinor ?? 0);
    }
    writeString(b, 345, 155, prefix);
    let sum = 0;
    for (let i = 0; i < tar_header_1.BLOCK; i++)
        sum += b[i];
    b.write(sum.toString(8).padStart(6, '0'), 148, 6, 'latin1');
    b[154] = 0;
    b[155] = 0x20;
    return b;
}
/** Zero bytes needed after `size` bytes of content to reach the block boundary. */
function paddingFor(size) {
    return (tar_header_1.BLOCK - (size % tar_header_1.BLOCK)) % tar_header_1.BLOCK;
}
/** The two zero blocks that end an archive. */
exports.END_OF_ARCHIVE = Buffer.alloc(tar_header_1.BLOCK * 2);
/** Encodes the header block(s) of one entry (a PAX header first when needed). */
function encodeHeader(h) {
    let name = h.name;
    if (h.type === 'dir' && !name.endsWith('/'))
        name += '/';
    const linkname = h.linkname ?? '';
    const records = new Map();
    let ustarName = name;
    let prefix = '';
    const split = isAscii(name) ? splitUstar(name) : null;
    if (split === null) {
        records.set('path', Buffer.from(name, 'utf8'));
        ustarName = asciiTail(name, 100);
    }
    else {
        [prefix, ustarName] = split;
    }
    let ustarLink = linkname;
    if (Buffer.byteLength(linkname) > 100 || !isAscii(linkname)) {
        records.set('linkpath', Buffer.from(linkname, 'utf8'));
        ustarLink = asciiTail(linkname, 100);
    }
    const size = h.type === 'file' ? h.size : 0;
    const fields = { mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, mtime: h.mtimeSec };
    let ustarSize = size;
    if (!fitsOctal(size, 12)) {
        records.set('size', Buffer.from(String(size)));
        ustarSize = 0;
    }
    if (!fitsOctal(h.uid, 8)) {
        records.set('uid', Buffer.from(String(h.uid)));
        fields.uid = 0;
    }
    if (!fitsOctal(h.gid, 8)) {
        records.set('gid', Buffer.from(String(h.gid)));
        fields.gid = 0;
    }
    if (!fitsOctal(h.mtimeSec, 12)) {
        records.set('mtime', Buffer.from(String(h.mtimeSec)));
        fields.mtime = 0;
    }
    if ((h.uname !== undefined && (Buffer.byteLength(h.uname) > 32 || !isAscii(h.uname))))
        records.set('uname', Buffer.from(h.uname, 'utf8'));
    if ((h.gname !== undefined && (Buffer.byteLength(h.gname) > 32 || !isAscii(h.gname))))
        records.set('gname', Buffer.from(h.gname, 'utf8'));
    const xattrs = h.xattrs instanceof Map ? [...h.xattrs] : Object.entries(h.xattrs ?? {});
    for (const [k, v] of xattrs)
        records.set(`SCHILY.xattr.${k}`, Buffer.from(v));
    const main = ustarBlock(ustarName, prefix, TYPEFLAG[h.type], h, ustarSize, fields, ustarLink);
    if (records.size === 0)
        return main;
    const keys = [...records.keys()].sort();
    const pax = Buffer.concat(keys.map((k) => paxRecord(k, records.get(k))));
    const base = name.replace(/\/$/, '');
    const dir = base.includes('/') ? base.slice(0, base.lastIndexOf('/')) : '';
    const paxName = asciiTail(`${dir === '' ? '' : dir + '/'}PaxHeaders.0/${base.slice(base.lastIndexOf('/') + 1)}`, 100);
    const paxHeader = ustarBlock(paxName, '', 'x', { ...h, type: 'file', uname: '', gname: '' }, pax.length, { mode: 0o644, uid: 0, gid: 0, mtime: 0 }, '');
    return Buffer.concat([paxHeader, pax, Buffer.alloc(paddingFor(pax.length)), main]);
}
/** Last bytes of `s` that fit in `width` as ASCII (placeholder in the USTAR field when PAX holds the real value). */
function asciiTail(s, width) {
    const ascii = s.replace(/[^\x01-\x7f]/g, '_');
    return ascii.length <= width ? ascii : ascii.slice(0, width);
}
//# sourceMappingURL=tar-writer.js.map