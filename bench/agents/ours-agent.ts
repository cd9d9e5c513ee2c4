/**
 * graphdriver as a library user runs it, in a child process of the benchmark coordinator: every operation is a
 * Storage call timed here with hrtime (so IPC and process start-up are not charged), and this process's peak RSS
 * (VmHWM, reset before each round through /proc/self/clear_refs) is the memory figure. Running in its own process
 * keeps the coordinator's heap and child-process management out of our numbers, as the peers run in theirs.
 *
 * Protocol (process.send): request `{ seq, op, args }`, reply `{ seq, ok, ms, value }` or `{ seq, ok: false, error }`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { Storage } from '../../lib/storage/storage';
import { msSince } from '../harness/stats';
import { tinyLayer } from '../harness/tiny-layer';

/** One request from the coordinator. */
export interface AgentRequest {
  seq: number;
  op: string;
  args: Record<string, unknown>;
}

/** One reply to the coordinator. */
export interface AgentReply {
  seq: number;
  ok: boolean;
  ms?: number;
  value?: unknown;
  error?: string;
}

/** Storage methods other work adds (loadImage); reached through this shape so the agent builds either way. */
interface WithLoad {
  loadImage?: (src: string) => Promise<Array<{ id: string }>>;
}

let store: Storage | null = null;
let root = '';

function need(): Storage {
  if (!store) throw new Error('store not open');
  return store;
}

function str(args: Record<string, unknown>, k: string): string {
  const v = args[k];
  if (typeof v !== 'string') throw new Error(`argument ${k} missing`);
  return v;
}

/** A config naming the given diffIDs, as an image builder would write it. */
function imageConfig(diffIds: string[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2025-01-01T00:00:00Z',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '2025-01-01T00:00:00Z', created_by: `layer ${i}` })),
    }),
  );
}

/** The operations; each returns a value, and the time measured is the whole call. */
const ops: Record<string, (args: Record<string, unknown>) => Promise<unknown>> = {
  async open(a) {
    root = str(a, 'root');
    const options = (a.options as string[] | undefined) ?? [];
    store = await Storage.open({ root, driver: str(a, 'driver'), driverOptions: options });
    return store.driver.name;
  },
  async close() {
    if (store) await store.close();
    store = null;
  },
  /** Registers the tars as a chain (bottom first) and creates the image: `import-layer` x N + `create-image`. */
  async importLayers(a) {
    const s = need();
    const tars = a.tars as string[];
    let parent: string | null = null;
    const diffIds: string[] = [];
    for (const t of tars) {
      const l = await s.registerLayer(t, parent); // a path: the store reads it in large chunks
      parent = l.chainId;
      diffIds.push(l.diffId);
    }
    const img = await s.createImage(imageConfig(diffIds), { reference: str(a, 'reference') });
    // The image holds its own references to the chain: drop the registration's.
    for (let l: string | null = parent; l !== null; ) {
      const layer = await s.getLayer(l);
      await s.releaseLayer(l);
      l = layer.parent;
    }
    return img.id;
  },
  /** One layer registered alone (no image): the per-layer cost of `import-layer`. */
  async registerLayer(a) {
    const l = await need().registerLayer(str(a, 'tar'), null);
    return l.chainId;
  },
  async releaseLayer(a) {
    await need().releaseLayer(str(a, 'chainId'));
  },
  async loadImage(a) {
    const s = need() as Storage & WithLoad;
    if (typeof s.loadImage !== 'function') throw new Error('loadImage is not available in this build');
    const imgs = await s.loadImage(str(a, 'path'));
    return imgs.map((i) => i.id);
  },
  /** `docker pull` from a registry into the store; loopback registries speak plain http without options. */
  async pullImage(a) {
    return (await need().pullImage(str(a, 'ref'))).id;
  },
  async createContainer(a) {
    return (await need().createContainer(str(a, 'image'))).id;
  },
  async createMany(a) {
    const n = Number(a.n);
    const s = need();
    const cs = await Promise.all(Array.from({ length: n }, () => s.createContainer(str(a, 'image'))));
    return cs.map((c) => c.id);
  },
  async mount(a) {
    return need().mountContainer(str(a, 'id'));
  },
  async unmount(a) {
    await need().unmountContainer(str(a, 'id'));
  },
  async changes(a) {
    return (await need().containerChanges(str(a, 'id'))).length;
  },
  async diff(a) {
    const out = str(a, 'out');
    await pipeline(await need().exportContainerDiff(str(a, 'id')), fs.createWriteStream(out));
    return fs.statSync(out).size;
  },
  async commit(a) {
    return (await need().commitContainer(str(a, 'id'), { reference: str(a, 'reference') })).id;
  },
  async removeContainer(a) {
    await need().removeContainer(str(a, 'id'));
  },
  async removeImage(a) {
    await need().removeImage(str(a, 'ref'));
  },
  /** Untimed set-up of a deep chain: n tiny layers registered on each other, and an image on top. */
  async deepChain(a) {
    const s = need();
    const n = Number(a.n);
    let parent: string | null = null;
    const diffIds: string[] = [];
    for (let i = 0; i < n; i++) {
      const l = await s.registerLayer(Readable.from([tinyLayer(i)]), parent);
      parent = l.chainId;
      diffIds.push(l.diffId);
    }
    return (await s.createImage(imageConfig(diffIds), { reference: str(a, 'reference') })).id;
  },
  async peakRss() {
    const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) : 0;
  },
  async resetPeakRss() {
    try {
      fs.writeFileSync('/proc/self/clear_refs', '5');
    } catch {
      // older kernels: the peak then covers the agent's whole life
    }
  },
  async wipe() {
    if (store) {
      for (const c of await store.listContainers()) await store.removeContainer(c.id).catch(() => undefined);
      for (const i of await store.listImages()) await store.removeImage(i.id, { force: true }).catch(() => undefined);
      await store.close();
      store = null;
    }
    if (root) fs.rmSync(path.join(root), { recursive: true, force: true });
  },
};

process.on('message', (msg: AgentRequest) => {
  const op = ops[msg.op];
  const reply = (r: AgentReply): void => void process.send?.(r);
  if (!op) {
    reply({ seq: msg.seq, ok: false, error: `unknown op ${msg.op}` });
    return;
  }
  const t0 = process.hrtime.bigint();
  op(msg.args).then(
    (value) => reply({ seq: msg.seq, ok: true, ms: msSince(t0), value }),
    (e: unknown) => reply({ seq: msg.seq, ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
