/**
 * The floors a layer store is measured against: GNU tar extracting the same layer tars into fresh directories
 * (no whiteout processing, no metadata: the least work an import can do), and umoci unpacking the OCI image into
 * one flat bundle (import) and repacking it after the standard edit (commit).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { run, timed } from '../harness/command';
import type { BenchData, BenchSystem, RoundPlan, RoundResult } from './system';

/** GNU tar. */
export class TarSystem implements BenchSystem {
  readonly ours = false;
  readonly label = 'GNU tar -x';
  private readonly dir: string;

  constructor(work: string) {
    this.dir = path.join(work, 'tar');
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private async extract(t: Record<string, number>, name: string, tar: string, into: string): Promise<number> {
    fs.mkdirSync(into, { recursive: true });
    const r = await timed(['tar', '--numeric-owner', '--xattrs', "--xattrs-include=security.capability", '-xpf', tar, '-C', into]);
    t[name] = (t[name] ?? 0) + r.ms;
    return r.rssKb;
  }

  async round(data: BenchData, plan: RoundPlan): Promise<RoundResult> {
    const t: Record<string, number> = {};
    let rss = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
    try {
      for (const l of data.layers) rss = Math.max(rss, await this.extract(t, 'import_layers', l, path.join(this.dir, 'rootfs')));
      if (plan.bulk) {
        rss = Math.max(rss, await this.extract(t, 'import_small', data.smallTar, path.join(this.dir, 'small')));
        rss = Math.max(rss, await this.extract(t, 'import_big', data.bigTar, path.join(this.dir, 'big')));
      }
      return { times: t, rssKb: rss };
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/** umoci 0.4 on a copy of the OCI layout. */
export class UmociSystem implements BenchSystem {
  readonly ours = false;
  readonly label = 'umoci';
  private readonly dir: string;

  constructor(work: string) {
    this.dir = path.join(work, 'umoci');
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async round(data: BenchData): Promise<RoundResult> {
    const t: Record<string, number> = {};
    let rss = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.mkdirSync(this.dir, { recursive: true });
    const oci = path.join(this.dir, 'oci');
    const bundle = path.join(this.dir, 'bundle');
    run(['cp', '-a', data.ociLayout, oci]);
    try {
      const u = await timed(['umoci', 'unpack', '--image', `${oci}:l123`, bundle]);
      t.import_layers = u.ms;
      run(['sh', data.mutateScript, path.join(bundle, 'rootfs'), data.blob]);
      const r = await timed(['umoci', 'repack', '--image', `${oci}:commit`, bundle]);
      t.commit = r.ms;
      rss = Math.max(u.rssKb, r.rssKb);
      return { times: t, rssKb: rss };
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
