/**
 * containers-storage (the Go library under podman, buildah and CRI-O) through its CLI, as
 * /work/shared/notes/peers.md describes it. Commit is what buildah/podman do underneath: `diff` of the container
 * layer to a tar, `import-layer` of it on the image's top layer, `create-image`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { run, timed } from '../harness/command';
import { tinyLayer } from '../harness/tiny-layer';
import { DEEP_LAYERS, type BenchData, type BenchSystem, type RoundPlan, type RoundResult } from './system';

/** containers-storage on one driver (overlay, vfs, btrfs). */
export class CStorageSystem implements BenchSystem {
  readonly ours = false;
  readonly label: string;
  private readonly graph: string;
  private readonly runRoot: string;
  private readonly work: string;
  private rss = 0;

  constructor(
    private readonly driver: string,
    work: string,
  ) {
    this.label = `containers-storage ${driver}`;
    this.graph = path.join(work, `cs-${driver}`);
    this.runRoot = path.join(work, `cs-${driver}-run`);
    this.work = work;
  }

  private argv(...args: string[]): string[] {
    return ['containers-storage', '-g', this.graph, '-R', this.runRoot, '-s', this.driver, ...args];
  }

  private async t(times: Record<string, number>, name: string | null, ...args: string[]): Promise<string> {
    const r = await timed(this.argv(...args));
    this.rss = Math.max(this.rss, r.rssKb);
    if (name !== null) times[name] = (times[name] ?? 0) + r.ms;
    return r.stdout.trim();
  }

  private wipe(): void {
    run(this.argv('shutdown'), { allowFail: true });
    // The overlay driver bind-mounts its home onto itself; let go of it before deleting.
    for (const m of [path.join(this.graph, 'overlay'), path.join(this.graph, this.driver)]) run(['umount', '-R', m], { allowFail: true });
    fs.rmSync(this.graph, { recursive: true, force: true });
    fs.rmSync(this.runRoot, { recursive: true, force: true });
  }

  async start(): Promise<void> {
    this.wipe();
  }

  async stop(): Promise<void> {
    this.wipe();
  }

  async round(data: BenchData, plan: RoundPlan): Promise<RoundResult> {
    const t: Record<string, number> = {};
    this.rss = 0;
    this.wipe();
    fs.mkdirSync(this.graph, { recursive: true });
    try {
      await this.t(t, 'import_layers', 'import-layer', '--id', 'l1', '-f', data.layers[0]);
      await this.t(t, 'import_layers', 'import-layer', '--id', 'l2', '-f', data.layers[1], 'l1');
      await this.t(t, 'import_layers', 'import-layer', '--id', 'l3', '-f', data.layers[2], 'l2');
      await this.t(t, 'import_layers', 'create-image', '--id', 'img', 'l3');
      await this.t(t, 'create_ctr', 'create-container', '--id', 'c1', 'img');
      const mp = await this.t(t, 'mount', 'mount', 'c1');
      run(['sh', data.mutateScript, mp, data.blob]);
      // `container --json` prints an array with one record per container named.
      const parsed = JSON.parse(run(this.argv('container', '--json', 'c1'))) as unknown;
      const info = (Array.isArray(parsed) ? parsed[0] : parsed) as { layer?: string } | undefined;
      const layer = info?.layer;
      if (!layer) throw new Error('containers-storage: no layer in `container --json`');
      await this.t(t, 'changes', 'changes', layer);
      const out = path.join(this.work, 'cs-diff.tar');
      await this.t(t, 'diff', 'diff', '-u', '-f', out, layer);
      // commit = diff + import-layer + create-image (the diff step is timed again: it is part of a commit)
      await this.t(t, 'commit', 'diff', '-u', '-f', out, layer);
      await this.t(t, 'commit', 'import-layer', '--id', 'commit1', '-f', out, 'l3');
      await this.t(t, 'commit', 'create-image', '--id', 'img-commit', 'commit1');
      fs.rmSync(out, { force: true });
      await this.t(t, 'unmount', 'unmount', 'c1');
      await this.t(t, 'rm_ctr', 'delete-container', 'c1');
      if (plan.concurrent) {
        const start = process.hrtime.bigint();
        const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => timed(this.argv('create-container', '--id', `m${i}`, 'img'), { sync: i === 0 })));
        t.create16 = Number(process.hrtime.bigint() - start) / 1e6;
        for (const r of rs) this.rss = Math.max(this.rss, r.rssKb);
        for (let i = 0; i < 16; i++) run(this.argv('delete-container', `m${i}`));
      }
      if (plan.bulk) {
        await this.t(t, 'import_small', 'import-layer', '--id', 'small', '-f', data.smallTar);
        await this.t(t, 'import_big', 'import-layer', '--id', 'big', '-f', data.bigTar);
        run(this.argv('delete-layer', 'small'));
        run(this.argv('delete-layer', 'big'));
      }
      if (plan.deep) {
        const dir = path.join(this.work, 'tiny-layers');
        fs.mkdirSync(dir, { recursive: true });
        let parent: string[] = [];
        for (let i = 0; i < DEEP_LAYERS; i++) {
          const f = path.join(dir, `t${i}.tar`);
          if (!fs.existsSync(f)) fs.writeFileSync(f, tinyLayer(i));
          run(this.argv('import-layer', '--id', `d${i}`, '-f', f, ...parent));
          parent = [`d${i}`];
        }
        run(this.argv('create-image', '--id', 'deep', `d${DEEP_LAYERS - 1}`));
        await this.t(t, 'deep128', 'create-container', '--id', 'cd', 'deep');
        await this.t(t, 'deep128', 'mount', 'cd');
        run(this.argv('unmount', 'cd'));
      }
      return { times: t, rssKb: this.rss };
    } finally {
      this.wipe();
    }
  }
}
