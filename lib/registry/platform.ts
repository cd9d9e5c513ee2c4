/**
 * Platforms (`os/architecture[/variant]`) in Go's names, as image indexes and configs carry them, and the
 * matching rules used to pick an entry of a manifest list: same OS, same architecture once aliases are
 * normalised (`x86_64` → `amd64`, `aarch64` → `arm64`), and the best variant (exact first; for ARM an older
 * variant the CPU still runs).
 * @module
 */

/** A platform in OCI terms. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** What registry pulls default to: linux/amd64. */
export const DEFAULT_PLATFORM: Readonly<Platform> = Object.freeze({ os: 'linux', architecture: 'amd64' });

const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64',
  'x86-64': 'amd64',
  aarch64: 'arm64',
  armhf: 'arm',
  armel: 'arm',
  i386: '386',
  i686: '386',
  x86: '386',
};

/** Variant implied by Debian-style architecture names. */
const ALIAS_VARIANTS: Record<string, string> = { armhf: 'v7', armel: 'v6', aarch64: 'v8' };

/** Normalises names (lowercase, architecture aliases, `8` → `v8`) so that platforms compare as values. */
export function normalizePlatform(p: Platform): Platform {
  const rawArch = p.architecture.toLowerCase();
  const architecture = ARCH_ALIASES[rawArch] ?? rawArch;
  let variant: string | undefined = p.variant?.toLowerCase() ?? ALIAS_VARIANTS[rawArch];
  if (variant !== undefined && /^\d+$/.test(variant)) variant = `v${variant}`;
  if (variant === '') variant = undefined;
  const out: Platform = { os: p.os.toLowerCase(), architecture };
  if (variant !== undefined) out.variant = variant;
  if (p['os.version'] !== undefined) out['os.version'] = p['os.version'];
  if (p['os.features'] !== undefined) out['os.features'] = p['os.features'];
  return out;
}

/** Parses `os/arch[/variant]` (e.g. `linux/arm64/v8`); TypeError when malformed. */
export function parsePlatform(s: string): Platform {
  const parts = typeof s === 'string' ? s.split('/') : [];
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !/^[A-Za-z0-9_.-]+$/.test(x))) {
    throw new TypeError(`invalid platform ${JSON.stringify(s)}: use os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  }
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2] !== undefined) p.variant = parts[2];
  return normalizePlatform(p);
}

/** `os/arch[/variant]`. */
export function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant !== undefined ? `/${p.variant}` : ''}`;
}

/** Variant an architecture has when none is written (Docker's and containerd's defaults). */
function defaultVariant(arch: string): string | undefined {
  if (arch === 'arm64') return 'v8';
  if (arch === 'arm') return 'v7';
  return undefined;
}

/**
 * How well `candidate` serves `wanted`: null when it cannot run there; otherwise a rank, lower is better (0 for
 * an exact match).
 */
export function platformRank(wanted: Platform, candidate: Platform): number | null {
  const w = normalizePlatform(wanted);
  const c = normalizePlatform(candidate);
  if (w.os !== c.os || w.architecture !== c.architecture) return null;
  const wv = w.variant ?? defaultVariant(w.architecture);
  const cv = c.variant ?? defaultVariant(c.architecture);
  if (wv === cv) return w.variant === undefined && c.variant !== undefined ? 1 : 0;
  if (wv === undefined) return 2; // no variant asked for: any variant of the architecture will do
  if (cv === undefined) return 3;
  // ARM runs code built for older variants of the same architecture: v7 hardware runs v6 and v5 images.
  if (w.architecture === 'arm') {
    const wn = /^v(\d+)$/.exec(wv);
    const cn = /^v(\d+)$/.exec(cv);
    if (wn && cn && Number(cn[1]) < Number(wn[1])) return 10 + (Number(wn[1]) - Number(cn[1]));
  }
  return null;
}
