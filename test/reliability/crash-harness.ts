/**
 * The crash-consistency harness (issue 11 item 3), shared by the per-driver crash suites: a child process
 * (test/reliability/child/crash-child.ts, from a transpiled copy of lib/) loops over the store's write paths and
 * is killed with SIGKILL at a random moment, either while it opens the store (rolling back what the previous
 * child left) or while it works; the store is then reopened in the test process, which checks:
 *
 * - no mount is left below the store once it is open again (stale mounts of the dead child are unmounted);
 * - verify() finds nothing wrong, apart from orphan driver layers (a crash after a driver layer was created and
 *   before its id was recorded), which verify({ repair: true }) removes, after which verify() is clean;
 * - every listed layer is whole: Docker's metadata files, its driver layer, its parent; mounted, every layer
 *   directory the child wrote (`d-<tag>/`) holds its last entries (so no half-applied layer was published);
 * - every image's layers exist and its config reads back; every container's layers exist, mount and list.
 *
 * After the last trial everything is removed and the driver home must be empty.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { listDriverLayers } from '../../lib/layer/driver-layers';
import { Storage } from '../../lib/storage/storage';
import { assertStoreWhole, CHILD_ENV, CLEAN_REPORT, mountsBelow, problems } from './helpers';

/** Options of {@link runCrashTrials}. */
export interface CrashOptions {
  driver: string;
  trials: number;
  /** Directory the store is created in (`<base>/store`). */
  base: string;
  /** Transpiled lib/ and test/reliability/child (see transpileLib). */
  js: string;
  seed: number;
  /** Kills after `ready` happen up to this many ms later. */
  maxDelayMs: number;
  /** Share of trials killed from spawn on, i.e. often while the child opens (and rolls back) the store. */
  earlyShare: number;
}

/** What the trials did, for the report. */
export interface CrashStats {
  driver: string;
  trials: number;
  /** Kills that happened before the child had the store open. */
  killedWhileOpening: number;
  /** Kills per operation in progress. */
  interrupted: Record<string, number>;
  /** Operations the children completed in total. */
  opsCompleted: number;
  /** Trials that left work in layerdb/tmp (rolled back by the reopen). */
  leftWorkInTmp: number;
  /** Trials that left mounts behind (unmounted by the reopen). */
  leftMounts: number;
  /** Trials whose reopened store needed verify({ repair: true }) (orphan driver layers only). */
  repaired: number;
  /** Failures: always 0 when the suite passes (any failure throws). */
  failures: number;
  maxLayers: number;
  maxContainers: number;
  ms: number;
}

/** xorshift32 (the kill schedule is reproducible from the seed; the timing of the child is not). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every layer directory the child wrote holds its last two entries: the layer was applied completely. */
async function assertLayersComplete(s: Storage): Promise<void> {
  for (const l of await s.listLayers()) {
    const p = await s.driver.get(l.cacheId);
    try {
      for (const d of fs.readdirSync(p).filter((n) => n.startsWith('d-'))) {
        const st = fs.lstatSync(path.join(p, d, 'link'), { throwIfNoEntry: false });
        const hard = fs.lstatSync(path.join(p, d, 'hard'), { throwIfNoEntry: false });
        expect([l.chainId, d, st?.isSymbolicLink(), hard?.isFile(), (hard?.nlink ?? 0) >= 2]).toEqual([l.chainId, d, true, true, true]);
      }
    } finally {
      await s.driver.put(l.cacheId);
    }
  }
}

/** A crash child, spawned ahead of its trial: it loads the library, then waits for {@link Child.go}. */
interface Child {
  proc: ChildProcess;
  loaded: Promise<void>;
  opening: Promise<void>;
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  state: { ready: boolean; current: string | null; stderr: string };
  go(): void;
}

function spawnChild(script: string, root: string, driver: string, seed: number, stats: CrashStats): Child {
  const proc = spawn(process.execPath, [script, root, driver, String(seed)], { stdio: ['pipe', 'pipe', 'pipe'], env: CHILD_ENV });
  const state = { ready: false, current: null as string | null, stderr: '' };
  const signals = new Map<string, () => void>();
  const when = (line: string): Promise<void> => new Promise((res) => signals.set(line, res));
  const loaded = when('loaded');
  const opening = when('opening');
  const ready = when('ready');
  let pending = '';
  proc.stderr!.on('data', (c: Buffer) => (state.stderr += c.toString()));
  proc.stdout!.on('data', (c: Buffer) => {
    pending += c.toString();
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      if (line === 'ready') state.ready = true;
      if (line.startsWith('op ')) state.current = line.slice(3);
      else if (line.startsWith('done ')) {
        state.current = null;
        stats.opsCompleted++;
      }
      signals.get(line)?.();
    }
  });
  // A killed child's stdin is gone: writing 'go' to it must not throw EPIPE into the test.
  proc.stdin!.on('error', () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  return { proc, loaded, opening, ready, exited, state, go: () => void proc.stdin!.write('go\n') };
}

