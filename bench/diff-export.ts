/**
 * Micro-benchmark of a container diff export (the `diff` row of `npm run bench`), with its floors side by side:
 *
 *  - ours:      Storage.exportContainerDiff piped into a file, in this process, exactly as bench/agents/ours-agent.ts
 *               times it;
 *  - tar -c:    GNU tar of the same files (the changed paths that still exist, read from the mounted container,
 *               `--no-recursion -T list`) into a file;
 *  - tar upper: (overlay2) GNU tar of the container's upper directory, what a native diff reads;
 *  - cs diff:   `containers-storage diff -u -f` of the same edit in its own store on the same driver (its process
 *               start-up included, as the peer bench counts it).
 *
 * The container is set up once (L1+L2+L3 of the bench data, a container, bench/data/mutate.sh), untimed. Then
 * `runs` rounds (after one warm-up) run the systems in alternating order (A B C / C B A), each preceded by an
 * untimed sync; the output file is removed after every run. Nothing is forked from this process once the store
 * exists: sync and the peers run through a helper shell (see Shell). Reported: median (min–max) wall time, median user+sys
 * CPU, and ours/peer ratios (ratio of medians and median of per-round ratios: the machine is shared, compare the
 * ratios). Results go to bench/results/diff-export-<date>.json.
 *
 *   npx tsc -p bench && node dist-bench/bench/diff-export.js [--runs 15] [--driver overlay2|btrfs] [--no-cs]
 *     [--work DIR] [--ours-only N]
 *
 * --driver btrfs makes a loop-mounted btrfs under the work directory. --ours-only N skips the peers and runs only
 * our export N times (for `node --cpu-prof` or `strace -c -f`). Needs root and the bench data
 * (bench/data/build.sh).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Session } from 'node:inspector';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';

import { ChangeKind } from '../lib/archive/change';
import { Storage } from '../lib/storage/storage';
import { median } from './harness/stats';
import { DEFAULT_ADDON, ROOT } from './harness/repo-root';

interface Args {
  runs: number;
  driver: 'overlay2' | 'btrfs';
  cs: boolean;
  work: string;
  oursOnly: number;
  /** Write a CPU profile of the timed rounds here (with --ours-only: only our export is profiled). */
  prof: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 15, driver: 'overlay2', cs: true, work: '/var/tmp/graphdriver-bench/work-diff-export', oursOnly: 0, prof: null };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i]!;
    if (v === '--runs') a.runs = Math.max(1, Number(argv[++i]));
    else if (v === '--driver') {
      const d = argv[++i];
      if (d !== 'overlay2' && d !== 'btrfs') throw new Error(`--driver: overlay2 or btrfs, not ${d}`);
      a.driver = d;
    } else if (v === '--no-cs') a.cs = false;
    else if (v === '--work') a.work = path.resolve(argv[++i] ?? a.work);
    else if (v === '--ours-only') a.oursOnly = Math.max(1, Number(argv[++i]));
    else if (v === '--prof') a.prof = path.resolve(argv[++i] ?? 'diff-export.cpuprofile');
    else throw new Error(`unknown argument ${v}`);
  }
  return a;
}

process.env.GRAPHDRIVER_ADDON ??= DEFAULT_ADDON;

function run(argv: readonly string[], allowFail = false): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0 && !allowFail) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout ?? '';
}

/** One timed run: wall and CPU (user+sys) milliseconds. */
interface Sample {
  wall: number;
  cpu: number;
}

