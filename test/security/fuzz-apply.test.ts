/**
 * Fuzzing of the layer apply path (issue 11 item 2) with fast-check: valid layer tars (files, directories,
 * symlinks, hardlinks, PAX and GNU long names, xattrs, whiteouts, devices) are mutated structurally (header
 * field edits with hostile values, PAX records added or edited, entries duplicated, dropped or swapped) and at the
 * byte level (bit flips, truncation, spliced bytes), optionally gzip- or zstd-compressed (and mutated after
 * compression), then applied in every whiteout format, and, in a second property, registered through the Storage
 * API on a real driver.
 *
 * Properties: the apply succeeds or fails with an InvalidArchiveError (ERR_INVALID_ARCHIVE, ArchiveLimitError
 * included) and nothing else; nothing outside the root changes (victim directories at three levels above it are
 * snapshotted inode by inode, and `/` is listed); the root stays the same directory; no unhandled rejection; the
 * process does not die. The store property adds: a refused layer leaves nothing registered and verify() clean.
 *
 * The run is deterministic: the seed is fixed (printed; override with GRAPHDRIVER_FUZZ_SEED) and the budget is a
 * number of runs (GRAPHDRIVER_FUZZ_RUNS, default 300 for apply and 60 for the store) with a time cap so that CI
 * stays around a minute. A failure prints fast-check's seed and path, which replay it exactly.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';

import * as fc from 'fast-check';
import { compress as zstdCompress } from 'zstd-napi';

import { applyLayer } from '../../lib/archive/apply';
import { paddingFor, paxRecord } from '../../lib/archive/tar-writer';
import { InvalidArchiveError } from '../../lib/errors';
import { Storage } from '../../lib/storage/storage';
import { describeIf, isRoot } from '../support/native';
import { buildTar, chunked, fixChecksum, type TestEntry } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
import { CLEAN_REPORT, mountsBelow, problems, unmountAll } from '../reliability/helpers';
import { FORMATS, makeVictim, snapshot } from './corpus';

const SEED = Number(process.env.GRAPHDRIVER_FUZZ_SEED ?? 0x6d2f11);
const RUNS = Number(process.env.GRAPHDRIVER_FUZZ_RUNS ?? 300);
const STORE_RUNS = Number(process.env.GRAPHDRIVER_FUZZ_STORE_RUNS ?? 60);
/** Time caps (ms): when reached, the property stops with the runs done so far (not a failure). */
const APPLY_BUDGET = Number(process.env.GRAPHDRIVER_FUZZ_MS ?? 60_000);
const STORE_BUDGET = Math.floor(APPLY_BUDGET / 3);

/** Replaced at apply time by the absolute path of the victim directory beside the root. */
const VICTIM = '@VICTIM@';

// ---------------------------------------------------------------------------------------------------------------
// Seeds: small, valid layers covering every entry kind the engine handles.

