"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.readTar = readTar;
/**
 * Streaming tar reader for layer archives. Written here rather than taken from tar-stream because layers need
 * what that parser drops: binary PAX values (xattrs such as security.capability), nanosecond PAX times, strict
 * refusal of malformed headers (hostile input), and the raw header bytes for exact re-creation of the tar.
 * @module
 */
const errors_1 = require("../errors");
const byte_source_1 = require("./byte-source");
const tar_header_1 = require("./tar-header");
const HEADER_ONLY = new Set(['link', 'symlink', 'char', 'block', 'dir', 'fifo']);
function pad(n) {
    return (tar_header_1.BLOCK - (n % tar_header_1.BLOCK)) % tar_header_1.BLOCK;
}
/** Hashing/recording wrapper: everything read passes through here once. */
async function* tap(src, onBytes) {
    for await (const c of src) {
        if (c.length === 0)
            continue;
        onBytes?.(Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length));
        yield c;
    }
}
/** Decodes `LIBARCHIVE.xattr.<urlencoded name>` = base64 value. */
function libarchiveXattr(key, v) {
    let name;
    try {
        name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
    }
    catch {
        throw new errors_1.InvalidArchiveError('malformed LIBARCHIVE.xattr name', key);
    }
    return [name, Buffer.from(v.toString('latin1'), 'base64')];
}
function applyPax(h, pax) {
    for (const [key, v] of pax) {
        switch (key) {
            case 'path':
                if (v.includes(0))
                    throw new errors_1.InvalidArchiveError('NUL byte in PAX path');
                h.name = (0, tar_header_1.utf8)(v, 'PAX path');
                break;
            case 'linkpath':
                if (v.includes(0))
                    throw new errors_1.InvalidArchiveError('NUL byte in PAX linkpath');
                h.linkname = (0, tar_header_1.utf8)(v, 'PAX linkpath');
                break;
            case 'size':
                h.size = (0, tar_header_1.paxInteger)(v, key);
                break;
            case 'uid':
                h.uid = (0, tar_header_1.paxInteger)(v, key);
                break;
            case 'gid':
                h.gid = (0, tar_header_1.paxInteger)(v, key);
                break;
            case 'uname':
                h.uname = (0, tar_header_1.utf8)(v, 'PAX uname');
                break;
            case 'gname':
                h.gname = (0, tar_header_1.utf8)(v, 'PAX gname');
                break;
            case 'mtime':
                [h.mtimeSec, h.mtimeNsec] = (0, tar_header_1.paxTime)(v, key);
                break;
            case 'atime':
                [h.atimeSec, h.atimeNsec] = (0, tar_header_1.paxTime)(v, key);
                break;
            default:
                if (key.startsWith('SCHILY.xattr.')) {
                    const name = key.slice('SCHILY.xattr.'.length);
                    if (name === '')
                        throw new errors_1.InvalidArchiveError('empty xattr name in PAX header');
                    h.xattrs.set(name, v);
                }
                else if (key.startsWith('LIBARCHIVE.xattr.')) {
                    const [name, value] = libarchiveXattr(key, v);
                    if (!h.xattrs.has(name))
                        h.xattrs.set(name, value);
                }
                else if (key.startsWith('GNU.sparse.')) {
                    throw new errors_1.InvalidArchiveError('PAX sparse entries are not supported', h.name);
                }
        }
    }
}
/**
 * Reads a tar archive entry by entry. The generator validates every header; anything malformed, truncated or
 * over a limit throws an {@link InvalidArchiveError}. After the end-of-archive marker the rest of the input is
 * read too (so a hash over `onBytes` covers the whole stream).
 */
