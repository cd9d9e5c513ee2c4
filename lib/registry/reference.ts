/**
 * Image references as the registry client needs them: the normalised name of the store
 * ({@link parseReference}: `busybox` → `docker.io/library/busybox:latest`) split into the host to connect to, the
 * repository path, and the tag or digest that names the manifest.
 * @module
 */
import { isIP } from 'node:net';

import { DEFAULT_DOMAIN, parseReference, referenceName, type Reference } from '../image/reference';

/** Docker Hub's API endpoint for the `docker.io` domain. */
export const DOCKER_HUB_HOST = 'registry-1.docker.io';

/** A reference resolved for the distribution API. */
export interface RegistryReference {
  /** Registry domain as names carry it: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  domain: string;
  /** `host[:port]` the client connects to (`registry-1.docker.io` for `docker.io`). */
  host: string;
  /** Repository path: `library/busybox`. */
  repository: string;
  /** Normalised name: `docker.io/library/busybox`. */
  name: string;
  /** Tag (`latest` when the reference had neither tag nor digest). */
  tag?: string;
  /** `sha256:` digest, when the reference pins one. */
  digest?: string;
}

/** Parses and normalises a reference (ERR_INVALID_REFERENCE for anything Docker refuses); adds `latest` when no tag or digest is given. */
export function parseRegistryReference(s: string): RegistryReference {
  const r: Reference = parseReference(s);
  const out: RegistryReference = {
    domain: r.domain,
    host: r.domain === DEFAULT_DOMAIN ? DOCKER_HUB_HOST : r.domain,
    repository: r.path,
    name: referenceName(r),
  };
  if (r.tag !== undefined) out.tag = r.tag;
  if (r.digest !== undefined) out.digest = r.digest;
  if (r.tag === undefined && r.digest === undefined) out.tag = 'latest';
  return out;
}

/** What names the manifest in `/v2/<repo>/manifests/<ref>`: the digest when pinned (a tag beside it is informative only), else the tag. */
export function manifestRef(r: RegistryReference): string {
  return r.digest ?? r.tag ?? 'latest';
}

/** `name:tag` or `name@digest` (both when both are given), as the store records references. */
export function registryReferenceString(r: RegistryReference): string {
  return r.name + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

/** The host part of `host[:port]` (brackets of an IPv6 literal removed). */
export function hostName(hostPort: string): string {
  if (isIP(hostPort) === 6) return hostPort; // a bare IPv6 literal has colons but no port
  if (hostPort.startsWith('[')) {
    const end = hostPort.indexOf(']');
    return end === -1 ? hostPort : hostPort.slice(1, end);
  }
  const colon = hostPort.lastIndexOf(':');
  return colon === -1 ? hostPort : hostPort.slice(0, colon);
}

/**
 * Whether `hostPort` names this machine: `localhost` (and `*.localhost`), 127.0.0.0/8 or ::1. Docker lets such
 * registries speak plain HTTP without being declared insecure, since the traffic never leaves the host.
 */
export function isLoopbackHost(hostPort: string): boolean {
  const h = hostName(hostPort).toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h);
  return false;
}
