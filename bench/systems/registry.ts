/**
 * The `registry` group (issue 9): pulling the bench image (3 gzip layers, Debian minbase + apt layer + small
 * layer) from a local docker-registry into an empty store, every round from scratch:
 *
 *   - graphdriver (library): `Storage.pullImage` in the agent process (download, verify, extract concurrently);
 *   - graphdriver-cli: `graphdriver pull -q`, one process, Node start-up and store open included;
 *   - skopeo + graphdriver load: `skopeo copy docker://REF dir:DIR` (download to a directory on the same file
 *     system) then the library's `Storage.loadImage(DIR)`, timed together as one `pull` (each half also has
 *     its own row);
 *   - dockerd: `docker pull` on dockerd 20.10's overlay2, the image removed after every round (and the data root
 *     checked to hold no layer before the next), so every round downloads and extracts everything again.
 *
 * Every pull must end with the pushed image's id, or the round fails.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Agent } from '../harness/agent-client';
import { run, syncAll, timed } from '../harness/command';
import type { BenchRegistry } from '../harness/registry';
import { msSince } from '../harness/stats';
import { DockerSystem } from './docker';
import { OursCliSystem } from './ours-cli';
import type { BenchData, BenchSystem, RoundResult } from './system';

/** The library's pull, in the agent. */
export class OursPullSystem implements BenchSystem {
  readonly ours = true;
  readonly label: string;
  private agent: Agent | null = null;
  private readonly root: string;

  constructor(
    private readonly driver: string,
    work: string,
    private readonly registry: BenchRegistry,
  ) {
    this.label = `graphdriver ${driver}`;
    this.root = path.join(work, `ours-pull-${driver}`);
  }

  async start(): Promise<void> {
    this.agent = Agent.start();
  }

  async stop(): Promise<void> {
    this.agent?.stop();
    this.agent = null;
  }

  async round(): Promise<RoundResult> {
    const a = this.agent;
    if (!a) throw new Error('not started');
    fs.rmSync(this.root, { recursive: true, force: true });
    await a.call('resetPeakRss');
    await a.call('open', { root: this.root, driver: this.driver });
    try {
      syncAll();
      const r = await a.call<string>('pullImage', { ref: this.registry.ref });
      if (r.value !== this.registry.imageId) throw new Error(`pullImage gave ${r.value}, expected ${this.registry.imageId}`);
      return { times: { pull: r.ms }, rssKb: (await a.call<number>('peakRss')).value };
    } finally {
      await a.call('wipe');
    }
  }
}

/** `graphdriver pull`, one CLI process. */
export class OursCliPullSystem extends OursCliSystem {
  constructor(
    driver: string,
    work: string,
    cli: string,
    private readonly registry: BenchRegistry,
  ) {
    super(driver, work, cli);
  }

  override async round(): Promise<RoundResult> {
    const t: Record<string, number> = {};
    this.rss = 0;
    this.wipe();
    try {
      await this.t(t, 'pull', 'pull', '-q', this.registry.ref);
      const id = run(this.argv('images', '-q', '--no-trunc')).trim();
      if (id !== this.registry.imageId) throw new Error(`graphdriver pull left ${JSON.stringify(id)}, expected ${this.registry.imageId}`);
      return { times: t, rssKb: this.rss };
    } finally {
      this.wipe();
    }
  }
}

/** `skopeo copy docker://... dir:` then the library's loadImage of that directory. */
export class SkopeoLoadSystem implements BenchSystem {
  readonly ours = false;
  readonly label: string;
  private agent: Agent | null = null;
  private readonly root: string;
  private readonly dir: string;

  constructor(
    private readonly driver: string,
    work: string,
    private readonly registry: BenchRegistry,
  ) {
    this.label = `skopeo dir: + graphdriver load ${driver}`;
    this.root = path.join(work, `skopeo-load-${driver}`);
    // On the store's file system, so that the download is written where the load then reads it.
    this.dir = path.join(work, `skopeo-dir-${driver}`);
  }

  async start(): Promise<void> {
    this.agent = Agent.start();
  }

  async stop(): Promise<void> {
    this.agent?.stop();
    this.agent = null;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async round(): Promise<RoundResult> {
    const a = this.agent;
    if (!a) throw new Error('not started');
    fs.rmSync(this.root, { recursive: true, force: true });
    fs.rmSync(this.dir, { recursive: true, force: true });
    await a.call('resetPeakRss');
    await a.call('open', { root: this.root, driver: this.driver });
    try {
      syncAll();
      const t0 = process.hrtime.bigint();
      // No sync between the two halves: a script running them back to back does not wait for writeback either.
      const copy = await timed(['skopeo', '--insecure-policy', 'copy', '-q', '--src-tls-verify=false', `docker://${this.registry.ref}`, `dir:${this.dir}`], { sync: false });
      const load = await a.call<string[]>('loadImage', { path: this.dir });
      const total = msSince(t0);
      if (load.value.length !== 1 || load.value[0] !== this.registry.imageId) throw new Error(`loadImage of the skopeo dir gave ${JSON.stringify(load.value)}, expected ${this.registry.imageId}`);
      const rss = Math.max(copy.rssKb, (await a.call<number>('peakRss')).value);
      return { times: { pull: total, pull_skopeo: copy.ms, pull_load: load.ms }, rssKb: rss };
    } finally {
      await a.call('wipe');
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/** `docker pull` from the same registry (loopback registries are insecure to dockerd by default: plain http). */
export class DockerPullSystem extends DockerSystem {
  constructor(
    driver: string,
    work: string,
    private readonly registry: BenchRegistry,
  ) {
    super(driver, work);
  }

  /** Layers dockerd still holds (none, or the pull would not extract everything). */
  private layersLeft(): string[] {
    const ls = (p: string): string[] => (fs.existsSync(p) ? fs.readdirSync(p) : []);
    return [...ls(path.join(this.dataRoot, this.driver)).filter((n) => n !== 'l'), ...ls(path.join(this.dataRoot, 'image', this.driver, 'layerdb', 'sha256'))];
  }

  override async round(_data: BenchData): Promise<RoundResult> {
    const t: Record<string, number> = {};
    this.rss = 0;
    const left = this.layersLeft();
    if (left.length > 0) throw new Error(`dockerd still holds ${left.length} layer(s) before the pull: ${left.slice(0, 3).join(', ')}`);
    this.daemonPeak(true);
    try {
      await this.t(t, 'pull', 'pull', '-q', this.registry.ref);
      const id = run(this.argv('image', 'inspect', '--format', '{{.Id}}', this.registry.ref)).trim();
      if (id !== this.registry.imageId) throw new Error(`docker pull gave ${id}, expected ${this.registry.imageId}`);
      return { times: t, rssKb: this.rss + this.daemonPeak(false) };
    } finally {
      run(this.argv('rmi', '-f', this.registry.ref), { allowFail: true });
    }
  }
}
