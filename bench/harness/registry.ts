/**
 * The local registry of the `registry` bench group: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
 * with filesystem storage under the group's work directory, and the bench image pushed to it by skopeo (which
 * gzip-compresses the layers on the way, as any registry would serve them).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { run } from './command';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

/** A registry started by {@link startBenchRegistry}. */
export interface BenchRegistry {
  /** `127.0.0.1:PORT`. */
  host: string;
  /** The pushed image: `127.0.0.1:PORT/bench/debian:latest`. */
  ref: string;
  /** Its image id (the digest of its config), which every pull must end with. */
  imageId: string;
  /** Compressed size of its layers, bytes. */
  layerBytes: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** Starts the registry in `dir` (wiped first) and pushes the `docker save` archive `imageTar` to it. */
export async function startBenchRegistry(dir: string, imageTar: string): Promise<BenchRegistry> {
  fs.rmSync(dir, { recursive: true, force: true });
  const storage = path.join(dir, 'storage');
  fs.mkdirSync(storage, { recursive: true });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const cfg = path.join(dir, 'config.yml');
  fs.writeFileSync(
    cfg,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      'http:',
      `  addr: ${host}`,
      '',
    ].join('\n'),
  );
  const log = fs.openSync(path.join(dir, 'registry.log'), 'w');
  const proc = spawn(REGISTRY_BIN, ['serve', cfg], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const stop = async (): Promise<void> => {
    await stopProcess(proc);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    let up = false;
    for (let i = 0; i < 200 && !up && proc.exitCode === null; i++) {
      try {
        const r = await fetch(`http://${host}/v2/`);
        await r.arrayBuffer();
        up = r.status === 200;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (!up) throw new Error(`docker-registry did not start: see ${path.join(dir, 'registry.log')}`);
    const ref = `${host}/bench/debian:latest`;
    // --insecure-policy: the push does not depend on the machine's /etc/containers/policy.json.
    run(['skopeo', '--insecure-policy', 'copy', '-q', '--dest-tls-verify=false', `docker-archive:${imageTar}`, `docker://${ref}`]);
    const r = await fetch(`http://${host}/v2/bench/debian/manifests/latest`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    });
    const m = (await r.json()) as { config?: { digest?: string }; layers?: Array<{ mediaType?: string; size?: number }> };
    const imageId = m.config?.digest;
    if (typeof imageId !== 'string' || !Array.isArray(m.layers)) throw new Error(`unexpected manifest from the bench registry: ${JSON.stringify(m).slice(0, 300)}`);
    if (!m.layers.every((l) => l.mediaType?.endsWith('gzip'))) throw new Error('skopeo pushed uncompressed layers; the bench wants gzip ones, as registries serve them');
    return { host, ref, imageId, layerBytes: m.layers.reduce((a, l) => a + (l.size ?? 0), 0), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
