/**
 * Sizes as Docker prints them in `docker info` (go-units HumanSize): decimal units, four significant digits,
 * no space: 65536 -> "65.54kB", 10737418240 -> "10.74GB".
 * @module
 */

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'] as const;

/** go-units HumanSizeWithPrecision(size, 4). */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < UNITS.length - 1) {
    size /= 1000;
    i++;
  }
  // Go's %.4g drops trailing zeros, as Number(...).toString() does.
  return `${Number(size.toPrecision(4))}${UNITS[i]}`;
}
