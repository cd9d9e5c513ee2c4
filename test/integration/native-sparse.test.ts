/**
 * Sparse-file primitives against the real kernel: fallocate (allocate, keep-size, punch hole), truncate and the
 * shape of their errors. The files live in a private tmpfs (root) so the results do not depend on the host's
 * temp filesystem; tmpfs supports every fallocate mode used here.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { FallocFlags, UmountFlags } from '../../lib/native/constants';
import type { NativeBindings } from '../../lib/native/types';
import { describeIf, isRoot } from '../support/native';

const MiB = 1024 * 1024;

/** Bytes allocated to a file (st_blocks is in 512-byte units whatever the filesystem block size). */
function allocated(file: string): number {
  return fs.statSync(file).blocks * 512;
}

describeIf(isRoot ? null : 'needs root', 'native sparse-file primitives', () => {
  let b: NativeBindings;
  let base: string;
  let mounted = false;

  beforeAll(async () => {
    b = loadBindings();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-native-sparse-'));
    await b.mount('tmpfs', base, 'tmpfs', 0, 'size=64m');
    mounted = true;
  });

  afterAll(async () => {
    if (mounted) await b.umount(base, UmountFlags.MNT_DETACH).catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('truncate(create) makes a sparse file with mode 0600 and grows it without allocating', async () => {
    const f = path.join(base, 'sparse');
    await b.truncate(f, 1024 * MiB, true);
    let st = fs.statSync(f);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe(1024 * MiB);
    expect(st.blocks).toBe(0);

    await b.truncate(f, 2048 * MiB);
    st = fs.statSync(f);
    expect(st.size).toBe(2048 * MiB);
    expect(st.blocks).toBe(0);
  });

  it('truncate shrinks a file and drops the data past the new end', async () => {
    const f = path.join(base, 'shrink');
    fs.writeFileSync(f, Buffer.alloc(64 * 1024, 0x5a));
    await b.truncate(f, 1000);
    expect(fs.readFileSync(f)).toEqual(Buffer.alloc(1000, 0x5a));
  });

  it('fallocate allocates blocks and extends the size', async () => {
    const f = path.join(base, 'alloc');
    await b.truncate(f, 0, true);
    await b.fallocate(f, 0, 0, 4 * MiB);
    expect(fs.statSync(f).size).toBe(4 * MiB);
    expect(allocated(f)).toBeGreaterThanOrEqual(4 * MiB);
    // Preallocated space reads back as zeros.
    expect(fs.readFileSync(f).every((x) => x === 0)).toBe(true);
  });

  it('fallocate with KEEP_SIZE allocates past the end without changing the size', async () => {
    const f = path.join(base, 'keep-size');
    fs.writeFileSync(f, 'abc');
    await b.fallocate(f, FallocFlags.FALLOC_FL_KEEP_SIZE, 0, 2 * MiB);
    expect(fs.statSync(f).size).toBe(3);
    expect(allocated(f)).toBeGreaterThanOrEqual(2 * MiB);
    expect(fs.readFileSync(f, 'utf8')).toBe('abc');
  });

  it('PUNCH_HOLE|KEEP_SIZE frees the blocks of a range, which then reads back as zeros', async () => {
    const f = path.join(base, 'punch');
    fs.writeFileSync(f, Buffer.alloc(4 * MiB, 0xab));
    const before = allocated(f);
    expect(before).toBeGreaterThanOrEqual(4 * MiB);

    await b.fallocate(f, FallocFlags.FALLOC_FL_PUNCH_HOLE | FallocFlags.FALLOC_FL_KEEP_SIZE, MiB, 2 * MiB);
    expect(fs.statSync(f).size).toBe(4 * MiB);
    expect(before - allocated(f)).toBeGreaterThanOrEqual(2 * MiB);

    const data = fs.readFileSync(f);
    expect(data.subarray(0, MiB).every((x) => x === 0xab)).toBe(true);
    expect(data.subarray(MiB, 3 * MiB).every((x) => x === 0)).toBe(true);
    expect(data.subarray(3 * MiB).every((x) => x === 0xab)).toBe(true);
  });

  it('rejects PUNCH_HOLE without KEEP_SIZE with EOPNOTSUPP', async () => {
    const f = path.join(base, 'punch-bad');
    fs.writeFileSync(f, Buffer.alloc(8192, 1));
    await expect(b.fallocate(f, FallocFlags.FALLOC_FL_PUNCH_HOLE, 0, 4096)).rejects.toMatchObject({
      code: 'EOPNOTSUPP',
      syscall: 'fallocate',
      path: f,
    });
  });

  it('reports missing files with ENOENT and the path', async () => {
    const missing = path.join(base, 'missing');
    await expect(b.fallocate(missing, 0, 0, 4096)).rejects.toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: missing });
    await expect(b.truncate(missing, 4096)).rejects.toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: missing });
    expect(fs.existsSync(missing)).toBe(false);
  });

  it('refuses directories (EISDIR) and blkDiscard on a regular file (ENOTTY)', async () => {
    const d = path.join(base, 'dir');
    fs.mkdirSync(d);
    await expect(b.fallocate(d, 0, 0, 4096)).rejects.toMatchObject({ code: 'EISDIR', path: d });
    await expect(b.truncate(d, 0)).rejects.toMatchObject({ code: 'EISDIR', path: d });
    const f = path.join(base, 'plain');
    fs.writeFileSync(f, 'x');
    await expect(b.blkDiscard(f, 0, 4096)).rejects.toMatchObject({ code: 'ENOTTY', syscall: 'ioctl(BLKDISCARD)', path: f });
  });

  it('passes the largest safe integer size through unchanged (tmpfs allows 2^63-1 bytes)', async () => {
    const f = path.join(base, 'huge');
    await b.truncate(f, Number.MAX_SAFE_INTEGER, true);
    const st = fs.statSync(f, { bigint: true });
    expect(st.size).toBe(BigInt(Number.MAX_SAFE_INTEGER));
    expect(st.blocks).toBe(0n);
  });
});