const KiB = 1024;
const SEEDS: TestEntry[][] = [
  [
    { name: 'etc/', type: 'dir' },
    { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
    { name: 'etc/link', type: 'symlink', linkname: 'passwd' },
    { name: 'etc/hard', type: 'link', linkname: 'etc/passwd' },
    { name: 'usr/', type: 'dir' },
    { name: 'usr/bin/', type: 'dir' },
    { name: 'usr/bin/tool', data: Buffer.alloc(3 * KiB, 0x41), mode: 0o4755, uid: 1000, gid: 1000 },
    { name: 'abs', type: 'symlink', linkname: '/etc' },
    { name: 'up', type: 'symlink', linkname: '../..' },
  ],
  [
    { name: `long/${'n'.repeat(120)}/${'m'.repeat(90)}`, data: 'long name via PAX' },
    { name: 'x', data: 'xattrs', xattrs: { 'user.a': Buffer.from('1'), 'trusted.b': Buffer.from('2'), 'security.capability': Buffer.alloc(20, 1) } },
    { name: 'dev/', type: 'dir' },
    { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
    { name: 'dev/fifo', type: 'fifo' },
    { name: 'gone/', type: 'dir' },
    { name: 'gone/.wh..wh..opq', data: '' },
    { name: '.wh.removed', data: '' },
    { name: 'big', data: Buffer.alloc(70 * KiB, 0x5a) },
  ],
  [
    { name: 'a/', type: 'dir', mode: 0o700 },
    { name: 'a/b/', type: 'dir' },
    { name: 'a/b/c', data: 'c' },
    { name: 'a/s', type: 'symlink', linkname: 'b' },
    { name: 'a/s/d', data: 'through the link' },
    { name: 'h', type: 'link', linkname: 'a/b/c' },
    { name: 'a/b/c', data: 'replaced' },
    { name: 'empty', data: '' },
  ],
];

/** One seed as a list of records: each is the entry's header blocks (PAX/GNU included) and its padded body. */
function records(seed: TestEntry[]): Buffer[] {
  return seed.map((e) => buildTar([e], { end: false }));
}

/** Offset of the main (ustar) header block in a record built by {@link records}. */
function mainHeaderOffset(rec: Buffer, seedEntry: TestEntry | undefined): number {
  const data = seedEntry && (seedEntry.type ?? 'file') === 'file' ? Buffer.byteLength(seedEntry.data ?? '') : 0;
  return Math.max(0, rec.length - 512 - data - paddingFor(data));
}

// ---------------------------------------------------------------------------------------------------------------
// Mutations.

const FIELDS = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const;
type Field = keyof typeof FIELDS;

const HOSTILE_STRINGS = [
  '',
  '.',
  '..',
  '/',
  '../x',
  '../victim/secret',
  '../../victim/secret',
  '../../../victim/secret',
  'a/../../victim/x',
  `${VICTIM}/secret`,
  `${VICTIM}/pwned`,
  VICTIM,
  '/proc/self/root',
  '.wh..wh..opq',
  '.wh...',
  '.wh.',
  '.wh..wh.plnk/1.2',
  'etc/passwd',
  'a/s',
  'usr/bin/tool',
  'x\0y',
  'n'.repeat(100),
  '\\..\\..\\x',
  'caf\u00e9',
];
const NUMBERS = ['0', '7777777', '77777777777', '-1', '-0', '8', '99', ' 12 ', '0000644\0', 'zzz', '\x80\0\0\0\0\0\0\x01', '\xff\xff\xff\xff\xff\xff\xff\xff'];
const TYPEFLAGS = ['0', '1', '2', '3', '4', '5', '6', '7', 'x', 'g', 'L', 'K', 'S', 'V', 'M', 'D', '\0', 'Z'];
const PAX_KEYS = ['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'mtime', 'atime', 'SCHILY.xattr.user.x', 'SCHILY.xattr.trusted.overlay.opaque', 'GNU.sparse.map', 'GNU.sparse.size', 'comment', 'hdrcharset', 'LIBARCHIVE.xattr.user.y'];

type StructOp =
  | { kind: 'field'; entry: number; field: Field; value: string; fix: boolean }
  | { kind: 'pax'; entry: number; records: Array<[string, string]>; global: boolean; skewLength: number }
  | { kind: 'dup'; from: number; to: number }
  | { kind: 'drop'; entry: number }
  | { kind: 'swap'; a: number; b: number };
type ByteOp = { kind: 'flip'; at: number; bit: number } | { kind: 'truncate'; at: number } | { kind: 'splice'; at: number; bytes: number[] };

interface FuzzInput {
  seed: number;
  structural: StructOp[];
  bytes: ByteOp[];
  compression: 'none' | 'gzip' | 'zstd';
  /** Byte mutations after compression (damaged compressed streams). */
  compressedFlips: Array<{ at: number; bit: number }>;
  chunk: number;
}

const str = fc.oneof(fc.constantFrom(...HOSTILE_STRINGS), fc.string({ maxLength: 40 }), fc.constantFrom(...NUMBERS));
const fieldValue = (f: Field): fc.Arbitrary<string> =>
  f === 'typeflag' ? fc.constantFrom(...TYPEFLAGS) : ['mode', 'uid', 'gid', 'size', 'mtime', 'chksum', 'devmajor', 'devminor'].includes(f) ? fc.oneof(fc.constantFrom(...NUMBERS), str) : str;

const structOp: fc.Arbitrary<StructOp> = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...(Object.keys(FIELDS) as Field[])).chain((field) => fc.record({ kind: fc.constant('field' as const), entry: fc.nat(20), field: fc.constant(field), value: fieldValue(field), fix: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) })) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('pax' as const),
      entry: fc.nat(20),
      records: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...PAX_KEYS), fc.string({ maxLength: 12 })), fc.oneof(str, fc.constantFrom(...NUMBERS))), { minLength: 1, maxLength: 4 }),
      global: fc.boolean(),
      skewLength: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }) }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('dup' as const), from: fc.nat(20), to: fc.nat(20) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), entry: fc.nat(20) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('swap' as const), a: fc.nat(20), b: fc.nat(20) }) },
);
const byteOp: fc.Arbitrary<ByteOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), bytes: fc.array(fc.nat(255), { minLength: 1, maxLength: 16 }) }) },
);

