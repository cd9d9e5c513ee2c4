/**
 * graphdriver through its CLI (`dist/cli/main.js`), one process per command, timed around the process like the
 * peers' CLIs: what a shell script using graphdriver pays, start-up of Node and the store included.
 * The image is loaded from the same `docker save` archive dockerd loads; commit, changes and diff work on the
 * container made by `create`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { run, timed } from '../harness/command';
import type { BenchData, BenchSystem, RoundPlan, RoundResult } from './system';

/** graphdriver CLI on one driver. */
export class OursCliSystem implements BenchSystem {
  readonly ours = false;
  readonly label: string;
  protected readonly root: string;
  protected rss = 0;

  constructor(
    private readonly driver: string,
    work: string,
    private readonly cli: string,
  ) {
    this.label = `graphdriver-cli ${driver}`;
    this.root = path.join(work, `ours-cli-${driver}`);
  }

  protected argv(...args: string[]): string[] {
    return [process.execPath, this.cli, '--root', this.root, '--driver', this.driver, ...args];
  }

  protected async t(times: Record<string, number>, name: string, ...args: string[]): Promise<string> {
    const r = await timed(this.argv(...args));
    this.rss = Math.max(this.rss, r.rssKb);
    times[name] = (times[name] ?? 0) + r.ms;
    return r.stdout.trim();
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.wipe();
  }

  protected wipe(): void {
    if (fs.existsSync(this.root)) {
      for (const id of run(this.argv('ps', '-q', '--no-trunc'), { allowFail: true }).split('\n').filter(Boolean)) {
        run(this.argv('rm', id), { allowFail: true });
      }
    }
    fs.rmSync(this.root, { recursive: true, force: true });
  }

  async round(data: BenchData, plan: RoundPlan): Promise<RoundResult> {
    const t: Record<string, number> = {};
    this.rss = 0;
    this.wipe();
    try {
      await this.t(t, 'load_image', 'load', '-q', '-i', data.imageTar);
      const ctr = await this.t(t, 'create_ctr', 'create', 'bench/test:l123');
      const mp = await this.t(t, 'mount', 'mount', ctr);
      run(['sh', data.mutateScript, mp, data.blob]);
      await this.t(t, 'changes', 'changes', ctr);
      const out = path.join(this.root, 'diff.tar');
      await this.t(t, 'diff', 'diff', '-o', out, ctr);
      fs.rmSync(out, { force: true });
      await this.t(t, 'commit', 'commit', ctr, 'bench/test:commit');
      await this.t(t, 'unmount', 'unmount', ctr);
      await this.t(t, 'rm_ctr', 'rm', ctr);
      if (plan.concurrent) {
        const start = process.hrtime.bigint();
        const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => timed(this.argv('--lock-timeout', '120', 'create', 'bench/test:l123'), { sync: i === 0 })));
        t.create16 = Number(process.hrtime.bigint() - start) / 1e6;
        for (const r of rs) this.rss = Math.max(this.rss, r.rssKb);
      }
      return { times: t, rssKb: this.rss };
    } finally {
      this.wipe();
    }
  }
}
