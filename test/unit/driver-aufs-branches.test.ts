/**
 * aufs mount data and the layers file, as pure functions: the exact `br:` data, the page accounting (counted in
 * bytes, page - 1, options and label included), the MS_REMOUNT `append:` chunks, and the refusals.
 */
import { MountFlags } from '../../lib/native/constants';
import { MountDataTooLargeError, planAufsMount, type AufsMountCall } from '../../lib/drivers/aufs/branches';
import { checkLayerId, checkParentId, CorruptLayerError, layersFileFor, parseLayersFile } from '../../lib/drivers/aufs/layout';

const OPTS = 'dio,xino=/dev/shm/aufs.xino';

/** `count` branch paths of exactly `len` characters each: `<prefix>/diff/` padded, then a 4-digit index. */
function branchPaths(count: number, len: number, prefix = '/var/lib/docker/aufs'): string[] {
  return Array.from({ length: count }, (_, i) => {
    const head = `${prefix}/diff/`;
    const id = `l${String(i).padStart(3, '0')}`;
    return head + 'x'.repeat(len - head.length - id.length) + id;
  });
}

/** Every branch of a plan, in mount order (rw first). */
function branchesOf(calls: readonly AufsMountCall[]): string[] {
  const out: string[] = [];
  for (const c of calls) {
    const withoutLabel = c.data.replace(/,?context="[^"]*"$/, '');
    if (c.flags === 0) {
      const br = withoutLabel.split(',')[0]!;
      out.push(...br.slice(3).split(':'));
    } else {
      out.push(...withoutLabel.split(',').map((o) => o.slice('append:'.length)));
    }
  }
  return out;
}

