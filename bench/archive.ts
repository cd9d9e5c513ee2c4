/**
 * Archive engine against GNU tar, on the Debian minbase rootfs of test/fixtures/debian-rootfs.sh (issue 3, "Speed"):
 *
 *  (a) applyLayer of rootfs.tar vs `tar --numeric-owner --xattrs -xpf`, into fresh directories on the same
 *      filesystem: on the disk (/var/tmp, or BENCH_DISK_DIR) and on a tmpfs (the tar copied there too), which
 *      separates syscall/CPU cost from the disk. Ours reads the file with fileChunks() (recycled buffers, as GNU
 *      tar reuses its own) and, as a second row against the same tar runs, through fs.createReadStream (a fresh
 *      buffer per read: what a caller handing any Node stream pays);
 *  (b) peak RSS of a child process applying a 1 GiB single-file layer generated on the fly (streaming bound),
 *      next to a child that only generates the stream and to GNU tar extracting the same stream;
 *  (c) changesUpper of an overlay upper dir holding the standard container edit (about 214 changes, as
 *      /work/shared/notes/peers/mutate.sh makes) over the rootfs, warm and cold cache, next to `find` of the
 *      same upper dir (a walk floor);
 *  (d) exportUpper of those changes vs `tar -C upper -cf - . | cat > /dev/null`.
 *
 * Method (see /work/shared/notes/peers.md for the noise seen on this machine): a warm-up round, then N rounds
 * (default 5; at least 15 for the millisecond operations c and d) in which ours and the peer alternate A B / B A;
 * syncfs(2) and, as root, drop_caches before every timed operation (untimed; cold-cache rows only for c and d).
 * Ours runs in this process, as a library is used; the peers' commands are started by a helper process, because
 * a fork of this process makes its next operation pay for copy-on-write faults on its whole heap. Extracted
 * trees are removed only after the last round (see the ext4 note in (a)). Reports medians with min–max, user/sys
 * CPU medians, the ratio of the medians and the median of the per-round ratios, and writes everything to
 * bench/results/archive-<date>.json.
 *
 *   npx tsc -p bench && node dist-bench/bench/archive.js [runs] [--only a,b,c,d]
 *
 * Needs root (owners, device nodes, overlay and tmpfs mounts). GRAPHDRIVER_ROOTFS_TAR selects the tar
 * (default: the fixture cache), GRAPHDRIVER_ADDON the addon build (default: build/Release of this checkout).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';

import { applyLayer } from '../lib/archive/apply';
import { fileChunks } from '../lib/archive/byte-source';
import { changesUpper } from '../lib/archive/changes';
import { exportUpper } from '../lib/archive/diff';
import { END_OF_ARCHIVE, encodeHeader, paddingFor } from '../lib/archive/tar-writer';
import { loadBindings } from '../lib/native/bindings';
import { UmountFlags } from '../lib/native/constants';
import { DEFAULT_ADDON, ROOT } from './harness/repo-root';

// Compiled into dist-bench/, lib/native/bindings would look for the addon relative to dist-bench (it reads this
// variable on its first call, which comes later).
process.env.GRAPHDRIVER_ADDON ??= DEFAULT_ADDON;

const FIXTURES = process.env.GRAPHDRIVER_FIXTURES ?? '/var/tmp/graphdriver-fixtures';
const TAR = process.env.GRAPHDRIVER_ROOTFS_TAR ?? path.join(FIXTURES, 'rootfs.tar');
const DISK_DIR = process.env.BENCH_DISK_DIR ?? '/var/tmp';
const BIG = 1 << 30;
const isRoot = process.getuid?.() === 0;

// ---------------------------------------------------------------- measuring

interface Sample {
  /** Wall-clock seconds. */
  wall: number;
  user: number;
  sys: number;
}

