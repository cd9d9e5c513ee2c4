/**
 * tar-split records without a driver: CRC-64/ISO against Go's values, the record format (Docker's JSON lines),
 * and exact re-creation of tars with PAX headers, GNU long names, odd padding and trailing bytes from the record
 * plus an in-memory file set; changed or missing files fail with ERR_DIGEST_MISMATCH.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { cleanEntryPath } from '../../lib/archive/entry-path';
import { readTar } from '../../lib/archive/tar-reader';
import { crc64, Crc64 } from '../../lib/archive/crc64';
import { makeHasher, noHash } from '../../lib/archive/stream-hash';
import { loadBindings } from '../../lib/native/bindings';
import { releasingStream, verifyDiffId } from '../../lib/layer/tar-export';
import { assembleTar, readTarSplit, TarSplitRecorder, tarSplitSize, type LayerFiles } from '../../lib/layer/tar-split';
import { buildTar, chunked, fixChecksum } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Records a tar, fed in chunks of `chunk` bytes, the file checksums computed as the layer store does: by a
 * stream hasher (the JavaScript one by default; the addon's on the thread pool with `pool`).
 */
async function record(tar: Buffer, chunk = 4096, pool = false): Promise<Buffer> {
  const r = new TarSplitRecorder();
  const h = pool ? await makeHasher(loadBindings()) : noHash();
  for await (const c of chunked(tar, chunk)) {
    const b = Buffer.from(c);
    const ranges = r.write(b);
    const w = h.update(b, undefined, ranges, (crcs) => r.addCrcs(crcs));
    if (w) await w;
  }
  r.end();
  await h.digest();
  return r.result();
}

/** The file bodies of a tar, by cleaned path (last one wins, as when applied). */
async function bodies(tar: Buffer): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for await (const e of readTar(Readable.from([tar]))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    if (e.header.type === 'file') m.set(cleanEntryPath(e.header.name, 1000), Buffer.concat(parts));
  }
  return m;
}

function memFiles(m: Map<string, Buffer>): LayerFiles {
  const get = (name: string): Buffer => {
    const b = m.get(name);
    if (b === undefined) throw Object.assign(new Error(`ENOENT: ${name}`), { code: 'ENOENT' });
    return b;
  };
  return {
    readAll: async (name, size) => get(name).subarray(0, size),
    async *stream(name, size) {
      const b = get(name).subarray(0, size);
      for (let i = 0; i < b.length; i += 1000) yield b.subarray(i, i + 1000);
    },
  };
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

/** A GNU long-name entry (typeflag L) followed by the real header, as GNU tar writes names over 100 bytes. */
function gnuLongName(name: string, data: string): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const meta = Buffer.alloc(512);
  meta.write('././@LongLink', 0, 'latin1');
  meta.write('0000644\0', 100, 'latin1');
  meta.write('0000000\0', 108, 'latin1');
  meta.write('0000000\0', 116, 'latin1');
  meta.write(nameBytes.length.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  meta.write('00000000000\0', 136, 'latin1');
  meta.write('L', 156, 'latin1');
  meta.write('ustar  \0', 257, 'latin1');
  fixChecksum(meta);
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'latin1');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(Buffer.byteLength(data).toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('14533751000\0', 136, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar  \0', 257, 'latin1');
  fixChecksum(h);
  const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);
  return Buffer.concat([meta, nameBytes, pad(nameBytes.length), h, Buffer.from(data), pad(Buffer.byteLength(data))]);
}

const longDir = `${'d'.repeat(120)}/${'e'.repeat(120)}`;
const FIXTURES: Record<string, () => Buffer> = {
  plain: () =>
    buildTar([
      { name: 'etc/', type: 'dir' },
      { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
      { name: 'empty', data: '' },
      { name: 'big', data: Buffer.alloc(3 * 1024 * 1024 + 17, 7) },
      { name: 'link', type: 'link', linkname: 'etc/passwd' },
      { name: 'sym', type: 'symlink', linkname: '/etc/passwd' },
    ]),
  'pax headers (long and non-ASCII names, xattrs)': () =>
    buildTar([
      { name: `${longDir}/`, type: 'dir' },
      { name: `${longDir}/${'f'.repeat(150)}`, data: 'long' },
      { name: 'ünïcødé/', type: 'dir' },
      { name: 'ünïcødé/файл', data: 'utf-8 name' },
      { name: 'cap', data: 'x', xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0]) } },
    ]),
  'GNU long names': () => Buffer.concat([gnuLongName(`${'g'.repeat(150)}/${'h'.repeat(50)}`, 'gnu long'), gnuLongName('x'.repeat(101), ''), Buffer.alloc(1024)]),
  'odd padding: record size 10240 and garbage after the end marker': () => {
    const t = buildTar([{ name: 'a', data: 'aaa' }]);
    const rec = Buffer.concat([t, Buffer.alloc(10240 - (t.length % 10240))]);
    return Buffer.concat([rec, Buffer.from('trailing garbage that is not a tar')]);
  },
  'a 9 MiB trailer after the end marker (recorded in 1 MiB segments, never all in memory)': () =>
    Buffer.concat([buildTar([{ name: 'a', data: 'aaa' }]), Buffer.alloc(9 << 20, 0), Buffer.from('tail')]),
  'no end marker': () => buildTar([{ name: 'a', data: 'aaa' }, { name: 'b', data: 'bb' }], { end: false }),
  'header-only types with a size field': () => {
    const t = buildTar([{ name: 'd/', type: 'dir' }]);
    // A directory header claiming 5 bytes: readers ignore the size (no body follows).
    t.write('00000000005\0', 124, 'latin1');
    fixChecksum(t.subarray(0, 512));
    return t;
  },
};