async function* readTar(source, opts = {}) {
    const maxMeta = opts.maxMetaSize ?? 1 << 20;
    const maxEntrySize = opts.maxEntrySize ?? Number.MAX_SAFE_INTEGER;
    const maxEntries = opts.maxEntries ?? 10_000_000;
    const seg = opts.onSegment;
    const src = new byte_source_1.ByteSource(tap(source, opts.onBytes));
    let globalPax = null;
    let entries = 0;
    let ended = false;
    try {
        for (;;) {
            // Meta headers (PAX, GNU long names) accumulate until the real entry header.
            let localPax = null;
            let longName = null;
            let longLink = null;
            let raw = null;
            while (raw === null) {
                const block = await src.readExact(tar_header_1.BLOCK, 'header');
                if (block === null) {
                    if (localPax || longName !== null || longLink !== null) {
                        throw new errors_1.InvalidArchiveError('archive ends after an extended header');
                    }
                    ended = true; // no end marker: accepted, as Docker does
                    break;
                }
                seg?.(Buffer.from(block));
                if ((0, tar_header_1.isEndBlock)(block)) {
                    if (localPax || longName !== null || longLink !== null) {
                        throw new errors_1.InvalidArchiveError('end-of-archive marker after an extended header');
                    }
                    ended = true;
                    break;
                }
                const h = (0, tar_header_1.decodeHeader)(block);
                if (h.typeflag === 'pax' || h.typeflag === 'pax-global' || h.typeflag === 'gnu-longname' || h.typeflag === 'gnu-longlink') {
                    if (h.size > maxMeta)
                        throw new errors_1.ArchiveLimitError(`extended header of ${h.size} bytes exceeds the ${maxMeta}-byte limit`);
                    const data = await src.readExact(h.size, 'extended header');
                    if (data === null)
                        throw new errors_1.InvalidArchiveError('unexpected end of archive in extended header');
                    const padding = pad(h.size) > 0 ? await src.readExact(pad(h.size), 'padding') : null;
                    if (pad(h.size) > 0 && padding === null)
                        throw new errors_1.InvalidArchiveError('unexpected end of archive in padding');
                    if (seg) {
                        if (data)
                            seg(Buffer.from(data));
                        if (padding)
                            seg(Buffer.from(padding));
                    }
                    const body = data;
                    if (h.typeflag === 'pax') {
                        localPax ??= new Map();
                        (0, tar_header_1.decodePax)(body, localPax);
                    }
                    else if (h.typeflag === 'pax-global') {
                        globalPax ??= new Map();
                        (0, tar_header_1.decodePax)(body, globalPax);
                    }
                    else {
                        const nul = body.indexOf(0);
                        const bytes = nul >= 0 ? body.subarray(0, nul) : body;
                        const text = (0, tar_header_1.utf8)(bytes, 'GNU long name');
                        if (h.typeflag === 'gnu-longname')
                            longName = text;
                        else
                            longLink = text;
                    }
                    continue;
                }
                if (h.typeflag === 'volume') {
                    // A GNU volume label describes the archive, not a file: skip its body.
                    await skip(src, h.size + pad(h.size), seg);
                    continue;
                }
                raw = h;
            }
            if (raw === null)
                break;
            if (++entries > maxEntries)
                throw new errors_1.ArchiveLimitError(`archive has more than ${maxEntries} entries`);
            const header = {
                name: longName ?? raw.name,
                type: raw.typeflag,
                mode: raw.mode & 0o7777,
                uid: raw.uid,
                gid: raw.gid,
                uname: raw.uname,
                gname: raw.gname,
                size: raw.size,
                mtimeSec: raw.mtime,
                mtimeNsec: 0,
                linkname: longLink ?? raw.linkname,
                devMajor: raw.devMajor,
                devMinor: raw.devMinor,
                xattrs: new Map(),
                pax: new Map(),
            };
            if (globalPax)
                for (const [k, v] of globalPax)
                    header.pax.set(k, v);
            if (localPax)
                for (const [k, v] of localPax)
                    header.pax.set(k, v);
            if (header.pax.size > 0)
                applyPax(header, header.pax);
            if (header.name === '')
                throw new errors_1.InvalidArchiveError('entry with an empty name');
            // Header-only types carry no body whatever their size field says (as Go's archive/tar reads them).
            if (HEADER_ONLY.has(header.type))
                header.size = 0;
            if (header.size > maxEntrySize) {
                throw new errors_1.ArchiveLimitError(`entry of ${header.size} bytes exceeds the ${maxEntrySize}-byte limit`, header.name);
            }
            let remaining = header.size;
            let consumed = false;
            const entry = {
                header,
                async *body() {
                    if (consumed)
                        throw new Error('tar entry body can only be read once');
                    consumed = true;
                    while (remaining > 0) {
                        const chunk = await src.readSome(remaining, `content of ${JSON.stringify(header.name)}`);
                        remaining -= chunk.length;
                        yield chunk;
                    }
                },
            };
            yield entry;
            if (remaining > 0 || !consumed) {
                if (seg)
                    seg(header.size);
                await skip(src, remaining, undefined);
                remaining = 0;
            }
            else if (seg) {
                seg(header.size);
            }
            const p = pad(header.size);
            if (p > 0) {
                const padding = await src.readExact(p, 'padding');
                if (padding === null)
                    throw new errors_1.InvalidArchiveError('unexpected end of archive in padding', header.name);
                seg?.(Buffer.from(padding));
            }
        }
        // Everything after the first end block (the second zero block, padding to the record size, garbage) is
        // kept byte for byte for reconstruction and hashing, but never interpreted.
        if (ended) {
            await src.drain(seg ? (c) => seg(Buffer.from(c)) : undefined);
        }
    }
    finally {
        await src.close();
    }
}
async function skip(src, n, seg) {
    let left = n;
    while (left > 0) {
        const c = await src.readSome(left, 'skipped content');
        seg?.(Buffer.from(c));
        left -= c.length;
    }
}
//# sourceMappingURL=tar-reader.js.map