/**
 * `npm run bench`: graphdriver against its peers, side by side, in one run (issue 10).
 *
 * Data (built once by bench/data/build.sh, cached in /var/tmp/graphdriver-bench): a Debian bookworm minbase
 * rootfs layer, an apt-installed layer with whiteouts and an opaque directory, a small layer, a ~30,000-file
 * layer and a 1 GiB single-file layer, as layer tars, a `docker save` archive and an OCI layout.
 *
 * Groups (each on one file system, the systems of a group alternate A B C / C B A round by round, the first round
 * is a warm-up and is not reported):
 *   overlay2: graphdriver overlay2 (library), graphdriver-cli, containers-storage overlay, dockerd overlay2
 *   vfs:      the same on vfs
 *   btrfs:    the same three on a loop-mounted btrfs image (overlay2, vfs and floor: a loop-mounted ext4)
 *   floor:    graphdriver overlay2, GNU tar -x, umoci (unpack, repack)
 *   registry: pull of the bench image from a local docker-registry (pushed by skopeo, gzip layers) into an empty
 *             store: graphdriver overlay2 (library pullImage), graphdriver-cli (`pull`), `skopeo copy
 *             docker://... dir:` + our loadImage of that directory (one timed op), dockerd overlay2 `docker pull`
 *             (not in the default groups: ask for it with --groups registry)
 * Every operation is preceded by an untimed `sync`. Ours runs in a child process using the library (timed inside
 * it), the peers' commands are timed around their process (their own start-up is part of using them).
 *
 *   npm run bench -- [--runs 5] [--groups overlay2,vfs,btrfs,floor,registry] [--quick] [--work DIR] [--fs loop|work]
 *     --quick: skip the 16-concurrent, bulk (small files, 1 GiB) and 128-deep operations
 *     --fs:    overlay2, vfs and floor on a loop-mounted ext4 of their own (loop, the default) or in DIR (work)
 *
 * Prints one table per group (median (min–max) per operation, ours/peer ratio of medians, peak RSS) and writes
 * everything to bench/results/peers-<date>.json. Needs root; peers missing on the machine are reported and left out.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { have, run } from './harness/command';
import { fmtSummary, summarize, type Summary } from './harness/stats';
import { CStorageSystem } from './systems/cstorage';
import { DockerSystem } from './systems/docker';
import { OursSystem } from './systems/ours';
import { OursCliSystem } from './systems/ours-cli';
import { TarSystem, UmociSystem } from './systems/plain';
import { DockerPullSystem, OursCliPullSystem, OursPullSystem, SkopeoLoadSystem } from './systems/registry';
import { REGISTRY_BIN, startBenchRegistry } from './harness/registry';
import { OPERATIONS, type BenchData, type BenchSystem, type RoundPlan } from './systems/system';
import { DEFAULT_ADDON, ROOT } from './harness/repo-root';

process.env.GRAPHDRIVER_ADDON ??= DEFAULT_ADDON;

interface Args {
  runs: number;
  groups: string[];
  plan: RoundPlan;
  work: string;
  /** Where the ext4 groups run: a loop-mounted ext4 of their own (default) or the work directory itself. */
  fs: 'loop' | 'work';
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    runs: 5,
    groups: ['overlay2', 'vfs', 'btrfs', 'floor'],
    plan: { concurrent: true, bulk: true, deep: true },
    work: '/var/tmp/graphdriver-bench/work',
    fs: 'loop',
  };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i]!;
    if (v === '--runs') a.runs = Math.max(1, Number(argv[++i]));
    else if (v === '--groups') a.groups = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (v === '--quick') a.plan = { concurrent: false, bulk: false, deep: false };
    else if (v === '--work') a.work = path.resolve(argv[++i] ?? a.work);
    else if (v === '--fs') {
      const f = argv[++i];
      if (f !== 'loop' && f !== 'work') throw new Error('--fs takes loop or work');
      a.fs = f;
    }
    else throw new Error(`unknown argument ${v}`);
  }
  return a;
}

