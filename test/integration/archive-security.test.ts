/**
 * Hostile-archive regression corpus for the archive engine (issue 3 item 4, SPEC section 3 "Security").
 *
 * Every case runs against all three whiteout formats with a victim tree beside the target root. Before each apply
 * the whole temp dir (except the root) is snapshotted by a recursive lstat + content + xattr listing; afterwards it
 * must be identical, byte for byte, inode for inode, ctime included (so a hardlink, chmod, chown or xattr change on
 * the victim is caught as well as any write), and canary names must not exist at `/` or in the system temp dir.
 * Each case then asserts one of two outcomes, decided per case (and per format where the formats legitimately
 * differ): the archive is refused with a typed InvalidArchiveError naming the entry, or it is legal and its effect
 * landed inside the root (an absolute symlink is followed *inside* the root, as a chroot would).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';

import { applyLayer, type ApplyLayerResult, type ApplyWarning, type WhiteoutFormat } from '../../lib/archive/apply';
import { ArchiveLimitError, InvalidArchiveError } from '../../lib/errors';
import { describeIf, haveTool, isRoot } from '../support/native';
import { chunked } from '../support/tar-builder';
import { makeTmp, removeTmp } from '../support/tmp';
// The cases and their helpers are shared with the store-level suite (test/security/store-hostile.test.ts).
import { canaryPlaces, cases, ent, exists, FORMATS, lst, makeVictim, r, snapshot, tar, type Ctx } from '../security/corpus';

/** Per test: the deep-tree and bomb cases do real work (well under this). */
const TIMEOUT = 120_000;

// ---------------------------------------------------------------------------------------------------------------

