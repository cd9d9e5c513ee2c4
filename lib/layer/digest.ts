/**
 * Content digests and OCI chain ids.
 * @module
 */
import { createHash } from 'node:crypto';

import { InvalidStoreIdError } from '../storage/errors';

/** `sha256:<64 lowercase hex>`. */
export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** 64 lowercase hex characters. */
export const HEX64_RE = /^[0-9a-f]{64}$/;

/** diffID of an empty layer (a tar of just the two end blocks); Docker adds no rootfs entry for it on commit. */
export const EMPTY_LAYER_DIFF_ID = 'sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef';

/** `sha256:` + hex sha256 of `data`. */
export function sha256Digest(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Whether `s` is a `sha256:<hex>` digest. */
export function isDigest(s: unknown): s is string {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

/** Throws ERR_INVALID_ID unless `s` is a `sha256:<hex>` digest; returns it. */
export function checkDigest(s: unknown, kind: string): string {
  if (!isDigest(s)) throw new InvalidStoreIdError(kind, s);
  return s;
}

/** Accepts `sha256:<hex>` or bare `<hex>` and returns the `sha256:` form (ERR_INVALID_ID otherwise). */
export function normalizeDigest(s: unknown, kind: string): string {
  if (typeof s === 'string' && HEX64_RE.test(s)) return `sha256:${s}`;
  return checkDigest(s, kind);
}

/** The hex part of a digest. */
export function digestHex(d: string): string {
  return d.slice('sha256:'.length);
}

/** OCI chain id of a layer with `diffId` on a parent chain: chainID(L0) = diffID, else sha256(parent + " " + diffID). */
export function chainIdOf(parentChainId: string | null, diffId: string): string {
  if (parentChainId === null) return diffId;
  return sha256Digest(`${parentChainId} ${diffId}`);
}

/** Chain ids of every layer of a stack of diffIDs, bottom first. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let parent: string | null = null;
  for (const d of diffIds) {
    parent = chainIdOf(parent, d);
    out.push(parent);
  }
  return out;
}
