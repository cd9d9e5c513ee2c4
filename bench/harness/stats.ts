/** Small statistics used by every benchmark table: medians with their spread, and ratios of medians. */

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Summary of one operation's timed runs (warm-up excluded). */
export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}

/** Summarises a list of samples. */
export function summarize(xs: readonly number[]): Summary {
  return { n: xs.length, median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** Milliseconds since `t0` (a process.hrtime.bigint() value). */
export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Human duration: ms below one second, seconds above. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** `median (min–max)` of a summary. */
export function fmtSummary(s: Summary | undefined): string {
  if (!s) return '-';
  return `${fmtMs(s.median)} (${fmtMs(s.min)}–${fmtMs(s.max)})`;
}
