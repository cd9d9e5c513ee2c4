/**
 * Image references as Docker parses and normalises them (distribution/reference): `name[:tag][@digest]`, where a
 * name without a registry domain lives on `docker.io` and a single-component Docker Hub name under `library/`:
 * `busybox` → `docker.io/library/busybox:latest`.
 * @module
 */
import { InvalidReferenceError } from '../storage/errors';

const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const ANY_DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;
const NAME_TOTAL_LENGTH_MAX = 255;

/** Docker Hub's canonical domain. */
export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';

/** A parsed, normalised reference. */
export interface Reference {
  /** Registry host[:port], e.g. `docker.io`. */
  domain: string;
  /** Repository path, e.g. `library/busybox`. */
  path: string;
  /** Tag, when given. */
  tag?: string;
  /** `sha256:` digest, when given. */
  digest?: string;
}

/** Splits the registry domain off a name, Docker's rules (a first component with '.' or ':', or 'localhost'). */
function splitDomain(name: string): [string, string] {
  const i = name.indexOf('/');
  let domain: string;
  let rest: string;
  const first = i === -1 ? '' : name.slice(0, i);
  if (i === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    rest = name;
  } else {
    domain = first;
    rest = name.slice(i + 1);
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !rest.includes('/')) rest = OFFICIAL_REPO_PREFIX + rest;
  return [domain, rest];
}

/**
 * Parses and normalises a reference (Docker's ParseNormalizedNamed). Throws {@link InvalidReferenceError}
 * (ERR_INVALID_REFERENCE) for anything Docker would refuse, including a bare 64-hex string (an image id, not a
 * name) and digests other than sha256.
 */
export function parseReference(s: string): Reference {
  if (typeof s !== 'string') throw new InvalidReferenceError(String(s), 'not a string');
  if (s === '') throw new InvalidReferenceError(s, 'empty reference');
  if (s.length > 4096) throw new InvalidReferenceError(s, 'too long');
  if (HEX64_RE.test(s)) throw new InvalidReferenceError(s, 'cannot specify 64-byte hexadecimal strings as a repository name');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!ANY_DIGEST_RE.test(digest)) throw new InvalidReferenceError(s, 'invalid digest');
    if (!DIGEST_RE.test(digest)) throw new InvalidReferenceError(s, 'unsupported digest (only sha256 with 64 lowercase hex digits)');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw new InvalidReferenceError(s, 'invalid tag');
  }
  if (rest === '') throw new InvalidReferenceError(s, 'missing repository name');
  const [domain, repoPath] = splitDomain(rest);
  if (repoPath.toLowerCase() !== repoPath) throw new InvalidReferenceError(s, 'repository name must be lowercase');
  if (!DOMAIN_RE.test(domain)) throw new InvalidReferenceError(s, 'invalid registry domain');
  if (!PATH_RE.test(repoPath)) throw new InvalidReferenceError(s, 'invalid repository name');
  if (domain.length + 1 + repoPath.length > NAME_TOTAL_LENGTH_MAX) {
    throw new InvalidReferenceError(s, `repository name must not be longer than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }
  const ref: Reference = { domain, path: repoPath };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `domain/path` of a reference. */
export function referenceName(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

/** Fully qualified string: `docker.io/library/busybox:latest`, `host:5000/x/y@sha256:...`. */
export function referenceString(r: Reference): string {
  return referenceName(r) + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

/** Adds the `latest` tag to a reference that has neither tag nor digest (Docker's TagNameOnly). */
export function withDefaultTag(r: Reference): Reference {
  return r.tag === undefined && r.digest === undefined ? { ...r, tag: 'latest' } : r;
}

/** Keeps only the digest of a reference that has both a tag and a digest, as Docker stores them. */
export function favorDigest(r: Reference): Reference {
  if (r.digest !== undefined && r.tag !== undefined) return { domain: r.domain, path: r.path, digest: r.digest };
  return r;
}

/** The short name Docker shows: `busybox` for docker.io/library/busybox, `user/app` for docker.io/user/app. */
export function familiarName(r: Reference): string {
  if (r.domain !== DEFAULT_DOMAIN) return referenceName(r);
  const p = r.path;
  if (p.startsWith(OFFICIAL_REPO_PREFIX) && !p.slice(OFFICIAL_REPO_PREFIX.length).includes('/')) return p.slice(OFFICIAL_REPO_PREFIX.length);
  return p;
}

/** `busybox:latest`, as Docker writes references in repositories.json and shows them. */
export function familiarString(r: Reference): string {
  return familiarName(r) + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

/**
 * The canonical form used as a key in the store: normalised, `latest` added when there is no tag or digest,
 * and a tag dropped when a digest is given.
 */
export function normalizeReference(s: string): string {
  return referenceString(favorDigest(withDefaultTag(parseReference(s))));
}
