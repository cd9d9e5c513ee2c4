/**
 * Interoperability of loadImage/saveImage with the real tools (each suite says why it skips when its tool is
 * missing):
 *
 * - dockerd 20.10 (`docker.io`, private data root and socket): our saved archive `docker load`s with the same
 *   image id and diffIDs, its containers hold the same files as ours and `docker diff` sees the same changes;
 *   Docker's own `docker save` output loads here with the same ids and our layer tars equal Docker's; Docker's
 *   tar-split records re-create the same tars from our layers (the record format is Docker's).
 * - skopeo: our archive converted to an OCI archive (`oci-archive:`) and back (`docker-archive:`) loads with the
 *   same ids.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';

import { readTar } from '../../lib/archive/tar-reader';
import { boundedLayerFiles } from '../../lib/layer/layer-files';
import { assembleTar, readTarSplit, tarSplitSize } from '../../lib/layer/tar-split';
import { loadBindings } from '../../lib/native/bindings';
import { UmountFlags } from '../../lib/native/constants';
import { Storage } from '../../lib/storage/storage';
import { collect, dockerArchive, hex, imageConfig, savedLayers, sha, tarMembers } from '../support/image-archives';
import { describeIf, isRoot, kernelHasFs } from '../support/native';
import { buildTar } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';

const execFileP = promisify(execFile);
const b = loadBindings();
const DOCKER = '/usr/bin/docker';
const DOCKERD = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((p) => fs.existsSync(p));

function mountsBelow(dir: string): string[] {
  const real = fs.realpathSync(dir);
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === real || m.startsWith(`${real}/`));
}

async function unmountAll(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const m of mountsBelow(dir).sort().reverse()) await b.umount(m, UmountFlags.MNT_DETACH).catch(() => undefined);
}

/** The layers of the test image: whiteouts, an opaque directory, long names, hardlinks, symlinks. */
function layers(): Buffer[] {
  const l1 = buildTar([
    { name: 'bin/', type: 'dir' },
    { name: 'bin/sh', data: '#!ELF sh', mode: 0o755 },
    { name: 'bin/sh2', type: 'link', linkname: 'bin/sh' },
    { name: 'etc/', type: 'dir' },
    { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' },
    { name: 'etc/group', data: 'root:x:0:\n' },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'opt/', type: 'dir' },
    { name: 'opt/old/', type: 'dir' },
    { name: 'opt/old/a', data: 'a' },
    { name: 'usr/', type: 'dir' },
    { name: 'usr/lib/', type: 'dir' },
    { name: 'usr/lib/libc.so', data: 'ELF libc', mode: 0o755 },
    { name: `usr/share/${'long-directory-name-'.repeat(5)}/${'file-'.repeat(25)}`, data: 'PAX name' },
    { name: 'var/', type: 'dir' },
    { name: 'var/data.bin', data: Buffer.alloc(300_000, 0x61) },
  ]);
  const l2 = buildTar([
    { name: 'etc/', type: 'dir' },
    { name: 'etc/.wh.group', data: '' },
    { name: 'etc/motd', data: 'hello from layer 2\n' },
    { name: 'opt/old/', type: 'dir' },
    { name: 'opt/old/.wh..wh..opq', data: '' },
    { name: 'opt/old/b', data: 'b' },
  ]);
  return [l1, l2];
}

/** Files of a tree, as `docker export` shows them: path → dir / file content digest / symlink target. */
function treeOf(root: string, skip: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const p = rel === '' ? d.name : `${rel}/${d.name}`;
      if (skip.has(p)) continue;
      const full = path.join(root, p);
      if (d.isSymbolicLink()) out.set(p, `-> ${fs.readlinkSync(full)}`);
      else if (d.isDirectory()) {
        out.set(p, 'dir');
        walk(p);
      } else if (d.isFile()) out.set(p, sha(fs.readFileSync(full)));
    }
  };
  walk('');
  return out;
}

async function exportTree(tar: Buffer, skip: Set<string>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const content = new Map<string, string>();
  for await (const e of readTar(Readable.from([tar]))) {
    const p = e.header.name.replace(/^\.?\/+/, '').replace(/\/$/, '');
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    if (p === '' || skip.has(p) || [...skip].some((s) => p.startsWith(`${s}/`))) continue;
    const h = e.header;
    if (h.type === 'dir') out.set(p, 'dir');
    else if (h.type === 'symlink') out.set(p, `-> ${h.linkname}`);
    else if (h.type === 'file') {
      content.set(p, sha(Buffer.concat(parts)));
      out.set(p, content.get(p)!);
    } else if (h.type === 'link') out.set(p, content.get(h.linkname.replace(/^\.?\/+/, '')) ?? '?');
  }
  return out;
}