describe('crc64 (ISO, as Go)', () => {
  test('check value of "123456789" and the empty string', () => {
    expect(crc64(Buffer.from('123456789')).toString('hex')).toBe('b90956c775a41001');
    expect(crc64(Buffer.alloc(0)).toString('hex')).toBe('0000000000000000');
  });

  test('incremental updates at odd boundaries equal one update', () => {
    const data = Buffer.alloc(100_003);
    for (let i = 0; i < data.length; i++) data[i] = (i * 131 + (i >> 7)) & 0xff;
    const whole = crc64(data);
    for (const step of [1, 7, 8, 9, 4096, 65_537]) {
      const c = new Crc64();
      for (let i = 0; i < data.length; i += step) c.update(data.subarray(i, i + step));
      expect(c.digest()).toEqual(whole);
    }
  });
});

describe('tar-split record', () => {
  let tmp: string;
  beforeEach(() => (tmp = makeTmp('gd-tarsplit-')));
  afterEach(() => removeTmp(tmp));

  test('is Docker’s JSON-lines format, gzip-compressed, positions from 0', async () => {
    const tar = buildTar([
      { name: 'dir/', type: 'dir' },
      { name: 'dir/file', data: 'hello' },
      { name: 'dir/empty' },
    ]);
    const lines = zlib.gunzipSync(await record(tar)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.position)).toEqual(lines.map((_, i) => i));
    expect(lines[0]).toEqual({ type: 2, payload: tar.subarray(0, 512).toString('base64'), position: 0 });
    expect(lines[1]).toEqual({ type: 1, name: 'dir/', payload: null, position: 1 });
    expect(lines[2]).toEqual({ type: 2, payload: tar.subarray(512, 1024).toString('base64'), position: 2 });
    expect(lines[3]).toEqual({ type: 1, name: 'dir/file', size: 5, payload: crc64(Buffer.from('hello')).toString('base64'), position: 3 });
    // A body's padding goes with the next entry's header, as tar-split cuts it...
    expect(lines[4]).toEqual({ type: 2, payload: tar.subarray(1024 + 5, 2048).toString('base64'), position: 4 });
    expect(lines[5]).toEqual({ type: 1, name: 'dir/empty', payload: null, position: 5 });
    // ...and the end: the end marker (with the last padding), then the empty segment of tar-split's last read.
    expect(lines.slice(6)).toEqual([
      { type: 2, payload: Buffer.alloc(1024).toString('base64'), position: 6 },
      { type: 2, payload: '', position: 7 },
    ]);
    const text = zlib.gunzipSync(await record(tar)).toString('utf8');
    expect(text.split('\n')[3]).toBe(`{"type":1,"name":"dir/file","size":5,"payload":"${crc64(Buffer.from('hello')).toString('base64')}","position":3}`);
  });

  for (const [name, make] of Object.entries(FIXTURES)) {
    test(`re-creates byte for byte: ${name}`, async () => {
      const tar = make();
      for (const chunk of [1 << 16, 511, 3]) {
        if (chunk === 3 && tar.length > 1 << 20) continue;
        const file = path.join(tmp, `split-${chunk}.json.gz`);
        fs.writeFileSync(file, await record(tar, chunk));
        expect(await tarSplitSize(file)).toBe(tar.length);
        const out = await collect(assembleTar(readTarSplit(file), memFiles(await bodies(tar)), { prefetchSize: 4096, prefetchCount: 3 }));
        expect(out.length).toBe(tar.length);
        expect(sha(out)).toBe(sha(tar));
      }
    });
  }

  test('a changed, truncated or missing file fails with ERR_DIGEST_MISMATCH', async () => {
    const tar = buildTar([
      { name: 'small', data: 'small file' },
      { name: 'large', data: Buffer.alloc(10_000, 1) },
    ]);
    const file = path.join(tmp, 'split.json.gz');
    fs.writeFileSync(file, await record(tar));
    for (const [k, v] of [
      ['small', Buffer.from('SMALL FILE')],
      ['large', Buffer.alloc(10_000, 2)],
      ['large', Buffer.alloc(9_000, 1)],
    ] as const) {
      const files = await bodies(tar);
      files.set(k, v);
      await expect(collect(assembleTar(readTarSplit(file), memFiles(files), { prefetchSize: 5000 }))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    }
    const files = await bodies(tar);
    files.delete('small');
    await expect(collect(assembleTar(readTarSplit(file), memFiles(files)))).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
  });

  test('a record that is not gzip, not JSON or out of order fails with ERR_STORE_CORRUPT', async () => {
    const file = path.join(tmp, 'bad.json.gz');
    for (const content of [
      Buffer.from('not gzip at all'),
      zlib.gzipSync('{"type":2,"payload":"AAAA","position":0}\nnot json\n'),
      zlib.gzipSync('{"type":2,"payload":"AAAA","position":1}\n'),
      zlib.gzipSync('{"type":7,"position":0}\n'),
      zlib.gzipSync('{"type":1,"name":"a","size":3,"payload":null,"position":0}\n'),
    ]) {
      fs.writeFileSync(file, content);
      await expect(collect(assembleTar(readTarSplit(file), memFiles(new Map())))).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT' });
    }
  });

  test('a stream the tar reader refuses makes result() reject, and nothing waits forever', async () => {
    const r = new TarSplitRecorder();
    r.write(Buffer.alloc(512, 0x41));
    r.end();
    await expect(r.result()).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    const a = new TarSplitRecorder();
    a.write(buildTar([{ name: 'a', data: 'x' }]));
    a.abort();
    await expect(a.result()).rejects.toThrow(/aborted/);
  });

  test('checksums from the thread pool match the JavaScript ones, bodies spanning many chunks', async () => {
    const tar = buildTar([
      { name: 'big', data: Buffer.alloc(3 << 20, 3) },
      { name: 'empty', data: '' },
      { name: 'small', data: 'x'.repeat(700) },
      { name: 'dir/', type: 'dir' },
      { name: 'odd', data: Buffer.alloc(100_001, 7) },
    ]);
    for (const size of [1, 511, 512, 4096, 65_537, 1 << 20]) {
      if (size === 1 && tar.length > 1 << 20) continue; // one-byte chunks of megabytes take too long
      expect(await record(tar, size, true)).toEqual(await record(tar, size, false));
    }
  });

  test('a body piece the hash never saw makes result() reject instead of recording a wrong checksum', async () => {
    const r = new TarSplitRecorder();
    const ranges = r.write(buildTar([{ name: 'a', data: 'abc' }]));
    expect(ranges).not.toBeNull();
    r.end();
    await expect(r.result()).rejects.toThrow(/checksums missing/);
  });
});