interface Row {
  name: string;
  fs: string;
  ours: Sample[];
  peerName: string;
  peer: Sample[];
  note?: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fsType(dir: string): string {
  // findmnt names ext4 as ext4 (stat -f reports "ext2/ext3" for the whole family).
  return execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', dir], { encoding: 'utf8' }).trim();
}

/**
 * Writeback of earlier runs (and, cold, the page cache) is not charged to the next operation: syncfs(2) of the
 * filesystems involved, then drop_caches. Both without spawning `sync`: a fork of this process write-protects
 * its whole heap (copy-on-write), and the page faults that follow were charged to our next in-process
 * operation (5x slower exportUpper right after a spawn, on this VM whose page faults are expensive).
 */
let syncPaths: string[] = [];
async function quiesce(dropCaches: boolean): Promise<void> {
  const b = loadBindings();
  for (const p of syncPaths) await b.syncfs(p);
  if (dropCaches && isRoot) fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

async function timeOurs(fn: () => Promise<void>): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall, user: c.user / 1e6, sys: c.system / 1e6 };
}

/** Runs a command under /usr/bin/time (for its CPU split); the wall time is our own clock around it. */
function timeCmdHere(argv: string[]): Sample {
  const out = path.join(os.tmpdir(), `gd-bench-time-${process.pid}`);
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-2000)}`);
  const [, u, s] = fs.readFileSync(out, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  fs.rmSync(out, { force: true });
  return { wall, user: u!, sys: s! };
}

/**
 * Runs the peers' commands from a helper process started once, so that this process never forks while it is
 * being measured (see {@link quiesce}); the helper times each command itself.
 */
class Runner {
  private readonly proc = spawn(process.execPath, [__filename, '--child', 'runner'], { stdio: ['pipe', 'pipe', 'inherit'] });
  private readonly lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();

  async run(argv: string[]): Promise<Sample> {
    this.proc.stdin.write(JSON.stringify(argv) + '\n');
    const r = await this.lines.next();
    if (r.done) throw new Error('the command runner exited');
    const m = JSON.parse(r.value as string) as { ok?: Sample; error?: string };
    if (!m.ok) throw new Error(m.error);
    return m.ok;
  }

  close(): void {
    this.proc.stdin.end();
  }
}

let runner: Runner | null = null;
function timeCmd(argv: string[]): Promise<Sample> {
  runner ??= new Runner();
  return runner.run(argv);
}

/** One contender of {@link interleaveMany}: ours run in this process (timed here), or a peer command. */
interface Contender {
  name: string;
  ours?: (round: number) => Promise<void>;
  peer?: (round: number) => Promise<Sample>;
}

/**
 * Warm-up plus `runs` rounds of every contender, rotating which goes first. `prepare` runs before each
 * operation (untimed, e.g. a fresh target dir). Returns the samples per contender name.
 */
async function interleaveMany(
  runs: number,
  drop: boolean,
  contenders: Contender[],
  hooks: { prepare?: (who: string, round: number) => void } = {},
): Promise<Record<string, Sample[]>> {
  const out: Record<string, Sample[]> = Object.fromEntries(contenders.map((c) => [c.name, []]));
  for (let r = -1; r < runs; r++) {
    const k = ((r % contenders.length) + contenders.length) % contenders.length;
    const order = [...contenders.slice(k), ...contenders.slice(0, k)];
    for (const c of order) {
      hooks.prepare?.(c.name, r);
      await quiesce(drop);
      const s = c.ours ? await timeOurs(() => c.ours!(r)) : await c.peer!(r);
      if (r < 0) continue; // warm-up
      out[c.name]!.push(s);
      process.stderr.write(`    round ${r + 1}/${runs} ${c.name}: ${s.wall.toFixed(3)} s\n`);
    }
  }
  return out;
}

/** Warm-up plus `runs` rounds of ours and the peer, alternating which goes first (see {@link interleaveMany}). */
async function interleave(
  runs: number,
  drop: boolean,
  ours: (round: number) => Promise<void>,
  peer: (round: number) => Promise<Sample>,
  hooks: { prepare?: (who: string, round: number) => void } = {},
): Promise<{ ours: Sample[]; peer: Sample[] }> {
  const res = await interleaveMany(runs, drop, [{ name: 'ours', ours }, { name: 'peer', peer }], hooks);
  return { ours: res.ours!, peer: res.peer! };
}

function fmt(x: number): string {
  return x >= 1 ? x.toFixed(2) : x >= 0.01 ? x.toFixed(3) : x.toFixed(4);
}

function summary(xs: Sample[]): { median: number; min: number; max: number; userMedian: number; sysMedian: number } {
  const w = xs.map((s) => s.wall);
  return { median: median(w), min: Math.min(...w), max: Math.max(...w), userMedian: median(xs.map((s) => s.user)), sysMedian: median(xs.map((s) => s.sys)) };
}

function pairedRatio(r: Row): number {
  return median(r.ours.map((s, i) => s.wall / r.peer[i]!.wall));
}

function printTable(rows: Row[]): void {
  const lines = [
    ['operation', 'fs', 'ours s median (min–max) [user/sys]', 'peer', 'peer s median (min–max) [user/sys]', 'ours/peer', 'paired'],
  ];
  for (const r of rows) {
    const o = summary(r.ours);
    const p = summary(r.peer);
    lines.push([
      r.name,
      r.fs,
      `${fmt(o.median)} (${fmt(o.min)}–${fmt(o.max)}) [${fmt(o.userMedian)}/${fmt(o.sysMedian)}]`,
      r.peerName,
      `${fmt(p.median)} (${fmt(p.min)}–${fmt(p.max)}) [${fmt(p.userMedian)}/${fmt(p.sysMedian)}]`,
      (o.median / p.median).toFixed(2),
      pairedRatio(r).toFixed(2),
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  for (const [i, l] of lines.entries()) {
    console.log(l.map((c, k) => c.padEnd(widths[k]!)).join(' | '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  }
}

// ---------------------------------------------------------------- (b) the 1 GiB layer, in child processes

/** A one-file layer of `bytes` bytes of incompressible, never-zero data, made as it is consumed. */
async function* bigLayer(bytes: number): AsyncGenerator<Buffer> {
  yield encodeHeader({ name: 'big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, size: bytes, mtimeSec: 1700000000 });
  const base = randomFillSync(Buffer.allocUnsafe(1 << 20));
  for (let off = 0, n = 0; off < bytes; off += base.length, n++) {
    // A fresh buffer per chunk, as a file or socket stream delivers them.
    const chunk = Buffer.allocUnsafe(Math.min(base.length, bytes - off));
    base.copy(chunk, 0, 0, chunk.length);
    chunk.writeUInt32LE(n, 0);
    yield chunk;
  }
  yield Buffer.alloc(paddingFor(bytes));
  yield END_OF_ARCHIVE;
}

async function child(mode: string, args: string[]): Promise<void> {
  if (mode === 'runner') {
    for await (const line of readline.createInterface({ input: process.stdin })) {
      try {
        process.stdout.write(JSON.stringify({ ok: timeCmdHere(JSON.parse(line) as string[]) }) + '\n');
      } catch (e) {
        process.stdout.write(JSON.stringify({ error: String(e) }) + '\n');
      }
    }
    return;
  }
  const bytes = Number(args[mode === 'apply-big' ? 1 : 0]);
  const t0 = process.hrtime.bigint();
  if (mode === 'apply-big') {
    await applyLayer(args[0]!, bigLayer(bytes), { format: 'naive' });
  } else if (mode === 'gen-only') {
    let n = 0;
    for await (const c of bigLayer(bytes)) n += c.length;
    if (n < bytes) throw new Error('short stream');
  } else if (mode === 'gen-stdout') {
    for await (const c of bigLayer(bytes)) {
      if (!process.stdout.write(c)) await new Promise((r) => process.stdout.once('drain', r));
    }
    await new Promise<void>((r) => process.stdout.end(r));
    return;
  } else {
    throw new Error(`unknown child mode ${mode}`);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS, seconds }) + '\n');
}

function runChild(mode: string, args: string[]): { maxRssKiB: number; seconds: number } {
  const r = spawnSync(process.execPath, [__filename, '--child', mode, ...args], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`child ${mode} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { maxRssKiB: number; seconds: number };
}