/** Init-layer paths (their content is the container's business, not the image's). */
const INIT = new Set(['.dockerenv', 'dev', 'proc', 'sys', 'etc/hosts', 'etc/hostname', 'etc/resolv.conf', 'etc/mtab']);

const storageDriver = kernelHasFs('overlay') ? 'overlay2' : 'vfs';
const dockerReason = !isRoot
  ? 'needs root'
  : DOCKERD === undefined || !fs.existsSync(DOCKER)
    ? 'dockerd 20.10 is not installed (apt-get install docker.io)'
    : null;

describeIf(dockerReason, `saveImage / loadImage with dockerd 20.10 (${storageDriver})`, () => {
  let tmp: string;
  let sock: string;
  let daemon: ChildProcess | null = null;
  let s: Storage | null = null;
  const docker = async (...args: string[]): Promise<string> => {
    const { stdout } = await execFileP(DOCKER, ['-H', `unix://${sock}`, ...args], { maxBuffer: 256 << 20, encoding: 'utf8' });
    return stdout;
  };
  const dockerBuf = async (...args: string[]): Promise<Buffer> => {
    const { stdout } = await execFileP(DOCKER, ['-H', `unix://${sock}`, ...args], { maxBuffer: 256 << 20, encoding: 'buffer' });
    return stdout;
  };

  beforeAll(async () => {
    tmp = makeTmp('gd-dockerd-');
    sock = path.join(tmp, 'd.sock');
    const log = fs.openSync(path.join(tmp, 'dockerd.log'), 'w');
    daemon = spawn(
      DOCKERD!,
      [
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        `--storage-driver=${storageDriver}`,
        '--data-root',
        path.join(tmp, 'data'),
        '--exec-root',
        path.join(tmp, 'exec'),
        '--pidfile',
        path.join(tmp, 'dockerd.pid'),
        '-H',
        `unix://${sock}`,
      ],
      { stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    for (let i = 0; i < 120; i++) {
      try {
        await docker('version');
        break;
      } catch {
        if (daemon.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await docker('version').catch((e: unknown) => {
      throw new Error(`dockerd did not start: ${(e as Error).message}\n${fs.readFileSync(path.join(tmp, 'dockerd.log'), 'utf8').slice(-3000)}`);
    });
    s = await Storage.open({ root: path.join(tmp, 'store'), driver: storageDriver, sync: false });
  });

  afterAll(async () => {
    await s?.close().catch(() => undefined);
    if (daemon && daemon.exitCode === null && daemon.pid !== undefined) {
      const exited = new Promise((r) => daemon!.once('exit', r));
      process.kill(daemon.pid, 'SIGTERM');
      const timer = setTimeout(() => daemon?.pid !== undefined && daemon.exitCode === null && process.kill(daemon.pid, 'SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test('docker load takes our archive: same id, diffIDs, files; docker diff sees what containerChanges sees', async () => {
    const st = s!;
    const [l1, l2] = layers();
    const cfg = imageConfig([sha(l1!), sha(l2!)]);
    await st.loadImage(Readable.from([dockerArchive([{ layers: [l1!, l2!], config: cfg, repoTags: ['gdtest/app:1'] }])]));
    const c = await st.createContainer('gdtest/app:1');
    const mnt = await st.mountContainer(c.id);
    fs.writeFileSync(path.join(mnt, 'etc/committed'), 'from graphdriver\n');
    fs.rmSync(path.join(mnt, 'var/data.bin'));
    await st.unmountContainer(c.id);
    const img = await st.commitContainer(c.id, { reference: 'gdtest/app:2' });
    const file = path.join(tmp, 'ours.tar');
    await st.saveImage(['gdtest/app:1', 'gdtest/app:2'], file);

    expect(await docker('load', '-i', file)).toMatch(/Loaded image: gdtest\/app:2/);
    for (const [ref, want] of [
      ['gdtest/app:1', await st.getImage('gdtest/app:1')],
      ['gdtest/app:2', img],
    ] as const) {
      const [inspect] = JSON.parse(await docker('image', 'inspect', ref)) as Array<{ Id: string; RootFS: { Layers: string[] } }>;
      expect([ref, inspect!.Id, inspect!.RootFS.Layers]).toEqual([ref, want.id, want.diffIds]);
    }

    // The same files in a Docker container of the committed image as in ours.
    const ctr = (await docker('create', '--network', 'none', 'gdtest/app:2', '/bin/sh')).trim();
    const exported = await dockerBuf('export', ctr);
    const c2 = await st.createContainer('gdtest/app:2');
    const m2 = await st.mountContainer(c2.id);
    const ours = treeOf(m2, INIT);
    await st.unmountContainer(c2.id);
    const theirs = await exportTree(exported, INIT);
    expect(Object.fromEntries([...theirs].sort())).toEqual(Object.fromEntries([...ours].sort()));
    expect(ours.get('etc/committed')).toBe(sha('from graphdriver\n'));
    expect(ours.has('etc/group')).toBe(false);
    expect(ours.has('opt/old/a')).toBe(false);

    // The same change made in both containers: docker diff and containerChanges agree.
    const probe = path.join(tmp, 'probe.txt');
    fs.writeFileSync(probe, 'probe\n');
    await docker('cp', probe, `${ctr}:/opt/probe.txt`);
    const m3 = await st.mountContainer(c2.id);
    fs.copyFileSync(probe, path.join(m3, 'opt/probe.txt'));
    await st.unmountContainer(c2.id);
    const theirChanges = (await docker('diff', ctr)).trim().split('\n').sort();
    const ourChanges = (await st.containerChanges(c2.id)).map((ch) => `${'CAD'[ch.kind]} ${ch.path}`).sort();
    expect(ourChanges).toEqual(theirChanges);
    await docker('rm', ctr);
    await st.removeContainer(c2.id);
    await st.removeContainer(c.id);
  });

  test('docker save output loads here with the same ids; our layer tars are Docker’s, and Docker’s tar-split records rebuild them from our layers', async () => {
    const st = s!;
    // An image Docker made itself: a commit of a container it changed.
    const ctr = (await docker('create', '--network', 'none', 'gdtest/app:1', '/bin/sh')).trim();
    const probe = path.join(tmp, 'made-by-docker.txt');
    fs.writeFileSync(probe, 'made by docker\n');
    await docker('cp', probe, `${ctr}:/etc/made-by-docker`);
    await docker('commit', ctr, 'gdtest/docker:1');
    await docker('rm', ctr);
    const file = path.join(tmp, 'docker-saved.tar');
    await docker('save', '-o', file, 'gdtest/docker:1');
    const [inspect] = JSON.parse(await docker('image', 'inspect', 'gdtest/docker:1')) as Array<{ Id: string; RootFS: { Layers: string[] } }>;

    const [img] = await st.loadImage(file);
    expect([img!.id, img!.diffIds, img!.references]).toEqual([inspect!.Id, inspect!.RootFS.Layers, ['docker.io/gdtest/docker:1']]);
    const theirLayers = (await savedLayers(fs.readFileSync(file)))[0]!.layers;
    for (const [i, chain] of img!.layers.entries()) {
      const ours = await collect(await st.layerTar(chain));
      expect(ours.equals(theirLayers[i]!)).toBe(true);
    }

    // Docker's records, applied to our layers, give the same tars: the record format is Docker's.
    const layerdb = path.join(tmp, 'data', 'image', storageDriver, 'layerdb', 'sha256');
    for (const [i, chain] of img!.layers.entries()) {
      const record = path.join(layerdb, hex(chain), 'tar-split.json.gz');
      expect(fs.existsSync(record)).toBe(true);
      expect(await tarSplitSize(record)).toBe(theirLayers[i]!.length);
      const layer = await st.getLayer(chain);
      const root = await st.driver.get(layer.cacheId);
      try {
        const rebuilt = await collect(assembleTar(readTarSplit(record), boundedLayerFiles(root, b)));
        expect(sha(rebuilt)).toBe(img!.diffIds[i]);
      } finally {
        await st.driver.put(layer.cacheId);
      }
      // ...and ours decode to the same entries as Docker's (same segments, names, sizes, checksums).
      const ourRecord = path.join(st.root, 'image', storageDriver, 'layerdb', 'sha256', hex(chain), 'tar-split.json.gz');
      const norm = async (f: string): Promise<string[]> => {
        const out: string[] = [];
        for await (const e of readTarSplit(f)) out.push(e.type === 2 ? `S ${createHash('sha256').update(e.payload).digest('hex')}` : `F ${e.name} ${e.size} ${e.crc?.toString('hex') ?? '-'}`);
        return out;
      };
      expect(await norm(ourRecord)).toEqual(await norm(record));
    }
  });
});

const skopeoReason = !isRoot ? 'needs root' : !fs.existsSync('/usr/bin/skopeo') ? 'skopeo is not installed (apt-get install skopeo)' : null;

describeIf(skopeoReason, 'saveImage / loadImage with skopeo', () => {
  let tmp: string;
  let s: Storage | null = null;
  let s2: Storage | null = null;
  beforeAll(async () => {
    tmp = makeTmp('gd-skopeo-');
    s = await Storage.open({ root: path.join(tmp, 'a'), driver: storageDriver, sync: false });
    s2 = await Storage.open({ root: path.join(tmp, 'b'), driver: storageDriver, sync: false });
  });
  afterAll(async () => {
    await s?.close().catch(() => undefined);
    await s2?.close().catch(() => undefined);
    await unmountAll(tmp);
    removeTmp(tmp);
  });

  test('docker-archive → oci-archive (gzip blobs) → docker-archive: diffIDs, ids of the configs skopeo writes, tags', async () => {
    const [l1, l2] = layers();
    const cfg = imageConfig([sha(l1!), sha(l2!)]);
    const [img] = await s!.loadImage(Readable.from([dockerArchive([{ layers: [l1!, l2!], config: cfg, repoTags: ['gdtest/skopeo:1'] }])]));
    const ours = path.join(tmp, 'ours.tar');
    await s!.saveImage('gdtest/skopeo:1', ours);
    const policy = path.join(tmp, 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const skopeo = (from: string, to: string): Promise<unknown> => execFileP('skopeo', ['--policy', policy, 'copy', '-q', from, to]);

    // skopeo re-serialises the config as an OCI config (so the id changes, the diffIDs do not) and gzips the layers.
    const oci = path.join(tmp, 'oci.tar');
    await skopeo(`docker-archive:${ours}`, `oci-archive:${oci}:gdtest/skopeo:oci`);
    const members = await tarMembers(fs.readFileSync(oci));
    const index = JSON.parse((members.get('index.json') as Buffer).toString()) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse((members.get(`blobs/sha256/${hex(index.manifests[0]!.digest)}`) as Buffer).toString()) as { config: { digest: string } };
    const [fromOci] = await s2!.loadImage(oci);
    expect([fromOci!.id, fromOci!.diffIds, fromOci!.references]).toEqual([manifest.config.digest, img!.diffIds, ['docker.io/gdtest/skopeo:oci']]);

    // An OCI layout directory (skopeo `oci:`) loads in place too.
    const ociDir = path.join(tmp, 'oci-dir');
    await skopeo(`oci-archive:${oci}`, `oci:${ociDir}:gdtest/skopeo:dir`);
    const [fromDir] = await s2!.loadImage(ociDir);
    expect([fromDir!.id, fromDir!.references]).toEqual([fromOci!.id, ['docker.io/gdtest/skopeo:dir', 'docker.io/gdtest/skopeo:oci']]);
    expect(fs.readdirSync(ociDir).sort()).toEqual(['blobs', 'index.json', 'oci-layout']);

    const back = path.join(tmp, 'back.tar');
    await skopeo(`oci-archive:${oci}`, `docker-archive:${back}:gdtest/skopeo:back`);
    const [backImage] = await savedLayers(fs.readFileSync(back));
    const [fromBack] = await s2!.loadImage(fs.createReadStream(back));
    // Back in Docker's format the config is the same OCI one: the same image, now with both tags.
    expect([fromBack!.id, fromBack!.diffIds, fromBack!.references]).toEqual([sha(backImage!.config), img!.diffIds, ['docker.io/gdtest/skopeo:back', 'docker.io/gdtest/skopeo:dir', 'docker.io/gdtest/skopeo:oci']]);
    // The layers went through gzip and back: saved again, they are still our original tars.
    const out = new PassThrough();
    const [bytes] = await Promise.all([collect(out), s2!.saveImage('gdtest/skopeo:back', out)]);
    const again = await savedLayers(bytes);
    expect(again[0]!.layers[0]!.equals(l1!)).toBe(true);
    expect(again[0]!.layers[1]!.equals(l2!)).toBe(true);
  });
});