describe('verified, releasing stream', () => {
  test('passes a matching stream and releases once at the end', async () => {
    const data = [Buffer.from('abc'), Buffer.from('def')];
    const release = jest.fn(async () => undefined);
    const s = releasingStream(verifyDiffId(Readable.from(data), sha(Buffer.concat(data)), 'x')[Symbol.asyncIterator](), release);
    const parts: Buffer[] = [];
    for await (const c of s) parts.push(c as Buffer);
    expect(Buffer.concat(parts).toString()).toBe('abcdef');
    expect(release).toHaveBeenCalledTimes(1);
  });

  test('a wrong digest fails before the last chunk is delivered', async () => {
    const release = jest.fn(async () => undefined);
    const s = releasingStream(verifyDiffId(Readable.from([Buffer.from('abc'), Buffer.from('def')]), sha(Buffer.from('other')), 'x')[Symbol.asyncIterator](), release);
    const parts: Buffer[] = [];
    await expect(
      (async () => {
        for await (const c of s) parts.push(c as Buffer);
      })(),
    ).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect(Buffer.concat(parts).toString()).toBe('abc');
    expect(release).toHaveBeenCalledTimes(1);
  });

  test('destroyed before the first read, it still releases (once)', async () => {
    const release = jest.fn(async () => undefined);
    async function* gen(): AsyncGenerator<Buffer> {
      yield Buffer.from('x');
    }
    const s = releasingStream(gen(), release);
    s.destroy();
    await new Promise((r) => s.once('close', r));
    expect(release).toHaveBeenCalledTimes(1);
  });
});