describeIf(isRoot ? null : 'needs root (ownership, device nodes, trusted.* xattrs)', 'hostile archives (archive-security)', () => {
  let tmp: string | undefined;
  let unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => {
    unhandled.push(e);
  };

  beforeAll(() => process.on('unhandledRejection', onUnhandled));
  afterAll(() => process.off('unhandledRejection', onUnhandled));
  afterEach(() => {
    try {
      removeTmp(tmp);
    } catch {
      // fs.rm gives up on trees deeper than PATH_MAX (ENAMETOOLONG); GNU rm walks them with openat.
      if (tmp) execFileSync('rm', ['-rf', '--one-file-system', '--', tmp]);
    }
    tmp = undefined;
  });

  let serial = 0;
  async function context(format: WhiteoutFormat): Promise<Ctx> {
    tmp = makeTmp('gd-sec-');
    const c: Ctx = {
      format,
      tmp,
      root: path.join(tmp, 'root'),
      victim: path.join(tmp, 'victim'),
      token: `gd-sec-canary-${process.pid}-${++serial}`,
    };
    fs.mkdirSync(c.root);
    await makeVictim(c.victim);
    return c;
  }

  /** Asserts the victim and the rest of the temp dir are exactly as before, and no canary exists anywhere. */
  async function assertUntouched(c: Ctx, before: string[], rootIno: bigint): Promise<void> {
    expect(await snapshot(c.tmp, c.root)).toEqual(before);
    const st = lst(c.root);
    expect(st.isDirectory()).toBe(true);
    expect(st.ino).toBe(rootIno);
    for (const p of canaryPlaces(c)) expect([p, exists(p)]).toEqual([p, false]);
  }

  describe.each(FORMATS)('format %s', (format) => {
    it.each(cases.map((k) => [k.name, k] as const))('%s', async (_name, k) => {
      unhandled = [];
      const c = await context(format);
      await k.setup?.(c);
      const before = await snapshot(c.tmp, c.root);
      const rootIno = lst(c.root).ino;
      const warnings: ApplyWarning[] = [];
      const input = k.input(c);
      let result: ApplyLayerResult | undefined;
      let error: unknown;
      try {
        const source = Buffer.isBuffer(input) ? chunked(input, 4093) : input;
        result = await applyLayer(c.root, source, { format, onWarning: (w) => warnings.push(w), ...k.opts?.(c) });
      } catch (e) {
        error = e;
      } finally {
        if (!Buffer.isBuffer(input)) input.stop?.();
      }
      const want = typeof k.expect === 'function' ? k.expect(format) : k.expect;
      if ('invalid' in want) {
        if (!(error instanceof InvalidArchiveError)) {
          throw new Error(`expected InvalidArchiveError, got ${error === undefined ? 'success' : String((error as Error).stack ?? error)}`);
        }
        expect(error.code).toBe('ERR_INVALID_ARCHIVE');
        if (want.limit) expect(error).toBeInstanceOf(ArchiveLimitError);
        if (want.entry !== undefined) {
          const entry = typeof want.entry === 'function' ? want.entry(c) : want.entry;
          expect(error.entry).toBe(entry);
          expect(error.message).toContain(JSON.stringify(entry));
        }
        if (want.message) expect(error.message).toMatch(want.message);
      } else {
        if (error !== undefined) throw error;
        await want.contained(c, { result: result!, warnings });
      }
      await assertUntouched(c, before, rootIno);
      expect(unhandled).toEqual([]);
    }, TIMEOUT);

    it('a failing entry in a batch still in flight when a later entry is refused: no stray work after the error', async () => {
      unhandled = [];
      const c = await context(format);
      const before = await snapshot(c.tmp, c.root);
      const rootIno = lst(c.root).ino;
      // A symlink out and 510 files, then an entry that fails natively (a hardlink to nothing) as the 512th of the
      // batch, which sends the batch; the very next entry is refused by the name check while the batch is running.
      const parts: Buffer[] = [ent({ name: 'evil', type: 'symlink', linkname: c.victim })];
      for (let i = 0; i < 510; i++) parts.push(ent({ name: `f${i}`, data: 'x' }));
      parts.push(ent({ name: 'h', type: 'link', linkname: 'missing' }));
      parts.push(ent({ name: `../victim/${c.token}`, data: 'x' }));
      for (let i = 0; i < 600; i++) parts.push(ent({ name: `g${i}`, data: 'x' }));
      await expect(applyLayer(c.root, chunked(tar(...parts), 65536), { format })).rejects.toBeInstanceOf(InvalidArchiveError);
      // Give any leftover native work time to surface (an unhandled rejection, or files appearing late).
      await new Promise((res) => setTimeout(res, 50));
      const names = fs.readdirSync(c.root);
      expect(names.some((n) => n.startsWith('g'))).toBe(false);
      expect(unhandled).toEqual([]);
      await assertUntouched(c, before, rootIno);
    }, TIMEOUT);

    it('Docker CVE-2018-15664: a directory swapped for a symlink out while many entries apply', async () => {
      unhandled = [];
      const c = await context(format);
      fs.mkdirSync(r(c, 'dir'));
      fs.mkdirSync(r(c, 'other'));
      const before = await snapshot(c.tmp, c.root);
      const rootIno = lst(c.root).ino;
      // A worker thread flips root/dir between the real directory and a symlink to the victim as fast as it can
      // (rename away, symlink in, remove, rename back), while entries alternate between dir/ and other/ so the
      // native side re-resolves dir/ for almost every entry.
      const flags = new Int32Array(new SharedArrayBuffer(8));
      const worker = new Worker(
        `
        const { workerData, parentPort } = require('node:worker_threads');
        const fs = require('node:fs');
        const { root, target, flags } = workerData;
        let swaps = 0;
        while (Atomics.load(flags, 0) === 0) {
          try { fs.renameSync(root + '/dir', root + '/dir.real'); } catch {}
          try { fs.symlinkSync(target, root + '/dir'); } catch {}
          try { fs.unlinkSync(root + '/dir'); } catch {}
          try { fs.renameSync(root + '/dir.real', root + '/dir'); } catch {}
          if (++swaps === 1) Atomics.store(flags, 1, 1);
        }
        parentPort.postMessage(swaps);
        `,
        { eval: true, workerData: { root: c.root, target: c.victim, flags } },
      );
      const swapsDone = new Promise<number>((res, rej) => {
        worker.once('message', res);
        worker.once('error', rej);
      });
      try {
        while (Atomics.load(flags, 1) === 0) await new Promise((res) => setTimeout(res, 1));
        const parts: Buffer[] = [];
        for (let i = 0; i < 3000; i++) {
          parts.push(ent({ name: `dir/${c.token}-${i}`, data: 'x' }));
          parts.push(ent({ name: `other/f${i}`, data: 'y' }));
          if (i % 50 === 0) parts.push(ent({ name: 'dir/secret', type: 'link', linkname: 'other/f0' }));
        }
        const outcome = await applyLayer(c.root, chunked(tar(...parts), 65536), { format }).then(
          () => 'applied',
          (e: unknown) => {
            expect(e).toBeInstanceOf(InvalidArchiveError);
            return 'refused';
          },
        );
        expect(['applied', 'refused']).toContain(outcome);
      } finally {
        Atomics.store(flags, 0, 1);
        expect(await swapsDone).toBeGreaterThan(0);
        await worker.terminate();
      }
      await assertUntouched(c, before, rootIno);
      expect(unhandled).toEqual([]);
    }, TIMEOUT);
  });

  describeIf(haveTool('prlimit') ? null : 'needs prlimit (util-linux)', 'trees deeper than the fd limit', () => {
    it('removing a 3000-level tree holds a bounded number of fds (native remove under RLIMIT_NOFILE 128)', () => {
      tmp = makeTmp('gd-sec-');
      const root = path.join(tmp, 'root');
      fs.mkdirSync(root);
      // Built with relative mkdir + chdir in a child (linear time), unlike an archive whose every entry resolves
      // from the root.
      const build = `
        const fs = require('node:fs');
        process.chdir(process.argv[1]);
        for (let i = 0; i < 3000; i++) { fs.mkdirSync('d'); process.chdir('d'); }
        fs.writeFileSync('f', 'bottom');
      `;
      execFileSync(process.execPath, ['-e', build, root]);
      const addon = process.env.GRAPHDRIVER_ADDON ?? path.resolve(__dirname, '../../build/Release/graphdriver.node');
      const script = `
        const fs = require('node:fs');
        const b = require(process.argv[1]);
        const limit = /Max open files\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))[1];
        const fd = fs.openSync(process.argv[2], fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
        b.applyEntries(fd, [{ op: 'remove', path: 'd' }]).then((r) => process.stdout.write(JSON.stringify({ limit, r })));
      `;
      const out = execFileSync('prlimit', ['--nofile=128:128', process.execPath, '-e', script, addon, root], { encoding: 'utf8' });
      const { limit: lim, r: res } = JSON.parse(out) as { limit: string; r: Array<{ errno: number; code: string }> };
      expect(lim).toBe('128');
      expect(res).toEqual([expect.objectContaining({ errno: 0, code: '' })]);
      expect(fs.readdirSync(root)).toEqual([]);
    }, TIMEOUT);
  });

  it(`the corpus has at least 45 generated cases per format (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(45);
    expect(new Set(cases.map((k) => k.name)).size).toBe(cases.length);
  });
});
