/**
 * overlay2: create + get of a container layer on a 10-layer chain, against a bare overlay mount of the same
 * directories (mount(2) directly, and the `mount -t overlay` command). Prints medians of N runs and the ratios.
 *
 *   npx tsc -p tsconfig.json --outDir /tmp/gd-bench && node /tmp/gd-bench/bench/overlay2-create-get.js [runs]
 *
 * Needs root and a kernel with overlay. GRAPHDRIVER_ADDON selects the addon build.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Overlay2Driver } from '../lib/drivers/overlay2';
import { loadBindings } from '../lib/native/bindings';
import { UmountFlags } from '../lib/native/constants';

const CHAIN = 10;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 5);
  const b = loadBindings();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-bench-ov-'));
  const home = path.join(root, 'overlay2');
  const d = await Overlay2Driver.init(home);
  try {
    let parent: string | null = null;
    for (let i = 0; i < CHAIN; i++) {
      const id = `layer${i}`;
      await d.create(id, parent);
      fs.writeFileSync(path.join(d.dir(id), 'diff', `f${i}`), `layer ${i}\n`);
      parent = id;
    }
    const lowerDirs = (await d.getMetadata(`layer${CHAIN - 1}`))!;
    // The same lower directories the driver stacks: the top layer's diff, then its lowers.
    const lowers = [lowerDirs.UpperDir!, ...lowerDirs.LowerDir!.split(':')].join(':');

    const driverTimes: number[] = [];
    const syscallTimes: number[] = [];
    const commandTimes: number[] = [];
    for (let r = -1; r < runs; r++) {
      // Driver: create the container layer and mount it.
      const id = `ctr${r + 1}`;
      // Each timed section starts from a quiet filesystem: unmounting an overlay syncs its upper filesystem, and
      // that journal commit would otherwise land in whichever section runs next.
      await b.syncfs(root);
      let t0 = process.hrtime.bigint();
      await d.createReadWrite(id, parent);
      const merged = await d.get(id);
      const tDriver = ms(t0);
      if (!fs.existsSync(path.join(merged, 'f0'))) throw new Error('bottom layer not visible');
      await d.put(id);
      await d.remove(id);

      // Bare mount(2) of the same lower dirs, with fresh upper/work/merged dirs made the same way.
      const bare = path.join(root, `bare${r + 1}`);
      await b.syncfs(root);
      t0 = process.hrtime.bigint();
      for (const sub of ['', 'upper', 'work', 'merged']) fs.mkdirSync(path.join(bare, sub));
      await b.mount('overlay', path.join(bare, 'merged'), 'overlay', 0, `index=off,lowerdir=${lowers},upperdir=${bare}/upper,workdir=${bare}/work`);
      const tSys = ms(t0);
      await b.umount(path.join(bare, 'merged'), UmountFlags.MNT_DETACH);
      fs.rmSync(bare, { recursive: true, force: true });

      // The mount(8) command, as one would type it.
      await b.syncfs(root);
      t0 = process.hrtime.bigint();
      for (const sub of ['', 'upper', 'work', 'merged']) fs.mkdirSync(path.join(bare, sub));
      execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `index=off,lowerdir=${lowers},upperdir=${bare}/upper,workdir=${bare}/work`, path.join(bare, 'merged')]);
      const tCmd = ms(t0);
      await b.umount(path.join(bare, 'merged'), UmountFlags.MNT_DETACH);
      fs.rmSync(bare, { recursive: true, force: true });

      if (r >= 0) {
        driverTimes.push(tDriver);
        syscallTimes.push(tSys);
        commandTimes.push(tCmd);
      }
    }
    const md = median(driverTimes);
    const msys = median(syscallTimes);
    const mcmd = median(commandTimes);
    const out = {
      runs,
      chain: CHAIN,
      driverCreateGetMs: +md.toFixed(3),
      bareMountSyscallMs: +msys.toFixed(3),
      bareMountCommandMs: +mcmd.toFixed(3),
      ratioVsSyscall: +(md / msys).toFixed(2),
      ratioVsCommand: +(md / mcmd).toFixed(2),
      samples: { driver: driverTimes.map((x) => +x.toFixed(3)), syscall: syscallTimes.map((x) => +x.toFixed(3)), command: commandTimes.map((x) => +x.toFixed(3)) },
    };
    console.log(JSON.stringify(out, null, 2));
  } finally {
    await d.cleanup().catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