/** GNU tar extracting the generated stream from a pipe; its max RSS from /usr/bin/time. */
async function gnuTarBig(dir: string, bytes: number): Promise<{ maxRssKiB: number; seconds: number }> {
  const out = path.join(os.tmpdir(), `gd-bench-time-${process.pid}`);
  const t0 = process.hrtime.bigint();
  const gen = spawn(process.execPath, [__filename, '--child', 'gen-stdout', String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const tar = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, 'tar', '-xf', '-', '-C', dir], { stdio: ['pipe', 'inherit', 'inherit'] });
  gen.stdout.pipe(tar.stdin);
  const code = await new Promise<number | null>((r) => tar.on('close', r));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`tar -x of the generated stream failed (${code})`);
  const rss = Number(fs.readFileSync(out, 'utf8').trim().split('\n').pop()!.split(' ')[3]);
  fs.rmSync(out, { force: true });
  return { maxRssKiB: rss, seconds };
}

// ---------------------------------------------------------------- the overlay container edit for (c) and (d)

/** The standard container edit of /work/shared/notes/peers/mutate.sh, made through the overlay mount `m`. */
function mutate(m: string): void {
  fs.appendFileSync(path.join(m, 'etc/passwd'), 'x:x:1000:1000::/home/x:/bin/sh\n'); // modify small file
  fs.mkdirSync(path.join(m, 'root'), { recursive: true });
  fs.writeFileSync(path.join(m, 'root/blob16m'), randomFillSync(Buffer.allocUnsafe(16 << 20))); // add 16 MiB file
  fs.rmSync(path.join(m, 'usr/share/doc'), { recursive: true, force: true }); // delete dir tree
  fs.rmSync(path.join(m, 'etc/issue'), { force: true }); // delete file
  fs.mkdirSync(path.join(m, 'app/new'), { recursive: true });
  for (let i = 1; i <= 200; i++) fs.writeFileSync(path.join(m, `app/new/f${i}`), `${i}\n`); // 200 small files
  // Metadata-only change of a large lower file (forces a copy-up); mutate.sh touches python3.11, which a minbase
  // rootfs does not have: perl is the biggest binary there.
  const big = ['usr/bin/python3.11', 'usr/bin/perl'].map((p) => path.join(m, p)).find((p) => fs.existsSync(p));
  if (big) {
    const now = new Date();
    fs.utimesSync(big, now, now);
  }
  if (fs.existsSync(path.join(m, 'etc/hostname'))) fs.chmodSync(path.join(m, 'etc/hostname'), 0o600); // mode change
}

