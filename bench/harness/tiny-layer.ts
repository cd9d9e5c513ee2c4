/** Tiny generated layers for deep-chain benchmarks. */

/** A tiny layer tar (one file) for deep chains; generated in memory. */
export function tinyLayer(i: number): Buffer {
  const name = `layer/f${i}`;
  const body = Buffer.from(`layer ${i}\n`);
  const hdr = Buffer.alloc(512);
  const put = (s: string, off: number, len: number): void => void hdr.write(s.slice(0, len), off, 'ascii');
  const oct = (n: number, len: number): string => n.toString(8).padStart(len - 1, '0') + '\0';
  put(name, 0, 100);
  put(oct(0o644, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(body.length, 12), 124, 12);
  put(oct(1700000000, 12), 136, 12);
  hdr.write('        ', 148, 'ascii');
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of hdr) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([hdr, body, pad, Buffer.alloc(1024)]);
}