describe('planAufsMount', () => {
  it('one ancestor: Docker data, without and with dirperm1', () => {
    expect(planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p'], dirperm1: false })).toEqual([{ flags: 0, data: `br:/a/diff/c=rw:/a/diff/p=ro+wh,${OPTS}` }]);
    expect(planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p', '/a/diff/g'], dirperm1: true })).toEqual([
      { flags: 0, data: `br:/a/diff/c=rw:/a/diff/p=ro+wh:/a/diff/g=ro+wh,${OPTS},dirperm1` },
    ]);
    expect(planAufsMount({ rw: '/a/diff/c', ro: [], dirperm1: false })).toEqual([{ flags: 0, data: `br:/a/diff/c=rw,${OPTS}` }]);
  });

  it('the mount label goes last, quoted (MCS categories hold commas)', () => {
    const label = 'system_u:object_r:container_file_t:s0:c1,c2';
    expect(planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p'], dirperm1: true, mountLabel: label })).toEqual([
      { flags: 0, data: `br:/a/diff/c=rw:/a/diff/p=ro+wh,${OPTS},dirperm1,context="${label}"` },
    ]);
    // An empty label is no label.
    expect(planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p'], dirperm1: false, mountLabel: '' })[0]!.data).toBe(`br:/a/diff/c=rw:/a/diff/p=ro+wh,${OPTS}`);
  });

  it('branches past the page are appended by MS_REMOUNT in chunks, in order, each under a page (exact calls)', () => {
    // Branch paths of 74 characters: the first call holds br:<rw>=rw (80 bytes), the options (28) and
    // 49 ":<dir>=ro+wh" (81 each) = 4077 bytes; a 50th would make 4158. An append is 87 bytes, 88 with its
    // comma: 46 per call (4047 bytes; 47 would make 4135).
    const [rw, ...ro] = branchPaths(200, 74);
    const calls = planAufsMount({ rw: rw!, ro, dirperm1: false });
    const seg = (d: string): string => `:${d}=ro+wh`;
    const app = (ds: string[]): string => ds.map((d) => `append:${d}=ro+wh`).join(',');
    expect(calls).toEqual([
      { flags: 0, data: `br:${rw}=rw${ro.slice(0, 49).map(seg).join('')},${OPTS}` },
      { flags: MountFlags.MS_REMOUNT, data: app(ro.slice(49, 95)) },
      { flags: MountFlags.MS_REMOUNT, data: app(ro.slice(95, 141)) },
      { flags: MountFlags.MS_REMOUNT, data: app(ro.slice(141, 187)) },
      { flags: MountFlags.MS_REMOUNT, data: app(ro.slice(187)) },
    ]);
    expect(calls.map((c) => Buffer.byteLength(c.data))).toEqual([4077, 4047, 4047, 4047, 12 * 87 + 11]);
    expect(branchesOf(calls)).toEqual([`${rw}=rw`, ...ro.map((d) => `${d}=ro+wh`)]);
  });

  it('labels are repeated on every remount and counted in every call', () => {
    const label = 'system_u:object_r:container_file_t:s0:c1,c2';
    const [rw, ...ro] = branchPaths(128, 74);
    const calls = planAufsMount({ rw: rw!, ro, dirperm1: true, mountLabel: label });
    // `,context="<43 chars>"` is 54 bytes. First: 80 + 37 (options, dirperm1) + 54 + 48 * 81 = 4059 (49: 4140);
    // appends: 54 + 45 * 88 - 1 = 4013 (46: 4101); the last one holds the remaining 127 - 48 - 45 = 34.
    expect(calls.map((c) => Buffer.byteLength(c.data))).toEqual([4059, 4013, 54 + 34 * 88 - 1]);
    for (const c of calls) expect(c.data.endsWith(`,context="${label}"`)).toBe(true);
    expect(calls[1]!.data).toBe(`${ro.slice(48, 93).map((d) => `append:${d}=ro+wh`).join(',')},context="${label}"`);
    expect(branchesOf(calls)).toEqual([`${rw}=rw`, ...ro.map((d) => `${d}=ro+wh`)]);
  });

  it('exact fit: data of page - 1 bytes fits, one byte more moves the last branch to a remount', () => {
    const [rw, ...ro] = branchPaths(50, 74);
    // 4077 bytes + `,context="<7 chars>"` (18) = 4095: all 49 ancestors in the first call.
    const fit = planAufsMount({ rw: rw!, ro, dirperm1: false, mountLabel: 'abcdefg' });
    expect(fit).toHaveLength(1);
    expect(Buffer.byteLength(fit[0]!.data)).toBe(4095);
    const over = planAufsMount({ rw: rw!, ro, dirperm1: false, mountLabel: 'abcdefgh' });
    expect(over).toHaveLength(2);
    expect(Buffer.byteLength(over[0]!.data)).toBe(4096 - 81);
    expect(over[1]).toEqual({ flags: MountFlags.MS_REMOUNT, data: `append:${ro[48]}=ro+wh,context="abcdefgh"` });
  });

  it('page boundary inside a branch path: for every root length the cut branch goes whole to a remount', () => {
    let limitInsideAPath = 0;
    let limitInsideTheOptions = 0;
    for (let rootLen = 10; rootLen <= 220; rootLen++) {
      const prefix = `/${'r'.repeat(rootLen - 1)}`;
      const [rw, ...ro] = branchPaths(128, rootLen + 6 + 4, prefix);
      const calls = planAufsMount({ rw: rw!, ro, dirperm1: true });
      // Nothing lost, nothing cut, nothing reordered; every call under a page.
      expect(branchesOf(calls)).toEqual([`${rw}=rw`, ...ro.map((d) => `${d}=ro+wh`)]);
      for (const c of calls) expect(Buffer.byteLength(c.data)).toBeLessThanOrEqual(4095);
      // Every call is as full as it may be: the next branch would not have fitted.
      // 'br', '<rw>=rw', then one ':'-separated part per read-only branch
      const firstCount = calls[0]!.data.split(',')[0]!.split(':').length - 2;
      const next = ro[firstCount];
      if (next !== undefined) {
        const grown = `br:${rw}=rw${ro.slice(0, firstCount).map((d) => `:${d}=ro+wh`).join('')},${OPTS},dirperm1`;
        expect(Buffer.byteLength(grown)).toBeLessThanOrEqual(4095);
        expect(Buffer.byteLength(grown) + next.length + 7).toBeGreaterThan(4095);
        // Where would a page cut have fallen in the data holding one branch more?
        const branchesEnd = Buffer.byteLength(`br:${rw}=rw${ro.slice(0, firstCount).map((d) => `:${d}=ro+wh`).join('')}`);
        if (4095 > branchesEnd + 1 && 4095 < branchesEnd + 1 + next.length) limitInsideAPath++;
        if (4095 >= branchesEnd + next.length + 7) limitInsideTheOptions++;
      }
      for (const c of calls.slice(1, -1)) {
        const nextAppend = calls[calls.indexOf(c) + 1]!.data.split(',')[0]!;
        expect(Buffer.byteLength(`${c.data},${nextAppend}`)).toBeGreaterThan(4095);
      }
    }
    // Both kinds of boundary were met: the page ending inside a branch path, and the branches fitting while
    // the options after them do not.
    expect(limitInsideAPath).toBeGreaterThan(20);
    expect(limitInsideTheOptions).toBeGreaterThan(0);
  });

  it('a branch (or the read-write branch with its options) that cannot fit in any call is an error, not a drop', () => {
    const long = `/${'d'.repeat(4090)}`;
    expect(() => planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p', long], dirperm1: false })).toThrow(MountDataTooLargeError);
    expect(() => planAufsMount({ rw: long, ro: [], dirperm1: false })).toThrow(/ERR_MOUNT_DATA_TOO_LARGE|more than the 4095/);
    expect(() => planAufsMount({ rw: '/a/diff/c', ro: ['/a/diff/p'], dirperm1: false, mountLabel: 'l'.repeat(4100) })).toThrow(MountDataTooLargeError);
    // Multi-byte characters are counted in bytes.
    const wide = `/${'é'.repeat(2045)}`;
    expect(Buffer.byteLength(`append:${wide}=ro+wh`)).toBeGreaterThan(4095);
    expect(() => planAufsMount({ rw: '/a/diff/c', ro: [wide], dirperm1: false })).toThrow(MountDataTooLargeError);
    try {
      planAufsMount({ rw: '/a/diff/c', ro: [wide], dirperm1: false });
    } catch (e) {
      expect((e as { code?: string }).code).toBe('ERR_MOUNT_DATA_TOO_LARGE');
    }
  });

  it('honours another page size', () => {
    const [rw, ...ro] = branchPaths(3, 20, '/h');
    const calls = planAufsMount({ rw: rw!, ro, dirperm1: false, pageSize: 100 });
    for (const c of calls) expect(Buffer.byteLength(c.data)).toBeLessThanOrEqual(99);
    expect(calls).toEqual([
      { flags: 0, data: `br:${rw}=rw:${ro[0]}=ro+wh,${OPTS}` },
      { flags: MountFlags.MS_REMOUNT, data: `append:${ro[1]}=ro+wh` },
    ]);
  });
});

describe('layers files and ids', () => {
  it('parses one ancestor per line, nearest first; a base layer is empty', () => {
    expect(parseLayersFile('x', '')).toEqual([]);
    expect(parseLayersFile('x', 'p\n')).toEqual(['p']);
    expect(parseLayersFile('x', 'p\ng\nr\n')).toEqual(['p', 'g', 'r']);
    expect(parseLayersFile('x', 'p\ng')).toEqual(['p', 'g']);
    expect(layersFileFor(null, [])).toBe('');
    expect(layersFileFor('p', [])).toBe('p\n');
    expect(layersFileFor('p', ['g', 'r'])).toBe('p\ng\nr\n');
    expect(parseLayersFile('x', layersFileFor('p', ['g', 'r']))).toEqual(['p', 'g', 'r']);
  });

  it.each([
    ['a path', '../../etc\n'],
    ['a separator', 'a/b\n'],
    ['an empty line', '\n'],
    ['an empty line in between', 'a\n\nb\n'],
    ['spaces', ' a\n'],
    ['an option smuggled into the branch list', 'a=rw:/etc\n'],
    ['the layer itself', 'x\n'],
    ['a repeated id', 'a\nb\na\n'],
    ['a removing leftover', 'a-removing\n'],
    ['CRLF', 'a\r\n'],
  ])('refuses a layers file with %s (CorruptLayerError, ERR_LAYER_CORRUPT)', (_what, content) => {
    expect(() => parseLayersFile('x', content)).toThrow(CorruptLayerError);
    try {
      parseLayersFile('x', content);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('ERR_LAYER_CORRUPT');
      expect((e as Error).message).toContain('"x"');
    }
  });

  it('ids: the common rules plus no "-removing" suffix (init would delete such a layer)', () => {
    expect(() => checkLayerId('abc')).not.toThrow();
    expect(() => checkLayerId('abc-removing')).toThrow(/invalid layer id/);
    expect(() => checkLayerId('a/b')).toThrow(/invalid layer id/);
    expect(() => checkParentId('p-removing')).toThrow(/invalid layer id/);
    expect(checkParentId('')).toBeNull();
    expect(checkParentId(undefined)).toBeNull();
    expect(checkParentId('p')).toBe('p');
  });
});
