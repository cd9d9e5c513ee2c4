/**
 * Whiteout names and the overlay encodings, per the OCI image spec and Docker's aufs heritage.
 * @module
 */

/** Prefix of a whiteout file: `.wh.<name>` deletes `<name>` from lower layers. */
export const WHITEOUT_PREFIX = '.wh.';
/** Prefix of aufs metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, ...), skipped at the layer root. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** Marks its directory opaque: nothing from lower layers shows through. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** aufs hardlink directory: regular files in it can be targets of hardlinks elsewhere in the layer. */
export const WHITEOUT_LINK_DIR = '.wh..wh.plnk';
/** xattr overlayfs reads to treat a directory as opaque. */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** Same, for overlay mounted with `userxattr` (rootless). */
export const OVERLAY_OPAQUE_USER_XATTR = 'user.overlay.opaque';
/** Prefix of every xattr overlayfs interprets; never taken from an archive. */
export const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