/** Resolves to true when `p` settles first, false when the child exited first. */
async function before(p: Promise<void>, c: Child): Promise<boolean> {
  return Promise.race([p.then(() => true), c.exited.then(() => false)]);
}

/** Runs the trials; throws (with the trial number) at the first inconsistency. */
export async function runCrashTrials(o: CrashOptions): Promise<CrashStats> {
  const root = path.join(o.base, 'store');
  const script = path.join(o.js, 'test', 'reliability', 'child', 'crash-child.js');
  const rand = rng(o.seed);
  const stats: CrashStats = {
    driver: o.driver,
    trials: 0,
    killedWhileOpening: 0,
    interrupted: {},
    opsCompleted: 0,
    leftWorkInTmp: 0,
    leftMounts: 0,
    repaired: 0,
    failures: 0,
    maxLayers: 0,
    maxContainers: 0,
    ms: 0,
  };
  const started = Date.now();
  let next = spawnChild(script, root, o.driver, o.seed, stats);
  try {
    for (let t = 0; t < o.trials; t++) {
      const c = next;
      if (!(await before(c.loaded, c))) throw new Error(`trial ${t}: the crash child died while loading: ${c.state.stderr}`);
      c.go();
      if (!(await before(c.opening, c))) throw new Error(`trial ${t}: the crash child died: ${c.state.stderr}`);
      if (rand() < o.earlyShare) {
        // Usually lands inside Storage.open: lock, driver init, rollback of what the previous child left.
        await sleep(Math.floor(rand() * 150));
      } else {
        if (!(await before(c.ready, c))) throw new Error(`trial ${t}: the crash child exited before it was ready: ${c.state.stderr}`);
        await sleep(Math.floor(rand() * o.maxDelayMs));
      }
      const wasReady = c.state.ready;
      const op = c.state.current;
      c.proc.kill('SIGKILL');
      const { code, signal } = await c.exited;
      if (signal !== 'SIGKILL') throw new Error(`trial ${t}: the crash child ended by itself (code ${code}): ${c.state.stderr}`);
      if (c.state.stderr !== '') throw new Error(`trial ${t}: the crash child wrote to stderr: ${c.state.stderr}`);
      // The next child loads while this trial is checked (it only touches the store after 'go').
      if (t + 1 < o.trials) next = spawnChild(script, root, o.driver, o.seed + t + 1, stats);
      stats.trials++;
      if (!wasReady) stats.killedWhileOpening++;
      else stats.interrupted[op ?? 'between operations'] = (stats.interrupted[op ?? 'between operations'] ?? 0) + 1;
      const tmpDir = path.join(root, 'image', o.driver, 'layerdb', 'tmp');
      if (fs.existsSync(tmpDir) && fs.readdirSync(tmpDir).length > 0) stats.leftWorkInTmp++;
      if (mountsBelow(root).length > 0) stats.leftMounts++;

      const where = `trial ${t} (killed ${wasReady ? `during ${op ?? 'no operation'}` : 'while opening'})`;
      const s = await Storage.open({ root, driver: o.driver });
      try {
        expect([where, mountsBelow(root)]).toEqual([where, []]);
        const first = await s.verify();
        if (!first.ok) {
          // Only orphan driver layers are acceptable leftovers of a crash (created, not yet recorded).
          expect([where, problems({ ...first, ok: true, orphanDriverLayers: [] })]).toEqual([where, CLEAN_REPORT]);
          const fixed = await s.verify({ repair: true });
          expect([where, fixed.ok]).toEqual([where, true]);
          stats.repaired++;
        }
        expect([where, problems(await s.verify())]).toEqual([where, CLEAN_REPORT]);
        const counts = await assertStoreWhole(s, o.driver);
        await assertLayersComplete(s);
        stats.maxLayers = Math.max(stats.maxLayers, counts.layers);
        stats.maxContainers = Math.max(stats.maxContainers, counts.containers);
      } catch (e) {
        stats.failures++;
        throw e;
      } finally {
        await s.close();
      }
      expect([where, mountsBelow(root)]).toEqual([where, []]);
    }
  } finally {
    if (next.proc.exitCode === null && next.proc.signalCode === null) {
      next.proc.kill('SIGKILL');
      await next.exited;
    }
  }

  // Everything can still be removed afterwards, leaving an empty driver home.
  const s = await Storage.open({ root, driver: o.driver });
  try {
    for (const c of await s.listContainers()) await s.removeContainer(c.id);
    for (let round = 0; round < 20 && (await s.listImages()).length > 0; round++) {
      for (const i of await s.listImages()) await s.removeImage(i.id).catch(() => undefined);
    }
    expect(await s.listImages()).toEqual([]);
    await s.verify({ prune: true });
    expect(await s.listLayers()).toEqual([]);
    expect(await listDriverLayers(o.driver, path.join(root, o.driver))).toEqual([]);
    expect(problems(await s.verify())).toEqual(CLEAN_REPORT);
  } finally {
    await s.close();
  }
  expect(mountsBelow(root)).toEqual([]);
  stats.ms = Date.now() - started;
  return stats;
}