function loadData(): BenchData {
  const dir = execFileSync('bash', [path.join(ROOT, 'bench', 'data', 'build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const f = (n: string): string => path.join(dir, n);
  return {
    dir,
    layers: [f('L1.tar'), f('L2.tar'), f('L3.tar')],
    imageTar: f('image.tar'),
    ociLayout: f('oci'),
    smallTar: f('small.tar'),
    bigTar: f('big.tar'),
    mutateScript: path.join(ROOT, 'bench', 'data', 'mutate.sh'),
    blob: f('blob16m'),
  };
}

/**
 * A file system of its own for a group, on a sparse image file behind a direct-I/O loop device; unmounted and
 * deleted by the returned function. btrfs needs one anyway. ext4 gets one too (unless `--fs work`): the work
 * directory's file system here is mounted with `discard`, so every large delete (each round wipes the previous
 * round's stores) sends discards to a thin-provisioned virtual disk, and whichever system wrote next paid for
 * the re-allocation behind it: seconds of noise on import_layers, worst for the fastest system. An ext4
 * without `discard` on a loop device reuses its blocks like a long-lived data disk does.
 */
function loopMount(work: string, fstype: 'btrfs' | 'ext4'): { dir: string; release: () => void } {
  const img = path.join(work, `${fstype}.img`);
  const dir = path.join(work, fstype);
  fs.mkdirSync(dir, { recursive: true });
  run(['umount', dir], { allowFail: true });
  fs.rmSync(img, { force: true });
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 60 * 2 ** 30);
  if (fstype === 'btrfs') run(['mkfs.btrfs', '-q', '-f', img]);
  else run(['mkfs.ext4', '-q', '-F', '-E', 'nodiscard', img]);
  const dev = run(['losetup', '--find', '--show', '--direct-io=on', img]).trim();
  try {
    run(['mount', dev, dir]);
  } catch (e) {
    run(['losetup', '-d', dev], { allowFail: true });
    throw e;
  }
  return {
    dir,
    release: () => {
      // A peer that was just stopped (dockerd, its containerd) can hold the file system for a moment: retry,
      // then detach it lazily rather than leave it mounted (losetup -d then frees the device once it is unused).
      let unmounted = false;
      for (let i = 0; i < 20 && !unmounted; i++) {
        unmounted = spawnSync('umount', [dir]).status === 0;
        if (!unmounted) spawnSync('sleep', ['0.5']);
      }
      if (!unmounted) run(['umount', '-l', dir], { allowFail: true });
      run(['losetup', '-d', dev], { allowFail: true });
      fs.rmSync(img, { force: true });
    },
  };
}

function fsType(dir: string): string {
  return run(['stat', '-f', '-c', '%T', dir]).trim();
}

interface GroupResult {
  group: string;
  filesystem: string;
  systems: Array<{ label: string; ours: boolean; ops: Record<string, Summary>; rssKb: number; errors: string[] }>;
}

async function runGroup(group: string, args: Args, data: BenchData): Promise<GroupResult | null> {
  let base = path.join(args.work, group);
  let release = (): void | Promise<void> => undefined;
  fs.mkdirSync(base, { recursive: true });
  if (group === 'btrfs') {
    if (!have('mkfs.btrfs')) {
      console.log('group btrfs skipped: mkfs.btrfs missing (apt-get install btrfs-progs)');
      return null;
    }
    const m = loopMount(base, 'btrfs');
    base = m.dir;
    release = m.release;
  } else if (group !== 'registry' && args.fs === 'loop') {
    const m = loopMount(base, 'ext4');
    base = m.dir;
    release = m.release;
  }
  const systems: BenchSystem[] = [];
  const skipped: string[] = [];
  const peerDriver: Record<string, string> = { overlay2: 'overlay', vfs: 'vfs', btrfs: 'btrfs' };
  // The CLI compiled in the same build as this script (dist-bench/lib/cli/main.js).
  const cli = path.join(__dirname, '..', 'lib', 'cli', 'main.js');
  if (group === 'registry') {
    for (const [tool, pkg] of [['skopeo', 'skopeo'], [REGISTRY_BIN, 'docker-registry']] as const) {
      if (!have(tool)) {
        console.log(`group registry skipped: ${tool} missing (apt-get install ${pkg})`);
        return null;
      }
    }
    const reg = await startBenchRegistry(path.join(base, 'registry'), data.imageTar);
    release = () => reg.stop().catch((e: unknown) => console.log(`  registry: stop failed: ${String(e)}`));
    console.log(`  registry ${reg.host}: ${reg.ref} (${reg.imageId.slice(0, 19)}, ${(reg.layerBytes / 2 ** 20).toFixed(1)} MiB of gzip layers)`);
    systems.push(new OursPullSystem('overlay2', base, reg));
    if (fs.existsSync(cli)) systems.push(new OursCliPullSystem('overlay2', base, cli, reg));
    else skipped.push(`graphdriver CLI (${cli} not built)`);
    systems.push(new SkopeoLoadSystem('overlay2', base, reg));
    if (have('dockerd') && fs.existsSync('/usr/bin/docker')) systems.push(new DockerPullSystem('overlay2', base, reg));
    else skipped.push('dockerd (apt-get install docker.io)');
  } else if (group === 'floor') {
    systems.push(new OursSystem('overlay2', base));
    systems.push(new TarSystem(base));
    if (have('umoci')) systems.push(new UmociSystem(base));
    else skipped.push('umoci (apt-get install umoci)');
  } else {
    systems.push(new OursSystem(group, base));
    if (fs.existsSync(cli)) systems.push(new OursCliSystem(group, base, cli));
    else skipped.push(`graphdriver CLI (${cli} not built)`);
    if (have('containers-storage')) systems.push(new CStorageSystem(peerDriver[group]!, base));
    else skipped.push('containers-storage (apt-get install containers-storage)');
    if (have('dockerd') && fs.existsSync('/usr/bin/docker')) systems.push(new DockerSystem(group, base));
    else skipped.push('dockerd (apt-get install docker.io)');
  }
  const filesystem = fsType(base);
  console.log(`\n### group ${group} on ${filesystem} (${base}): ${systems.map((s) => s.label).join(', ')}`);
  for (const s of skipped) console.log(`  not measured: ${s}`);
  const samples = new Map<BenchSystem, { ops: Record<string, number[]>; rss: number; errors: string[] }>();
  const started: BenchSystem[] = [];
  try {
    for (const s of systems) {
      samples.set(s, { ops: {}, rss: 0, errors: [] });
      try {
        await s.start();
        started.push(s);
      } catch (e) {
        samples.get(s)!.errors.push(`start: ${String(e)}`);
        console.log(`  ${s.label}: could not start: ${String(e)}`);
      }
    }
    for (let r = 0; r <= args.runs; r++) {
      const order = r % 2 ? [...started].reverse() : started;
      for (const s of order) {
        const rec = samples.get(s)!;
        const t0 = Date.now();
        try {
          const res = await s.round(data, args.plan);
          if (r > 0) {
            for (const [op, ms] of Object.entries(res.times)) (rec.ops[op] ??= []).push(ms);
            rec.rss = Math.max(rec.rss, res.rssKb);
          }
          console.log(`  round ${r === 0 ? 'warm-up' : r} ${s.label}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        } catch (e) {
          rec.errors.push(`round ${r}: ${String(e)}`);
          console.log(`  round ${r} ${s.label}: FAILED ${String(e)}`);
        }
      }
    }
  } finally {
    for (const s of started) await s.stop().catch((e: unknown) => console.log(`  ${s.label}: stop failed: ${String(e)}`));
    await release();
  }
  return {
    group,
    filesystem,
    systems: systems.map((s) => {
      const rec = samples.get(s)!;
      const ops: Record<string, Summary> = {};
      for (const [op, xs] of Object.entries(rec.ops)) ops[op] = summarize(xs);
      return { label: s.label, ours: s.ours, ops, rssKb: rec.rss, errors: rec.errors };
    }),
  };
}

function printGroup(g: GroupResult): string {
  const ours = g.systems.find((s) => s.ours);
  const peers = g.systems.filter((s) => !s.ours);
  const lines: string[] = [];
  lines.push(`Group ${g.group} (${g.filesystem}); median (min–max) of the timed rounds; ratio = ours / peer (below 1: ours faster)`);
  lines.push('');
  const head = ['operation', ...g.systems.map((s) => s.label), ...peers.map((p) => `ours/${p.label.split(' ')[0]}`)];
  lines.push(`| ${head.join(' | ')} |`);
  lines.push(`|${head.map(() => '---').join('|')}|`);
  for (const [op] of OPERATIONS) {
    if (!g.systems.some((s) => s.ops[op])) continue;
    const cells = [op, ...g.systems.map((s) => fmtSummary(s.ops[op]))];
    for (const p of peers) {
      const a = ours?.ops[op]?.median;
      const b = p.ops[op]?.median;
      cells.push(a !== undefined && b !== undefined ? (a / b).toFixed(2) : '-');
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  const rss = ['peak RSS', ...g.systems.map((s) => (s.rssKb ? `${(s.rssKb / 1024).toFixed(0)} MiB` : '-'))];
  for (const p of peers) rss.push(ours && ours.rssKb && p.rssKb ? (ours.rssKb / p.rssKb).toFixed(2) : '-');
  lines.push(`| ${rss.join(' | ')} |`);
  for (const s of g.systems) for (const e of s.errors) lines.push(`\n${s.label}: ${e}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (mounts, device nodes, daemons)');
  const args = parseArgs(process.argv.slice(2));
  const data = loadData();
  fs.mkdirSync(args.work, { recursive: true });
  const machine = {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    runs: args.runs,
    plan: args.plan,
  };
  console.log(`graphdriver bench: ${machine.cpus}, ${machine.memory}, Linux ${machine.kernel}, node ${machine.node}, ${args.runs} timed rounds + 1 warm-up`);
  const results: GroupResult[] = [];
  for (const g of args.groups) {
    const r = await runGroup(g, args, data);
    if (r) results.push(r);
  }
  const tables = results.map(printGroup).join('\n\n');
  console.log(`\n${tables}\n`);
  const outDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, `peers-${machine.date.replace(/[:.]/g, '').slice(0, 15)}.json`);
  fs.writeFileSync(out, `${JSON.stringify({ machine, operations: OPERATIONS, results, tables }, null, 2)}\n`);
  console.log(`results written to ${path.relative(ROOT, out)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