async function drain(r: NodeJS.ReadableStream): Promise<number> {
  let n = 0;
  for await (const c of r as AsyncIterable<Buffer>) n += c.length;
  return n;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    await child(argv[1]!, argv.slice(2));
    return;
  }
  const onlyIdx = argv.indexOf('--only');
  const only = new Set((onlyIdx >= 0 ? argv[onlyIdx + 1]! : 'a,b,c,d').split(','));
  const runs = Number(argv.find((a, i) => /^\d+$/.test(a) && argv[i - 1] !== '--only') ?? 5);
  if (!isRoot) throw new Error('run as root: owners, device nodes, overlay and tmpfs mounts');
  if (!fs.existsSync(TAR)) throw new Error(`no fixture at ${TAR}: run test/fixtures/debian-rootfs.sh first`);
  const b = loadBindings();
  const started = new Date();
  const env = {
    date: started.toISOString(),
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    tar: execFileSync('tar', ['--version'], { encoding: 'utf8' }).split('\n')[0],
    loadavgStart: os.loadavg(),
    addon: process.env.GRAPHDRIVER_ADDON,
    fixture: { path: TAR, bytes: fs.statSync(TAR).size },
    runs,
    dropCaches: isRoot,
    sync: 'syncfs(2) of the work and fixture filesystems before every timed operation; peers run from a helper process',
  };
  console.log(`archive bench: ${runs} runs (+1 warm-up), load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}, ${env.cpus} CPUs`);
  const rows: Row[] = [];
  const extra: Record<string, unknown> = {};
  const work = fs.mkdtempSync(path.join(DISK_DIR, 'gd-bench-archive-'));
  syncPaths = [...new Set([work, path.dirname(TAR)])];
  const mounts: string[] = [];
  try {
    // ---- (a) apply the rootfs tar
    if (only.has('a')) {
      const tmpfsDir = path.join(work, 'tmpfs');
      fs.mkdirSync(tmpfsDir);
      // Room for every round's three trees (~170 MB each) and the tar.
      await b.mount('tmpfs', tmpfsDir, 'tmpfs', 0, `size=${Math.ceil(((3 * (runs + 1) + 1) * 200) / 1024) + 1}g,mode=0755`);
      mounts.push(tmpfsDir);
      fs.copyFileSync(TAR, path.join(tmpfsDir, 'rootfs.tar'));
      const targets = [
        { base: path.join(work, 'disk'), tar: TAR },
        { base: tmpfsDir, tar: path.join(tmpfsDir, 'rootfs.tar') },
      ];
      fs.mkdirSync(targets[0]!.base);
      for (const t of targets) {
        const fsName = `${fsType(t.base)} (${t.base === tmpfsDir ? 'tmpfs mount' : DISK_DIR})`;
        console.log(`(a) apply ${path.basename(t.tar)} on ${fsName}`);
        const dir = (who: string, r: number): string => path.join(t.base, `x-${who}-${r + 1}`);
        const res = await interleaveMany(
          runs,
          true,
          [
            {
              name: 'ours',
              ours: async (r) => {
                await applyLayer(dir('ours', r), fileChunks(t.tar), { format: 'naive' });
              },
            },
            { name: 'peer', peer: (r) => timeCmd(['tar', '--numeric-owner', '--xattrs', '-xpf', t.tar, '-C', dir('peer', r)]) },
            {
              // As the drivers call it: the layer store hashes the stream itself, before the driver sees it.
              name: 'ours-nohash',
              ours: async (r) => {
                await applyLayer(dir('ours-nohash', r), fileChunks(t.tar), { format: 'naive', hash: false });
              },
            },
            {
              name: 'ours-stream',
              ours: async (r) => {
                await applyLayer(dir('ours-stream', r), fs.createReadStream(t.tar, { highWaterMark: 1 << 20 }), { format: 'naive' });
              },
            },
          ],
          // The trees are removed only after the last round: ext4's inode allocator skips inodes freed in the last
          // 5-35 s (recently_deleted() reads the inode table for each candidate), so a run right after removing
          // the previous 6,700-entry tree spent seconds of system time there (3-5x the apply itself, and the
          // "disk slows down" of the peers' notes).
          { prepare: (who, r) => fs.mkdirSync(dir(who, r)) },
        );
        for (const d of fs.readdirSync(t.base)) if (d.startsWith('x-')) fs.rmSync(path.join(t.base, d), { recursive: true, force: true });
        rows.push({ name: 'apply rootfs.tar (fileChunks)', fs: fsName, ours: res.ours!, peerName: 'tar -xpf', peer: res.peer! });
        rows.push({ name: 'apply rootfs.tar (fileChunks, hash: false as in drivers)', fs: fsName, ours: res['ours-nohash']!, peerName: 'tar -xpf', peer: res.peer! });
        rows.push({ name: 'apply rootfs.tar (fs stream)', fs: fsName, ours: res['ours-stream']!, peerName: 'tar -xpf', peer: res.peer! });
      }
      await b.umount(tmpfsDir, 0);
      mounts.pop();
    }

    // ---- (b) memory bound of a 1 GiB layer
    if (only.has('b')) {
      console.log(`(b) peak RSS applying a 1 GiB single-file layer on ${fsType(work)}`);
      const dir = path.join(work, 'big');
      const results: Record<string, Array<{ maxRssKiB: number; seconds: number }>> = { applyLayer: [], generateOnly: [], gnuTar: [] };
      const n = Math.max(3, Math.min(runs, 5));
      for (let r = 0; r < n; r++) {
        for (const who of r % 2 ? ['gnuTar', 'applyLayer', 'generateOnly'] : ['applyLayer', 'gnuTar', 'generateOnly']) {
          fs.mkdirSync(dir);
          await quiesce(false);
          const x =
            who === 'applyLayer' ? runChild('apply-big', [dir, String(BIG)]) : who === 'gnuTar' ? await gnuTarBig(dir, BIG) : runChild('gen-only', [String(BIG)]);
          if (who !== 'generateOnly' && fs.statSync(path.join(dir, 'big.bin')).size !== BIG) throw new Error(`${who}: wrong size`);
          fs.rmSync(dir, { recursive: true, force: true });
          results[who]!.push(x);
          process.stderr.write(`    run ${r + 1}/${n} ${who}: ${(x.maxRssKiB / 1024).toFixed(1)} MiB, ${x.seconds.toFixed(2)} s\n`);
        }
      }
      extra.bigLayer = { bytes: BIG, fs: fsType(work), runs: results };
      for (const [k, v] of Object.entries(results)) {
        const rss = v.map((x) => x.maxRssKiB / 1024);
        console.log(`    ${k.padEnd(12)} max RSS median ${median(rss).toFixed(1)} MiB (${Math.min(...rss).toFixed(1)}–${Math.max(...rss).toFixed(1)}), time median ${median(v.map((x) => x.seconds)).toFixed(2)} s`);
      }
    }

    // ---- (c), (d) the container edit in an overlay upper dir
    if (only.has('c') || only.has('d')) {
      let lower = path.join(path.dirname(TAR), 'rootfs');
      if (!fs.existsSync(path.join(lower, 'etc'))) {
        lower = path.join(work, 'lower');
        fs.mkdirSync(lower);
        await applyLayer(lower, fs.createReadStream(TAR), { format: 'naive' });
      }
      const ov = path.join(work, 'ov');
      const [upper, wdir, merged] = ['upper', 'work', 'merged'].map((d) => path.join(ov, d)) as [string, string, string];
      for (const d of [upper, wdir, merged]) fs.mkdirSync(d, { recursive: true });
      await b.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${wdir}`);
      mounts.push(merged);
      try {
        mutate(merged);
      } finally {
        await b.umount(merged, 0);
        mounts.pop();
      }
      const changes = await changesUpper(upper, [lower], 'overlay');
      const diffBytes = await drain(exportUpper(upper, 'overlay'));
      const upperFs = fsType(upper);
      // These take milliseconds: more rounds for the same confidence.
      const fastRuns = Math.max(runs, 15);
      extra.containerEdit = { changes: changes.length, diffTarBytes: diffBytes, upperFs, lower, runs: fastRuns };
      console.log(`(c/d) overlay upper on ${upperFs} with ${changes.length} changes, diff tar ${(diffBytes / 2 ** 20).toFixed(1)} MiB, ${fastRuns} runs`);
      for (const cache of ['warm', 'cold'] as const) {
        const drop = cache === 'cold';
        if (only.has('c')) {
          console.log(`(c) changesUpper, ${cache} cache`);
          const res = await interleave(
            fastRuns,
            drop,
            async () => {
              await changesUpper(upper, [lower], 'overlay');
            },
            () => timeCmd(['find', upper, '-xdev', '-printf', '']),
          );
          rows.push({ name: `changesUpper (${changes.length} changes), ${cache}`, fs: upperFs, ours: res.ours, peerName: 'find upper (floor)', peer: res.peer });
        }
        if (only.has('d')) {
          console.log(`(d) exportUpper, ${cache} cache`);
          const res = await interleave(
            fastRuns,
            drop,
            async () => {
              await drain(exportUpper(upper, 'overlay'));
            },
            () => timeCmd(['sh', '-c', `tar -C '${upper}' -cf - . | cat > /dev/null`]),
          );
          rows.push({ name: `exportUpper (${changes.length} changes), ${cache}`, fs: upperFs, ours: res.ours, peerName: 'tar -c | cat', peer: res.peer });
        }
      }
    }
  } finally {
    runner?.close();
    for (const m of mounts.reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
    fs.rmSync(work, { recursive: true, force: true });
  }

  console.log('');
  if (rows.length > 0) printTable(rows);
  const loadavgEnd = os.loadavg();
  console.log(`load average at the end: ${loadavgEnd.map((x) => x.toFixed(2)).join(' ')}`);
  const resultsDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const stamp = started.toISOString().replace(/:/g, '').replace(/\..*/, '').replace('T', '-');
  const file = path.join(resultsDir, `archive-${stamp}.json`);
  const json = {
    env: { ...env, loadavgEnd },
    rows: rows.map((r) => ({
      ...r,
      oursSummary: summary(r.ours),
      peerSummary: summary(r.peer),
      ratioOfMedians: summary(r.ours).median / summary(r.peer).median,
      pairedRatioMedian: pairedRatio(r),
    })),
    ...extra,
  };
  fs.writeFileSync(file, JSON.stringify(json, null, 2) + '\n');
  console.log(`results: ${path.relative(process.cwd(), file)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