const fuzzInput: fc.Arbitrary<FuzzInput> = fc.record({
  seed: fc.nat(SEEDS.length - 1),
  structural: fc.array(structOp, { maxLength: 3 }),
  // Byte-level damage in about a third of the inputs only: most of it makes the archive unreadable, and the
  // structural edits need readable archives to reach the engine's deeper paths.
  bytes: fc.oneof({ weight: 2, arbitrary: fc.constant<ByteOp[]>([]) }, { weight: 1, arbitrary: fc.array(byteOp, { minLength: 1, maxLength: 4 }) }),
  compression: fc.constantFrom('none' as const, 'none' as const, 'gzip' as const, 'zstd' as const),
  compressedFlips: fc.oneof({ weight: 3, arbitrary: fc.constant<Array<{ at: number; bit: number }>>([]) }, { weight: 1, arbitrary: fc.array(fc.record({ at: fc.nat(), bit: fc.nat(7) }), { minLength: 1, maxLength: 2 }) }),
  chunk: fc.constantFrom(61, 511, 512, 513, 4093, 65536),
});

/** Builds the mutated (and maybe compressed) archive of `f` for a victim at `victim`. */
function build(f: FuzzInput, victim: string): Buffer {
  const seed = SEEDS[f.seed]!;
  const recs = records(seed);
  const entries: Array<TestEntry | undefined> = [...seed];
  const sub = (s: string): string => s.split(VICTIM).join(victim);
  for (const op of f.structural) {
    if (recs.length === 0) break;
    const i = (n: number): number => n % recs.length;
    switch (op.kind) {
      case 'field': {
        const k = i(op.entry);
        const rec = Buffer.from(recs[k]!);
        const off = mainHeaderOffset(rec, entries[k]);
        const [fo, len] = FIELDS[op.field];
        rec.fill(0, off + fo, off + fo + len);
        rec.write(sub(op.value), off + fo, len, 'latin1');
        if (op.fix && op.field !== 'chksum') fixChecksum(rec.subarray(off, off + 512));
        recs[k] = rec;
        break;
      }
      case 'pax': {
        const body = Buffer.concat(op.records.map(([key, v]) => paxRecord(key, Buffer.from(sub(v), 'latin1'))));
        if (op.skewLength !== 0 && body.length > 0) {
          // Rewrite the first record's length prefix so that it lies.
          const sp = body.indexOf(0x20);
          const n = Math.max(0, Number(body.subarray(0, sp).toString()) + op.skewLength);
          const fixed = Buffer.concat([Buffer.from(String(n)), body.subarray(sp)]);
          body.fill(0);
          fixed.copy(body, 0, 0, Math.min(fixed.length, body.length));
        }
        const h = buildTar([{ name: 'PaxHeaders/x', data: body }], { end: false });
        h[156] = (op.global ? 'g' : 'x').charCodeAt(0);
        fixChecksum(h.subarray(0, 512));
        const k = i(op.entry);
        recs.splice(k, 0, h);
        entries.splice(k, 0, undefined);
        break;
      }
      case 'dup': {
        const from = i(op.from);
        recs.splice(op.to % (recs.length + 1), 0, recs[from]!);
        entries.splice(op.to % (entries.length + 1), 0, entries[from]);
        break;
      }
      case 'drop':
        recs.splice(i(op.entry), 1);
        entries.splice(i(op.entry), 1);
        break;
      case 'swap': {
        const a = i(op.a);
        const b = i(op.b);
        [recs[a], recs[b]] = [recs[b]!, recs[a]!];
        [entries[a], entries[b]] = [entries[b], entries[a]];
        break;
      }
    }
  }
  let buf = Buffer.concat([...recs, Buffer.alloc(1024)]);
  for (const op of f.bytes) {
    if (buf.length === 0) break;
    const at = op.at % buf.length;
    if (op.kind === 'flip') buf[at] = buf[at]! ^ (1 << op.bit);
    else if (op.kind === 'truncate') buf = buf.subarray(0, at);
    else buf = Buffer.concat([buf.subarray(0, at), Buffer.from(op.bytes), buf.subarray(at)]);
  }
  if (f.compression === 'gzip') buf = Buffer.from(gzipSync(buf));
  else if (f.compression === 'zstd') buf = Buffer.from(zstdCompress(buf));
  if (f.compression !== 'none') {
    for (const fl of f.compressedFlips) buf[fl.at % buf.length] = buf[fl.at % buf.length]! ^ (1 << fl.bit);
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------------------------

/** Victims at three levels above the root: `<run>/victim`, `<run>/a/victim`, `<run>/a/b/victim`; root `<run>/a/b/root`. */
async function makeRun(dir: string): Promise<{ root: string; victim: string }> {
  const root = path.join(dir, 'a', 'b', 'root');
  fs.mkdirSync(root, { recursive: true });
  for (const v of [path.join(dir, 'victim'), path.join(dir, 'a', 'victim'), path.join(dir, 'a', 'b', 'victim')]) await makeVictim(v);
  return { root, victim: path.join(dir, 'a', 'b', 'victim') };
}

function describeError(e: unknown): string {
  return e instanceof Error ? `${e.constructor.name} ${(e as { code?: unknown }).code ?? ''}: ${e.stack ?? e.message}` : String(e);
}

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs)', 'fuzzing the layer apply path', () => {
  let tmp: string;
  let unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  const rootListing = (): string[] => fs.readdirSync('/').sort();

  beforeAll(() => {
    process.on('unhandledRejection', onUnhandled);
    tmp = makeTmp('gd-fuzz-');
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test(`applyLayer in ${FORMATS.join(', ')}: typed errors or success, nothing outside the root changes (seed ${SEED})`, async () => {
    const outcomes: Record<string, number> = {};
    let runs = 0;
    let n = 0;
    const slash = rootListing();
    const started = Date.now();
    const prop = fc.asyncProperty(fuzzInput, async (f) => {
      runs++;
      for (const format of FORMATS) {
        const dir = path.join(tmp, `run-${++n}`);
        const { root, victim } = await makeRun(dir);
        const input = build(f, victim);
        const before = await snapshot(dir, root);
        const rootIno = fs.lstatSync(root).ino;
        unhandled = [];
        let outcome: string;
        try {
          await applyLayer(root, chunked(input, f.chunk), { format });
          outcome = 'applied';
        } catch (e) {
          if (!(e instanceof InvalidArchiveError) || e.code !== 'ERR_INVALID_ARCHIVE') throw new Error(`${format}: untyped failure: ${describeError(e)}`);
          outcome = e.constructor.name;
        }
        outcomes[`${format} ${outcome}`] = (outcomes[`${format} ${outcome}`] ?? 0) + 1;
        // Late native work or a stray promise would show up within a turn of the event loop.
        await new Promise((r) => setImmediate(r));
        if (unhandled.length > 0) throw new Error(`${format}: unhandled rejection: ${describeError(unhandled[0])}`);
        const after = await snapshot(dir, root);
        if (JSON.stringify(after) !== JSON.stringify(before)) throw new Error(`${format}: outside the root changed:\n${after.filter((l) => !before.includes(l)).join('\n')}`);
        if (fs.lstatSync(root).ino !== rootIno || !fs.lstatSync(root).isDirectory()) throw new Error(`${format}: the root was replaced`);
        if (JSON.stringify(rootListing()) !== JSON.stringify(slash)) throw new Error(`${format}: / changed: ${rootListing().join(' ')}`);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
    // eslint-disable-next-line no-console
    console.log(`fuzz-apply: seed ${SEED}, up to ${RUNS} runs x ${FORMATS.length} formats, budget ${APPLY_BUDGET} ms`);
    await fc.assert(prop, { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: APPLY_BUDGET, markInterruptAsFailure: false });
    // eslint-disable-next-line no-console
    console.log(`fuzz-apply: ${runs} runs (${runs * FORMATS.length} applies) in ${Date.now() - started} ms, 0 failures; outcomes ${JSON.stringify(outcomes)}`);
    expect(runs).toBeGreaterThanOrEqual(Math.min(RUNS, 50));
    // The mutations must reach both outcomes, or the fuzzer only exercises one side.
    expect(Object.keys(outcomes).some((k) => k.endsWith('applied'))).toBe(true);
    expect(Object.keys(outcomes).some((k) => k.endsWith('InvalidArchiveError'))).toBe(true);
  }, APPLY_BUDGET + 120_000);

  test(`Storage.registerLayer on vfs: refused layers leave nothing, verify() stays clean (seed ${SEED})`, async () => {
    const storeRoot = path.join(tmp, 'store');
    const s = await Storage.open({ root: storeRoot, driver: 'vfs', sync: false });
    const outcomes: Record<string, number> = {};
    let runs = 0;
    const started = Date.now();
    try {
      const outer = path.join(tmp, 'outer-victim');
      await makeVictim(outer);
      const outerBefore = await snapshot(outer, path.join(outer, '\0none'));
      const prop = fc.asyncProperty(fuzzInput, async (f) => {
        runs++;
        unhandled = [];
        let chain: string | null = null;
        try {
          chain = (await s.registerLayer(Readable.from(chunked(build(f, outer), f.chunk)))).chainId;
          outcomes.registered = (outcomes.registered ?? 0) + 1;
        } catch (e) {
          if ((e as { code?: unknown }).code !== 'ERR_INVALID_ARCHIVE') throw new Error(`untyped failure: ${describeError(e)}`);
          outcomes.refused = (outcomes.refused ?? 0) + 1;
        }
        await new Promise((r) => setImmediate(r));
        if (unhandled.length > 0) throw new Error(`unhandled rejection: ${describeError(unhandled[0])}`);
        if (chain !== null) await s.releaseLayer(chain);
        const report = await s.verify();
        if (JSON.stringify(problems(report)) !== JSON.stringify(CLEAN_REPORT) || report.unreferencedLayers.length > 0) {
          throw new Error(`store not clean: ${JSON.stringify(report)}`);
        }
        if ((await s.listLayers()).length > 0) throw new Error('a layer was left registered');
        if (fs.readdirSync(path.join(storeRoot, 'vfs', 'dir')).length > 0) throw new Error('a driver layer was left behind');
        if (JSON.stringify(await snapshot(outer, path.join(outer, '\0none'))) !== JSON.stringify(outerBefore)) throw new Error('the victim changed');
      });
      await fc.assert(prop, { seed: SEED + 1, numRuns: STORE_RUNS, interruptAfterTimeLimit: STORE_BUDGET, markInterruptAsFailure: false });
    } finally {
      await s.close();
    }
    // eslint-disable-next-line no-console
    console.log(`fuzz-store: seed ${SEED + 1}, ${runs} registrations in ${Date.now() - started} ms, 0 failures; outcomes ${JSON.stringify(outcomes)}`);
    expect(runs).toBeGreaterThanOrEqual(Math.min(STORE_RUNS, 20));
    expect(mountsBelow(storeRoot)).toEqual([]);
  }, STORE_BUDGET + 120_000);
});
