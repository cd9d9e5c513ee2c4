/**
 * Docker image configurations (the JSON whose sha256 is the image id): parsing, and the configs Docker writes for
 * `docker import` and `docker commit`, serialised the way Docker's Go code does (top-level keys sorted, `<`, `>`,
 * `&` escaped).
 * @module
 */
import * as os from 'node:os';

import { DIGEST_RE, EMPTY_LAYER_DIFF_ID } from '../layer/digest';
import { InvalidImageConfigError } from '../storage/errors';

/** One history entry (OCI image spec / Docker `image.History`). */
export interface HistoryEntry {
  created?: string;
  author?: string;
  created_by?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** The parts of an image config the store interprets; everything else is kept as it is. */
export interface ImageConfig {
  architecture?: string;
  variant?: string;
  os?: string;
  created?: string;
  author?: string;
  comment?: string;
  container?: string;
  docker_version?: string;
  config?: Record<string, unknown>;
  container_config?: Record<string, unknown>;
  history?: HistoryEntry[];
  rootfs: { type: string; diff_ids: string[] };
  'os.version'?: string;
  'os.features'?: string[];
  [key: string]: unknown;
}

/** Go's GOARCH for Node's process.arch. */
export function goArch(arch: string = process.arch): string {
  switch (arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'mipsel':
      return 'mipsle';
    case 'ppc64':
      return os.endianness() === 'LE' ? 'ppc64le' : 'ppc64';
    default:
      // arm, arm64, s390x, riscv64, loong64, mips keep their names.
      return arch;
  }
}

/** The platform variant Docker records for the host (arm: v6/v7/v8), or undefined. */
export function hostVariant(arch: string = process.arch): string | undefined {
  if (arch === 'arm64') return 'v8';
  if (arch === 'arm') {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    return typeof v === 'string' || typeof v === 'number' ? `v${v}` : 'v7';
  }
  return undefined;
}

/** RFC 3339 UTC time with the fractional seconds trimmed, as Go's time.RFC3339Nano writes it. */
export function goTime(d: Date = new Date()): string {
  const iso = d.toISOString(); // 2024-01-02T03:04:05.123Z
  const [whole, frac = ''] = iso.slice(0, -1).split('.');
  const trimmed = frac.replace(/0+$/, '');
  return `${whole}${trimmed === '' ? '' : `.${trimmed}`}Z`;
}

/** JSON.stringify as Go's encoding/json writes it: no spaces, HTML characters and line separators escaped. */
export function goJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Serialises a config with top-level keys sorted (Docker's image.MarshalJSON does the same). */
export function serializeConfig(cfg: ImageConfig): Buffer {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(cfg).sort()) if (cfg[k] !== undefined) sorted[k] = cfg[k];
  return Buffer.from(goJson(sorted), 'utf8');
}

/** Parses and checks an image config: a JSON object with `rootfs.type` 'layers' and sha256 diff_ids. */
export function parseImageConfig(bytes: Buffer | string): ImageConfig {
  let v: unknown;
  try {
    v = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (e) {
    throw new InvalidImageConfigError(`not JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidImageConfigError('not a JSON object');
  const cfg = v as Record<string, unknown>;
  const rootfs = cfg.rootfs as Record<string, unknown> | undefined;
  if (typeof rootfs !== 'object' || rootfs === null) throw new InvalidImageConfigError('missing rootfs');
  if (rootfs.type !== 'layers') throw new InvalidImageConfigError(`unsupported rootfs type ${JSON.stringify(rootfs.type)}`);
  const ids = rootfs.diff_ids ?? [];
  if (!Array.isArray(ids) || !ids.every((d) => typeof d === 'string' && DIGEST_RE.test(d))) {
    throw new InvalidImageConfigError('rootfs.diff_ids must be a list of sha256 digests');
  }
  if (cfg.history !== undefined && !Array.isArray(cfg.history)) throw new InvalidImageConfigError('history must be a list');
  return { ...cfg, rootfs: { ...rootfs, type: 'layers', diff_ids: ids as string[] } } as ImageConfig;
}

/** Options of {@link importConfig}. */
export interface ImportConfigOptions {
  /** Container config (`Cmd`, `Env`, `WorkingDir`, ...) of the image (default `{}`). */
  config?: Record<string, unknown>;
  /** Comment (Docker's `docker import -m`). */
  message?: string;
  /** Creation time (default now). */
  created?: Date;
  /** Platform (default: the host's, in Go's names). */
  architecture?: string;
  variant?: string;
  os?: string;
}

/** The config of a one-layer imported image, as `docker import` writes it. */
export function importConfig(diffId: string, o: ImportConfigOptions = {}): ImageConfig {
  const created = goTime(o.created);
  const history: HistoryEntry = { created, created_by: 'graphdriver import' };
  if (o.message) history.comment = o.message;
  const variant = o.variant ?? (o.architecture === undefined ? hostVariant() : undefined);
  const cfg: ImageConfig = {
    architecture: o.architecture ?? goArch(),
    os: o.os ?? 'linux',
    created,
    config: o.config ?? {},
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [history],
  };
  if (variant !== undefined) cfg.variant = variant;
  if (o.message) cfg.comment = o.message;
  return cfg;
}

/** What a commit adds to the parent's config. */
export interface ChildConfigOptions {
  /** diffID of the committed layer (an empty layer adds no rootfs entry, as Docker). */
  diffId: string;
  /** Id of the committed container. */
  containerId: string;
  /** History `created_by` (default 'graphdriver commit'). */
  createdBy?: string;
  /** Commit message: the history entry's `comment` (Docker's `docker commit -m`). */
  comment?: string;
  author?: string;
  /** New container config (default: the parent's). */
  config?: Record<string, unknown>;
  created?: Date;
}

/** The config of a committed image, as Docker's image.NewChildImage builds it from the parent's. */
export function childConfig(parent: ImageConfig, o: ChildConfigOptions): ImageConfig {
  const created = goTime(o.created);
  const empty = o.diffId === EMPTY_LAYER_DIFF_ID;
  const history: HistoryEntry = { created };
  if (o.author) history.author = o.author;
  history.created_by = o.createdBy ?? 'graphdriver commit';
  if (o.comment) history.comment = o.comment;
  if (empty) history.empty_layer = true;
  const config = o.config ?? parent.config ?? {};
  const cfg: ImageConfig = {
    architecture: parent.architecture ?? goArch(),
    os: parent.os ?? 'linux',
    created,
    container: o.containerId,
    container_config: config,
    config,
    rootfs: { type: 'layers', diff_ids: empty ? [...parent.rootfs.diff_ids] : [...parent.rootfs.diff_ids, o.diffId] },
    history: [...(parent.history ?? []), history],
  };
  if (parent.variant !== undefined) cfg.variant = parent.variant;
  if (o.author) cfg.author = o.author;
  if (parent['os.version'] !== undefined) cfg['os.version'] = parent['os.version'];
  if (parent['os.features'] !== undefined) cfg['os.features'] = parent['os.features'];
  return cfg;
}
