/** graphdriver in-process (through bench/agents/ours-agent, a child process that uses the library as users do). */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Agent } from '../harness/agent-client';
import { run, syncAll } from '../harness/command';
import { DEEP_LAYERS, type BenchData, type BenchSystem, type RoundPlan, type RoundResult } from './system';

/** graphdriver's Storage on one driver. */
export class OursSystem implements BenchSystem {
  readonly ours = true;
  readonly label: string;
  private agent: Agent | null = null;
  private readonly root: string;

  constructor(
    private readonly driver: string,
    work: string,
    private readonly options: string[] = [],
  ) {
    this.label = `graphdriver ${driver}`;
    this.root = path.join(work, `ours-${driver}`);
  }

  async start(): Promise<void> {
    this.agent = Agent.start();
  }

  async stop(): Promise<void> {
    this.agent?.stop();
    this.agent = null;
  }

  private a(): Agent {
    if (!this.agent) throw new Error('not started');
    return this.agent;
  }

  async round(data: BenchData, plan: RoundPlan): Promise<RoundResult> {
    const a = this.a();
    const t: Record<string, number> = {};
    const timedOp = async <T>(name: string, op: string, args: Record<string, unknown> = {}): Promise<T> => {
      syncAll();
      const r = await a.call<T>(op, args);
      t[name] = r.ms;
      return r.value;
    };
    fs.rmSync(this.root, { recursive: true, force: true });
    await a.call('resetPeakRss');
    const open = (): Promise<unknown> => a.call('open', { root: this.root, driver: this.driver, options: this.options });
    await open();
    try {
      // load_image first, into the empty store (as the CLI's `load` and `docker load` are): run after
      // import_layers it would find every layer present and only check the archive. The store is then wiped
      // and opened again, empty, for import_layers.
      try {
        const loaded = await timedOp<string[]>('load_image', 'loadImage', { path: data.imageTar });
        if (loaded.length !== 1) throw new Error(`loadImage gave ${loaded.length} images, expected 1`);
      } catch (e) {
        delete t.load_image;
        if (!String(e).includes('not available')) throw e;
      }
      await a.call('wipe');
      await open();
      const image = await timedOp<string>('import_layers', 'importLayers', { tars: data.layers, reference: 'bench/test:l123' });
      const ctr = await timedOp<string>('create_ctr', 'createContainer', { image });
      const mp = await timedOp<string>('mount', 'mount', { id: ctr });
      run(['sh', data.mutateScript, mp, data.blob]);
      await timedOp('changes', 'changes', { id: ctr });
      const out = path.join(this.root, 'diff.tar');
      await timedOp('diff', 'diff', { id: ctr, out });
      fs.rmSync(out, { force: true });
      const committed = await timedOp<string>('commit', 'commit', { id: ctr, reference: 'bench/test:commit' });
      await timedOp('unmount', 'unmount', { id: ctr });
      await timedOp('rm_ctr', 'removeContainer', { id: ctr });
      await a.call('removeImage', { ref: committed });
      if (plan.concurrent) {
        const ids = await timedOp<string[]>('create16', 'createMany', { image, n: 16 });
        for (const id of ids) await a.call('removeContainer', { id });
      }
      if (plan.bulk) {
        for (const [name, tar] of [['import_small', data.smallTar], ['import_big', data.bigTar]] as const) {
          const chain = await timedOp<string>(name, 'registerLayer', { tar });
          await a.call('releaseLayer', { chainId: chain });
        }
      }
      if (plan.deep) {
        const deep = (await a.call<string>('deepChain', { n: DEEP_LAYERS, reference: 'bench/deep:128' })).value;
        syncAll();
        const c = await a.call<string>('createContainer', { image: deep });
        const m = await a.call('mount', { id: c.value });
        t.deep128 = c.ms + m.ms;
        await a.call('unmount', { id: c.value });
        await a.call('removeContainer', { id: c.value });
      }
      return { times: t, rssKb: (await a.call<number>('peakRss')).value };
    } finally {
      await a.call('wipe');
    }
  }
}
