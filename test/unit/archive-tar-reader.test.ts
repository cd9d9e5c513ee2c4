import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import * as tarStream from 'tar-stream';

import { InvalidArchiveError } from '../../lib/errors';
import { readTar, type TarHeader } from '../../lib/archive/tar-reader';
import { paxRecord } from '../../lib/archive/tar-writer';
import { buildTar, chunked, fixChecksum, once } from '../support/tar-builder';

async function readAll(src: AsyncIterable<Uint8Array>, opts = {}): Promise<Array<{ h: TarHeader; data: Buffer }>> {
  const out: Array<{ h: TarHeader; data: Buffer }> = [];
  for await (const e of readTar(src, opts)) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    out.push({ h: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

describe('readTar on archives from our writer', () => {
  const tar = buildTar([
    { name: 'etc', type: 'dir', mode: 0o755 },
    { name: 'etc/hosts', data: 'localhost\n', uid: 1000, gid: 1001, mode: 0o4755 },
    { name: 'bin/ping', data: 'ELF', xattrs: { 'security.capability': CAP, 'user.ä': Buffer.from([0, 1, 2, 255]) } },
    { name: 'a/'.repeat(80) + 'deep-file-name-that-is-long', data: 'x' },
    { name: 'ünïcode/naïve', data: 'u' },
    { name: 'link', type: 'symlink', linkname: '/etc/hosts' },
    { name: 'hard', type: 'link', linkname: 'etc/hosts' },
    { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
    { name: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0 },
    { name: 'fifo', type: 'fifo' },
    { name: 'big-uid', data: '', uid: 3_000_000, gid: 0o7777777 + 1 },
  ]);

  it.each([
    ['one chunk', () => once(tar)],
    ['7-byte chunks', () => chunked(tar, 7)],
    ['513-byte chunks', () => chunked(tar, 513)],
  ])('decodes every entry type and field (%s)', async (_n, src) => {
    const got = await readAll(src());
    expect(got.map((e) => [e.h.name, e.h.type])).toEqual([
      ['etc/', 'dir'],
      ['etc/hosts', 'file'],
      ['bin/ping', 'file'],
      ['a/'.repeat(80) + 'deep-file-name-that-is-long', 'file'],
      ['ünïcode/naïve', 'file'],
      ['link', 'symlink'],
      ['hard', 'link'],
      ['dev/null', 'char'],
      ['dev/sda', 'block'],
      ['fifo', 'fifo'],
      ['big-uid', 'file'],
    ]);
    const hosts = got[1]!;
    expect(hosts.data.toString()).toBe('localhost\n');
    expect([hosts.h.uid, hosts.h.gid, hosts.h.mode, hosts.h.mtimeSec]).toEqual([1000, 1001, 0o4755, 1700000000]);
    expect(got[2]!.h.xattrs.get('security.capability')).toEqual(CAP);
    expect(got[2]!.h.xattrs.get('user.ä')).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(got[5]!.h.linkname).toBe('/etc/hosts');
    expect(got[6]!.h.linkname).toBe('etc/hosts');
    expect([got[7]!.h.devMajor, got[7]!.h.devMinor]).toEqual([1, 3]);
    expect([got[10]!.h.uid, got[10]!.h.gid]).toEqual([3_000_000, 0o7777777 + 1]);
  });

  it('feeds every input byte to onBytes and every segment to onSegment (reconstructs the archive)', async () => {
    const seen: Buffer[] = [];
    const segs: Array<Buffer | number> = [];
    const bodies: Buffer[] = [];
    for await (const e of readTar(chunked(tar, 100), { onBytes: (c) => seen.push(Buffer.from(c)), onSegment: (s) => segs.push(typeof s === 'number' ? s : Buffer.from(s)) })) {
      for await (const c of e.body()) bodies.push(Buffer.from(c));
    }
    expect(Buffer.concat(seen)).toEqual(tar);
    let bi = Buffer.concat(bodies);
    const rebuilt: Buffer[] = [];
    for (const s of segs) {
      if (typeof s === 'number') {
        rebuilt.push(bi.subarray(0, s));
        bi = bi.subarray(s);
      } else rebuilt.push(s);
    }
    expect(Buffer.concat(rebuilt)).toEqual(tar);
  });

  it('skips bodies the consumer does not read', async () => {
    const names: string[] = [];
    for await (const e of readTar(once(tar))) names.push(e.header.name);
    expect(names).toHaveLength(11);
  });
});

describe('readTar on archives from other writers', () => {
  it('reads tar-stream output with GNU-style long names and PAX', async () => {
    const pack = tarStream.pack();
    const long = 'x'.repeat(150) + '/' + 'y'.repeat(120);
    pack.entry({ name: long, mtime: new Date(1600000000000) }, 'hello');
    pack.entry({ name: 'd', type: 'directory', mode: 0o1777 });
    pack.finalize();
    const got = await readAll(pack as unknown as AsyncIterable<Uint8Array>);
    expect(got[0]!.h.name).toBe(long);
    expect(got[0]!.data.toString()).toBe('hello');
    expect(got[1]!.h.type).toBe('dir');
    expect(got[1]!.h.mode).toBe(0o1777);
  });

  it('reads GNU tar --format=gnu and --format=posix archives with xattrs and nanosecond times', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-tar-'));
    try {
      const src = path.join(dir, 'src');
      fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
      fs.writeFileSync(path.join(src, 'sub', 'f'), 'content');
      fs.symlinkSync('sub/f', path.join(src, 'l'));
      fs.utimesSync(path.join(src, 'sub', 'f'), 1600000000.5, 1600000000.25);
      for (const format of ['gnu', 'posix']) {
        const out = path.join(dir, `${format}.tar`);
        execFileSync('tar', [`--format=${format}`, '-C', src, '-cf', out, '.']);
        const got = await readAll(fs.createReadStream(out));
        const f = got.find((e) => e.h.name.endsWith('sub/f'))!;
        expect(f.data.toString()).toBe('content');
        expect(f.h.mtimeSec).toBe(1600000000);
        if (format === 'posix') expect(f.h.mtimeNsec).toBe(250000000);
        expect(got.find((e) => e.h.name.endsWith('l'))!.h.linkname).toBe('sub/f');
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('readTar refuses malformed and hostile headers', () => {
  const good = buildTar([{ name: 'a', data: 'abc' }]);

  async function expectInvalid(buf: Buffer, re: RegExp): Promise<void> {
    await expect(readAll(once(buf))).rejects.toThrow(InvalidArchiveError);
    await expect(readAll(once(buf))).rejects.toThrow(re);
  }

  it('bad checksum', async () => {
    const b = Buffer.from(good);
    b[0] = 0x62;
    await expectInvalid(b, /checksum/);
  });

  it('negative base-256 size', async () => {
    const b = Buffer.from(good);
    b.fill(0xff, 124, 136);
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /negative size/);
  });

  it('size beyond 2^53 in base-256', async () => {
    const b = Buffer.from(good);
    b.fill(0, 124, 136);
    b[124] = 0x80;
    b.fill(0x7f, 125, 136);
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /too large/);
  });

  it('garbage in octal fields', async () => {
    const b = Buffer.from(good);
    b.write('00009', 100, 'latin1');
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /octal/);
  });

  it('truncated body and truncated header', async () => {
    await expectInvalid(good.subarray(0, 512 + 2), /unexpected end/);
    await expectInvalid(good.subarray(0, 300), /unexpected end/);
  });

  it('unknown and sparse entry types', async () => {
    const b = Buffer.from(good);
    b.write('S', 156, 'latin1');
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /sparse/);
    b.write('Z', 156, 'latin1');
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /unsupported tar entry type/);
  });

  function withPax(records: Buffer): Buffer {
    const paxHdr = buildTar([{ name: 'PaxHeaders/a', size: records.length, data: records }], { end: false });
    paxHdr.write('x', 156, 'latin1');
    fixChecksum(paxHdr.subarray(0, 512));
    return Buffer.concat([paxHdr, good]);
  }

  it('PAX path with a NUL byte', async () => {
    await expectInvalid(withPax(paxRecord('path', Buffer.from('ok\0../../etc/passwd'))), /NUL/);
  });

  it('PAX record whose length does not match', async () => {
    await expectInvalid(withPax(Buffer.from('99 path=x\n')), /length/);
    await expectInvalid(withPax(Buffer.from('8 path=x')), /PAX/);
    await expectInvalid(withPax(Buffer.from('abc path=x\n')), /length/);
  });

  it('PAX size that is not a plain decimal number', async () => {
    await expectInvalid(withPax(paxRecord('size', Buffer.from('-5'))), /invalid PAX size/);
    await expectInvalid(withPax(paxRecord('size', Buffer.from('99999999999999999999'))), /invalid PAX size|too large/);
  });

  it('PAX size overrides the header size (conflicting sizes resolve to PAX, as POSIX says)', async () => {
    const got = await readAll(once(withPax(paxRecord('size', Buffer.from('2')))));
    // The ustar header says 3 bytes, PAX says 2: PAX wins and the reader stays aligned to blocks.
    expect(got).toHaveLength(1);
    expect(got[0]!.data.toString()).toBe('ab');
  }, 10000);

  it('oversized extended headers', async () => {
    const big = Buffer.alloc(2 << 20, 0x61);
    await expect(readAll(once(withPax(paxRecord('comment', big))))).rejects.toThrow(/limit/);
  });

  it('non-UTF-8 names', async () => {
    const b = Buffer.from(good);
    b[0] = 0xff;
    fixChecksum(b.subarray(0, 512));
    await expectInvalid(b, /UTF-8/);
  });

  it('entry count limit', async () => {
    const many = buildTar(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, data: '' })));
    await expect(readAll(once(many), { maxEntries: 10 })).rejects.toThrow(/more than 10 entries/);
  });

  it('accepts an archive without the end marker (as Docker does)', async () => {
    const got = await readAll(once(buildTar([{ name: 'a', data: 'abc' }], { end: false })));
    expect(got).toHaveLength(1);
  });
});