function shellQuote(a: string): string {
  return `'${a.replace(/'/g, `'\\''`)}'`;
}

/**
 * A shell started before the store exists that runs the untimed `sync` and the peers' commands. Forking this
 * process instead (spawn) would make our next export pay a copy-on-write fault on every page of the heap it
 * touches: ~100 ms of system time, more than the export itself (bench/archive.ts avoids it the same way).
 */
class Shell {
  private readonly proc = spawn('/bin/sh', [], { stdio: ['pipe', 'pipe', 'inherit'] });
  private buf = '';
  private pending: { resolve: (status: number) => void; reject: (e: Error) => void } | null = null;
  private readonly timeFile = path.join(os.tmpdir(), `gd-diff-export-time-${process.pid}`);

  constructor() {
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (d: string) => {
      this.buf += d;
      const m = /__END__ (\d+)\n/.exec(this.buf);
      if (m === null || this.pending === null) return;
      this.buf = this.buf.slice(m.index + m[0].length);
      const p = this.pending;
      this.pending = null;
      p.resolve(Number(m[1]));
    });
    this.proc.on('exit', () => this.pending?.reject(new Error('helper shell exited')));
  }

  /** Runs `argv` (its output discarded); resolves to its exit status. */
  run(argv: readonly string[]): Promise<number> {
    if (this.pending !== null) throw new Error('helper shell busy');
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.proc.stdin.write(`${argv.map(shellQuote).join(' ')} >/dev/null; echo "__END__ $?"\n`);
    });
  }

  /** `argv` timed around its process (wall here, CPU from /usr/bin/time). */
  async timed(argv: readonly string[]): Promise<Sample> {
    const t0 = process.hrtime.bigint();
    const status = await this.run(['/usr/bin/time', '-f', '%U %S', '-o', this.timeFile, ...argv]);
    const wall = Number(process.hrtime.bigint() - t0) / 1e6;
    if (status !== 0) throw new Error(`${argv.join(' ')} exited ${status}`);
    const [u, s] = fs.readFileSync(this.timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
    return { wall, cpu: ((u ?? 0) + (s ?? 0)) * 1000 };
  }

  close(): void {
    this.proc.stdin.end();
    fs.rmSync(this.timeFile, { force: true });
  }
}

function imageConfig(diffIds: string[]): Buffer {
  return Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds }, history: diffIds.map(() => ({})) }));
}

interface BenchData {
  layers: string[];
  blob: string;
  mutate: string;
}

function loadData(): BenchData {
  const dir = execFileSync('bash', [path.join(ROOT, 'bench', 'data', 'build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return { layers: ['L1.tar', 'L2.tar', 'L3.tar'].map((f) => path.join(dir, f)), blob: path.join(dir, 'blob16m'), mutate: path.join(ROOT, 'bench', 'data', 'mutate.sh') };
}

/** Our store with the edited container, and what the peers need to read the same files. */
interface OursSetup {
  store: Storage;
  ctr: string;
  mountPoint: string;
  /** Changed paths (no deletes), relative, for `tar -T`. */
  listFile: string;
  /** overlay2: the container's upper directory. */
  upper: string | null;
  changes: number;
}

async function setupOurs(base: string, driver: string, data: BenchData): Promise<OursSetup> {
  const root = path.join(base, `ours-${driver}`);
  run(['rm', '-rf', root], true);
  const store = await Storage.open({ root, driver });
  let parent: string | null = null;
  const diffIds: string[] = [];
  for (const t of data.layers) {
    const l = await store.registerLayer(fs.createReadStream(t), parent);
    parent = l.chainId;
    diffIds.push(l.diffId);
  }
  const img = await store.createImage(imageConfig(diffIds));
  const c = await store.createContainer(img.id);
  const mountPoint = await store.mountContainer(c.id);
  run(['sh', data.mutate, mountPoint, data.blob]);
  const changes = await store.containerChanges(c.id);
  const listFile = path.join(base, 'changed-paths.txt');
  fs.writeFileSync(listFile, changes.filter((ch) => ch.kind !== ChangeKind.Delete).map((ch) => `.${ch.path}\n`).join(''));
  const upper = driver === 'overlay2' ? path.join(root, 'overlay2', c.mountId, 'diff') : null;
  return { store, ctr: c.id, mountPoint, listFile, upper, changes: changes.length };
}

/** containers-storage with the same edit; returns the layer to diff. */
function setupCs(base: string, driver: string, data: BenchData): { argv: (...a: string[]) => string[]; layer: string; wipe: () => void } {
  const graph = path.join(base, `cs-${driver}`);
  const runRoot = path.join(base, `cs-${driver}-run`);
  const csDriver = driver === 'overlay2' ? 'overlay' : driver;
  const argv = (...a: string[]): string[] => ['containers-storage', '-g', graph, '-R', runRoot, '-s', csDriver, ...a];
  const wipe = (): void => {
    run(argv('shutdown'), true);
    for (const m of [path.join(graph, 'overlay'), path.join(graph, csDriver)]) run(['umount', '-R', m], true);
    run(['rm', '-rf', graph], true);
    run(['rm', '-rf', runRoot], true);
  };
  wipe();
  fs.mkdirSync(graph, { recursive: true });
  run(argv('import-layer', '--id', 'l1', '-f', data.layers[0]!));
  run(argv('import-layer', '--id', 'l2', '-f', data.layers[1]!, 'l1'));
  run(argv('import-layer', '--id', 'l3', '-f', data.layers[2]!, 'l2'));
  run(argv('create-image', '--id', 'img', 'l3'));
  run(argv('create-container', '--id', 'c1', 'img'));
  const mp = run(argv('mount', 'c1')).trim();
  run(['sh', data.mutate, mp, data.blob]);
  const parsed = JSON.parse(run(argv('container', '--json', 'c1'))) as unknown;
  const info = (Array.isArray(parsed) ? parsed[0] : parsed) as { layer?: string } | undefined;
  if (!info?.layer) throw new Error('containers-storage: no layer in `container --json`');
  return { argv, layer: info.layer, wipe };
}

function btrfsMount(work: string): { dir: string; release: () => void } {
  const img = path.join(work, 'btrfs.img');
  const dir = path.join(work, 'btrfs');
  fs.mkdirSync(dir, { recursive: true });
  run(['umount', dir], true);
  fs.rmSync(img, { force: true });
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 8 * 2 ** 30);
  run(['mkfs.btrfs', '-q', '-f', img]);
  run(['mount', '-o', 'loop', img, dir]);
  return {
    dir,
    release: () => {
      run(['umount', dir], true);
      fs.rmSync(img, { force: true });
    },
  };
}

async function oursOnce(s: OursSetup, out: string): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await pipeline(await s.store.exportContainerDiff(s.ctr), fs.createWriteStream(out));
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}

function post<T>(session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
}

async function startProfile(): Promise<Session> {
  const session = new Session();
  session.connect();
  await post(session, 'Profiler.enable');
  await post(session, 'Profiler.setSamplingInterval', { interval: 100 });
  await post(session, 'Profiler.start');
  return session;
}

async function stopProfile(session: Session, file: string): Promise<void> {
  const { profile } = await post<{ profile: unknown }>(session, 'Profiler.stop');
  fs.writeFileSync(file, JSON.stringify(profile));
  session.disconnect();
  console.log(`  CPU profile of the timed rounds: ${file}`);
}

function fmt(xs: readonly number[]): string {
  return `${median(xs).toFixed(1)} ms (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const shell = new Shell();
  const data = loadData();
  fs.mkdirSync(args.work, { recursive: true });
  const mnt = args.driver === 'btrfs' ? btrfsMount(args.work) : null;
  const base = mnt?.dir ?? args.work;
  const ours = await setupOurs(base, args.driver, data);
  const cs = args.cs && args.oursOnly === 0 && run(['sh', '-c', 'command -v containers-storage'], true).trim() !== '' ? setupCs(base, args.driver, data) : null;
  const out = path.join(base, 'diff-out.tar');
  const systems: Array<{ name: string; once: () => Promise<Sample> }> = [{ name: 'ours', once: () => oursOnce(ours, out) }];
  if (args.oursOnly === 0) {
    systems.push({ name: 'tar -c (same files)', once: () => shell.timed(['tar', '-C', ours.mountPoint, '--no-recursion', '-T', ours.listFile, '-cf', out]) });
    if (ours.upper !== null) systems.push({ name: 'tar -c upper', once: () => shell.timed(['tar', '-C', ours.upper!, '-cf', out, '.']) });
    if (cs !== null) systems.push({ name: 'containers-storage diff', once: () => shell.timed(cs.argv('diff', '-u', '-f', out, cs.layer)) });
  }
  const samples = new Map<string, Sample[]>(systems.map((s) => [s.name, []]));
  const sizes = new Map<string, number>();
  try {
    const rounds = args.oursOnly > 0 ? args.oursOnly : args.runs;
    const session = args.prof === null ? null : await startProfile();
    for (let r = -1; r < rounds; r++) {
      const order = r % 2 === 0 ? systems : [...systems].reverse();
      for (const s of order) {
        await shell.run(['sync']);
        const x = await s.once();
        sizes.set(s.name, fs.statSync(out).size);
        fs.rmSync(out, { force: true });
        if (r >= 0) samples.get(s.name)!.push(x);
      }
    }
    if (session !== null) await stopProfile(session, args.prof!);
    const oursWall = samples.get('ours')!.map((x) => x.wall);
    console.log(`${args.driver}: ${ours.changes} changes, ${rounds} rounds (+1 warm-up), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    const rows = [];
    for (const s of systems) {
      const xs = samples.get(s.name)!;
      const wall = xs.map((x) => x.wall);
      const paired = median(wall.map((w, i) => oursWall[i]! / w));
      const row = { name: s.name, bytes: sizes.get(s.name), wall: median(wall), min: Math.min(...wall), max: Math.max(...wall), cpu: median(xs.map((x) => x.cpu)), oursRatio: median(oursWall) / median(wall), pairedRatio: paired };
      rows.push(row);
      console.log(
        `  ${s.name.padEnd(24)} ${fmt(wall).padEnd(28)} cpu ${row.cpu.toFixed(1).padStart(6)} ms  ${String(row.bytes).padStart(9)} B` +
          (s.name === 'ours' ? '' : `  ours/this ${row.oursRatio.toFixed(2)} (paired ${paired.toFixed(2)})`),
      );
    }
    if (args.oursOnly === 0) {
      const dir = path.join(ROOT, 'bench', 'results');
      fs.mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `diff-export-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`);
      fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), driver: args.driver, changes: ours.changes, rounds, load: os.loadavg(), rows, samples: Object.fromEntries(samples) }, null, 2));
      console.log(`  -> ${path.relative(ROOT, file)}`);
    }
  } finally {
    await ours.store.unmountContainer(ours.ctr).catch(() => undefined);
    await ours.store.removeContainer(ours.ctr).catch(() => undefined);
    await ours.store.close().catch(() => undefined);
    cs?.wipe();
    // rm(1): fs.rmSync of a whole image store takes seconds of JavaScript
    run(['rm', '-rf', path.join(base, `ours-${args.driver}`)], true);
    fs.rmSync(ours.listFile, { force: true });
    mnt?.release();
    shell.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
