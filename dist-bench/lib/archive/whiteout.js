"use strict";
/**
 * Whiteout names and the overlay encodings, per the OCI image spec and Docker's aufs heritage.
 * @module
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.OVERLAY_XATTR_PREFIX = exports.OVERLAY_OPAQUE_USER_XATTR = exports.OVERLAY_OPAQUE_XATTR = exports.WHITEOUT_LINK_DIR = exports.WHITEOUT_OPAQUE = exports.WHITEOUT_META_PREFIX = exports.WHITEOUT_PREFIX = void 0;
/** Prefix of a whiteout file: `.wh.<name>` deletes `<name>` from lower layers. */
exports.WHITEOUT_PREFIX = '.wh.';
/** Prefix of aufs metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, ...), skipped at the layer root. */
exports.WHITEOUT_META_PREFIX = '.wh..wh.';
/** Marks its directory opaque: nothing from lower layers shows through. */
exports.WHITEOUT_OPAQUE = '.wh..wh..opq';
/** aufs hardlink directory: regular files in it can be targets of hardlinks elsewhere in the layer. */
exports.WHITEOUT_LINK_DIR = '.wh..wh.plnk';
/** xattr overlayfs reads to treat a directory as opaque. */
exports.OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** Same, for overlay mounted with `userxattr` (rootless). */
exports.OVERLAY_OPAQUE_USER_XATTR = 'user.overlay.opaque';
/** Prefix of every xattr overlayfs interprets; never taken from an archive. */
exports.OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
//# sourceMappingURL=whiteout.js.map