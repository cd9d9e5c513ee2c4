/**
 * The native sha256 stream with CRC-64 ranges (native/sha256.cc, native/crc64.h): the CRCs of tar-split records.
 * The native CRC folds 64-byte blocks with carry-less multiplies where the CPU has them and uses tables
 * otherwise; both must give Go's crc64.ISO checksum, which lib/archive/crc64.ts computes bit-exactly in
 * JavaScript. Lengths around every block boundary, misaligned starts, checksums split over ranges and updates.
 */
import { createHash, randomBytes } from 'node:crypto';

import { Crc64 } from '../../lib/archive/crc64';
import { loadBindings } from '../../lib/native/bindings';
import { CRC_RANGE_END, CRC_RANGE_START } from '../../lib/native/types';

const b = loadBindings();

function jsCrc(buf: Buffer): string {
  const c = new Crc64();
  c.update(buf);
  return c.digest().toString('hex');
}

describe('native sha256 with CRC-64 ranges', () => {
  const lengths = [0, 1, 8, 15, 16, 17, 63, 64, 65, 127, 128, 129, 143, 191, 192, 200, 255, 256, 257, 511, 4096, 65_537, 1 << 20, (1 << 20) + 13];

  it.each(lengths)('one range of %i bytes at any alignment matches Go crc64.ISO', async (len) => {
    for (const off of [0, 1, 7, 13]) {
      const buf = randomBytes(off + len + 5);
      const s = await b.createSha256();
      const crcs = await s.update(buf, Uint32Array.from([off, len, CRC_RANGE_START | CRC_RANGE_END]));
      expect([len, off, crcs.toString('hex')]).toEqual([len, off, jsCrc(buf.subarray(off, off + len))]);
      // The sha256 of the whole chunk is unaffected by the ranges.
      expect(await s.digest()).toBe(createHash('sha256').update(buf).digest('hex'));
    }
  });

  it('a checksum split over ranges and over updates equals the one-piece checksum', async () => {
    for (const len of [130, 1000, 300_001]) {
      const body = randomBytes(len);
      const want = jsCrc(body);
      for (const cuts of [[1], [64, 65], [17, 200 % len, len - 3]]) {
        const points = [0, ...cuts.filter((c) => c > 0 && c < len).sort((x, y) => x - y), len];
        // Each piece in its own update (as a body spans chunks), the first with START, the last with END.
        const s = await b.createSha256();
        const out: Buffer[] = [];
        for (let i = 0; i + 1 < points.length; i++) {
          const piece = body.subarray(points[i], points[i + 1]);
          const flags = (i === 0 ? CRC_RANGE_START : 0) | (i + 2 === points.length ? CRC_RANGE_END : 0);
          out.push(await s.update(piece, Uint32Array.from([0, piece.length, flags])));
        }
        expect([len, cuts, Buffer.concat(out).toString('hex')]).toEqual([len, cuts, want]);
      }
    }
  });

  it('many bodies in one chunk give one checksum each, in order', async () => {
    const sizes = [0, 5, 64, 128, 4000, 129, 70_000, 1];
    const chunk = randomBytes(sizes.reduce((a, x) => a + x + 3, 0));
    const ranges: number[] = [];
    const want: string[] = [];
    let off = 0;
    for (const n of sizes) {
      off += 3; // bytes between bodies (headers) are not checksummed
      ranges.push(off, n, CRC_RANGE_START | CRC_RANGE_END);
      want.push(jsCrc(chunk.subarray(off, off + n)));
      off += n;
    }
    const s = await b.createSha256();
    const got = await s.update(chunk, Uint32Array.from(ranges));
    expect(got.length).toBe(8 * sizes.length);
    expect(sizes.map((_, i) => got.subarray(8 * i, 8 * i + 8).toString('hex'))).toEqual(want);
  });
});
