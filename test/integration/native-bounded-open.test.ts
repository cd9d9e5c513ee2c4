/**
 * openBounded against hostile trees: escaping '..' and symlinks (relative, absolute, chained, symlinked parents),
 * magic links on a procfs mounted inside the root, symlink loops and the 40-link cap, O_CREAT through escaping
 * symlinks. The same table runs twice, each time in a fresh node process over a fresh tree: once with openat2 and
 * once with GRAPHDRIVER_NO_OPENAT2=1, which forces the user-space walk (the switch is read once per process, so a
 * child process is the reliable way to flip it). Every expectation is the same for both.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { loadBindings } from '../../lib/native/bindings';
import { OpenFlags } from '../../lib/native/constants';
import type { NativeError, OpenBoundedOptions } from '../../lib/native/types';
import { describeIf, haveTool, isRoot, kernelHasFs } from '../support/native';

const { O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_DIRECTORY, O_NOFOLLOW, O_PATH } = OpenFlags;
const O_TMPFILE = 0o20000000 | O_DIRECTORY;

/** What one open produced, as reported by the runner process. */
type Outcome =
  | { ok: true; dev: string; ino: string; type: 'file' | 'dir' | 'link' | 'other'; nlink: number; content?: string }
  | { ok: false; code: string };

/** Expected result of a case. Root-relative names are lstat'ed inside the root after the run. */
type Expect =
  | { content: string } // a regular file with this content
  | { object: string } // exactly this object (dev+ino) inside the root; for links, the link itself
  | { error: string }
  | { tmpfile: true } // an unnamed regular file (O_TMPFILE)
  | { linkOnFsOf: string } // some symlink on the filesystem holding this root-relative path
  | { contentPrefix: string };

interface Case {
  name: string;
  path: string;
  opts?: OpenBoundedOptions;
  expect: Expect;
}

const ROOT_PASSWD = 'root-passwd\n';
const ROOT_SECRET = 'root-secret\n';
const VICTIM_SECRET = 'victim-secret\n';

const cases: Case[] = [
  // '..' and escaping symlinks stay inside the root (in-root)
  { name: 'absolute symlink', path: 'abs', expect: { content: ROOT_PASSWD } },
  { name: 'relative symlink climbing above the root', path: 'esc/etc/passwd', expect: { content: ROOT_PASSWD } },
  { name: 'escaping symlink then a path that exists only outside', path: 'esc/x/y/outside/secret', expect: { error: 'ENOENT' } },
  { name: 'escaping symlink then the mirror inside', path: 'esc/outside/secret', expect: { content: ROOT_SECRET } },
  { name: 'symlinked parent dir d -> /', path: 'd/etc/passwd', expect: { content: ROOT_PASSWD } },
  { name: 'leading .. components', path: '../../../etc/passwd', expect: { content: ROOT_PASSWD } },
  { name: 'absolute path', path: '/etc/passwd', expect: { content: ROOT_PASSWD } },
  { name: '.. in the middle', path: 'etc/../../../etc/passwd', expect: { content: ROOT_PASSWD } },
  { name: 'chained symlinks chain1 -> chain2 -> ../outside', path: 'chain1/secret', expect: { content: ROOT_SECRET } },
  { name: 'chained symlinks as a directory', path: 'chain1', opts: { flags: O_DIRECTORY }, expect: { object: 'outside' } },
  { name: 'escaping symlink as a directory is the root', path: 'esc', opts: { flags: O_DIRECTORY }, expect: { object: '.' } },
  { name: 'd -> / is the root', path: 'd', expect: { object: '.' } },
  { name: 'root as "."', path: '.', expect: { object: '.' } },
  { name: 'root as "/"', path: '/', expect: { object: '.' } },
  { name: 'a/b/../..', path: 'a/b/../..', expect: { object: '.' } },
  { name: 'relative symlink inside', path: 'rel', expect: { content: ROOT_PASSWD } },
  { name: 'symlink whose target climbs then descends', path: 'a/b/up', expect: { content: ROOT_PASSWD } },
  // trailing-component flags
  { name: 'O_NOFOLLOW on a symlink', path: 'abs', opts: { flags: O_NOFOLLOW }, expect: { error: 'ELOOP' } },
  { name: 'O_PATH|O_NOFOLLOW opens the link itself', path: 'abs', opts: { flags: O_PATH | O_NOFOLLOW }, expect: { object: 'abs' } },
  { name: 'O_PATH follows the link', path: 'abs', opts: { flags: O_PATH }, expect: { object: 'etc/passwd' } },
  { name: 'trailing slash on a file', path: 'etc/passwd/', expect: { error: 'ENOTDIR' } },
  { name: 'file as an intermediate component', path: 'etc/passwd/x', expect: { error: 'ENOTDIR' } },
  { name: 'O_DIRECTORY on a file', path: 'etc/passwd', opts: { flags: O_DIRECTORY }, expect: { error: 'ENOTDIR' } },
  { name: 'missing intermediate', path: 'missing/x', expect: { error: 'ENOENT' } },
  { name: 'empty path', path: '', expect: { error: 'ENOENT' } },
  // symlink rules
  { name: 'noSymlinks on the last component', path: 'abs', opts: { noSymlinks: true }, expect: { error: 'ELOOP' } },
  { name: 'noSymlinks on a parent', path: 'd/etc/passwd', opts: { noSymlinks: true }, expect: { error: 'ELOOP' } },
  { name: 'noSymlinks without symlinks', path: 'etc/passwd', opts: { noSymlinks: true }, expect: { content: ROOT_PASSWD } },
  { name: 'symlink loop', path: 'loop1', expect: { error: 'ELOOP' } },
  { name: '40 symlinks are followed', path: 'link1', expect: { content: ROOT_PASSWD } },
  { name: 'the 41st symlink is refused', path: 'link0', expect: { error: 'ELOOP' } },
  { name: 'link proc -> /proc/self/root loops inside the root', path: 'proc/etc/passwd', expect: { error: 'ELOOP' } },
  // magic links on a procfs mounted inside the root
  { name: 'plain procfs symlinks (self) are followed', path: 'procfs/self/status', expect: { contentPrefix: 'Name:' } },
  { name: 'magic link root as a parent', path: 'procfs/self/root/etc/passwd', expect: { error: 'ELOOP' } },
  { name: 'magic link fd/N as a parent (/proc/self/fd/0/..)', path: 'procfs/self/fd/0/..', expect: { error: 'ELOOP' } },
  { name: 'magic link cwd as the last component', path: 'procfs/self/cwd', expect: { error: 'ELOOP' } },
  { name: 'magic link exe', path: 'procfs/self/exe', expect: { error: 'ELOOP' } },
  { name: 'symlink to a magic link', path: 'magic/etc/passwd', expect: { error: 'ELOOP' } },
  { name: 'magic link itself with O_PATH|O_NOFOLLOW', path: 'procfs/self/root', opts: { flags: O_PATH | O_NOFOLLOW }, expect: { linkOnFsOf: 'procfs' } },
  { name: 'beneath: magic link', path: 'procfs/self/root', opts: { resolve: 'beneath' }, expect: { error: 'ELOOP' } },
  // beneath: any escape fails
  { name: 'beneath: absolute symlink', path: 'abs', opts: { resolve: 'beneath' }, expect: { error: 'EXDEV' } },
  { name: 'beneath: escaping relative symlink', path: 'esc', opts: { resolve: 'beneath' }, expect: { error: 'EXDEV' } },
  { name: 'beneath: leading ..', path: '../etc/passwd', opts: { resolve: 'beneath' }, expect: { error: 'EXDEV' } },
  { name: 'beneath: symlinked parent d -> /', path: 'd/etc/passwd', opts: { resolve: 'beneath' }, expect: { error: 'EXDEV' } },
  { name: 'beneath: chain escaping at the end', path: 'chain1/secret', opts: { resolve: 'beneath' }, expect: { error: 'EXDEV' } },
  { name: 'beneath: .. that stays inside', path: 'a/b/../../etc/passwd', opts: { resolve: 'beneath' }, expect: { content: ROOT_PASSWD } },
  { name: 'beneath: leading / is ignored', path: '/etc/passwd', opts: { resolve: 'beneath' }, expect: { content: ROOT_PASSWD } },
  { name: 'beneath: relative symlink inside', path: 'a/b/up', opts: { resolve: 'beneath' }, expect: { content: ROOT_PASSWD } },
  // O_CREAT never creates anything outside the root
  { name: 'O_CREAT below an escaping symlink', path: 'esc/created-esc', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { object: 'created-esc' } },
  { name: 'O_CREAT through a dangling relative escaping symlink', path: 'dangling', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { object: 'outside/created-dangling' } },
  { name: 'O_CREAT through a dangling absolute symlink to the victim dir', path: 'dangling-abs', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { error: 'ENOENT' } },
  { name: 'O_CREAT through a dangling absolute symlink inside', path: 'dangling-in', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { object: 'etc/created-in' } },
  { name: 'O_CREAT|O_EXCL does not follow a symlink', path: 'dangling2', opts: { flags: O_CREAT | O_EXCL | O_WRONLY, mode: 0o644 }, expect: { error: 'EEXIST' } },
  { name: 'beneath: O_CREAT through an escaping symlink', path: 'dangling2', opts: { resolve: 'beneath', flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { error: 'EXDEV' } },
  { name: 'O_CREAT with a trailing slash', path: 'etc/', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { error: 'EISDIR' } },
  { name: 'O_CREAT on ..', path: 'a/..', opts: { flags: O_CREAT | O_WRONLY, mode: 0o644 }, expect: { error: 'EISDIR' } },
  { name: 'O_TMPFILE in the root via d -> /', path: 'd', opts: { flags: O_TMPFILE | O_RDWR, mode: 0o600 }, expect: { tmpfile: true } },
  // the flag checks openat2 makes
  { name: 'O_PATH with O_WRONLY', path: 'etc', opts: { flags: O_PATH | O_WRONLY }, expect: { error: 'EINVAL' } },
  { name: 'mode beyond 07777', path: 'new', opts: { flags: O_CREAT | O_WRONLY, mode: 0o10000 }, expect: { error: 'EINVAL' } },
  { name: 'O_CREAT|O_DIRECTORY', path: 'new', opts: { flags: O_CREAT | O_DIRECTORY }, expect: { error: 'EINVAL' } },
];

// Runs the table in a fresh node process using the raw addon; stdin carries {addon, root, cases}.
const RUNNER = `
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const addon = require(input.addon);
(async () => {
  const out = [];
  for (const c of input.cases) {
    let fd;
    try {
      fd = await addon.openBounded(input.root, c.path, c.opts || {});
    } catch (e) {
      out.push({ ok: false, code: e.code });
      continue;
    }
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : 'other';
      const r = { ok: true, dev: String(st.dev), ino: String(st.ino), type, nlink: Number(st.nlink) };
      const flags = (c.opts && c.opts.flags) || 0;
      if (type === 'file' && (flags & 3) === 0 && (flags & ${O_PATH}) === 0) {
        const buf = Buffer.alloc(256);
        r.content = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString();
      }
      out.push(r);
    } finally {
      fs.closeSync(fd);
    }
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { process.stderr.write(String(e && e.stack)); process.exit(1); });
`;

function addonPath(): string {
  return process.env.GRAPHDRIVER_ADDON ?? path.resolve(__dirname, '..', '..', 'build', 'Release', 'graphdriver.node');
}

/** Files (with contents) and symlinks under `dir`, skipping `skip`: used to prove nothing outside the root changed. */
function snapshot(dir: string, skip: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (p === skip) continue;
      const st = fs.lstatSync(p);
      const rel = path.relative(dir, p);
      if (st.isDirectory()) {
        out[rel] = 'dir';
        walk(p);
      } else if (st.isSymbolicLink()) {
        out[rel] = `link:${fs.readlinkSync(p)}`;
      } else {
        out[rel] = `file:${fs.readFileSync(p, 'utf8')}`;
      }
    }
  };
  walk(dir);
  return out;
}

/**
 * base/ (escape target of esc -> ../../..)
 *   x/y/outside/secret      victim, different content
 *   x/y/root/               the root
 */
function buildTree(base: string): { root: string; victim: string } {
  const root = path.join(base, 'x', 'y', 'root');
  const victim = path.join(base, 'x', 'y', 'outside');
  fs.mkdirSync(victim, { recursive: true });
  fs.writeFileSync(path.join(victim, 'secret'), VICTIM_SECRET);
  fs.writeFileSync(path.join(victim, 'passwd'), 'victim-passwd\n');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(root, 'outside'));
  fs.mkdirSync(path.join(root, 'a', 'b'), { recursive: true });
  fs.mkdirSync(path.join(root, 'procfs'));
  fs.writeFileSync(path.join(root, 'etc', 'passwd'), ROOT_PASSWD);
  fs.writeFileSync(path.join(root, 'outside', 'secret'), ROOT_SECRET);
  const links: Array<[string, string]> = [
    ['esc', '../../..'],
    ['abs', '/etc/passwd'],
    ['d', '/'],
    ['chain1', 'chain2'],
    ['chain2', '../outside'],
    ['rel', 'etc/passwd'],
    ['a/b/up', '../../etc/passwd'],
    ['loop1', 'loop2'],
    ['loop2', 'loop1'],
    ['proc', '/proc/self/root'],
    ['magic', 'procfs/self/root'],
    ['dangling', '../outside/created-dangling'],
    ['dangling2', '../outside/created-dangling2'],
    ['dangling-abs', path.join(victim, 'created-abs')],
    ['dangling-in', '/etc/created-in'],
  ];
  // link0 -> link1 -> ... -> link39 -> link40 -> etc/passwd: link1 needs 40 follows, link0 needs 41.
  for (let i = 0; i < 40; i++) links.push([`link${i}`, `link${i + 1}`]);
  links.push(['link40', 'etc/passwd']);
  for (const [name, target] of links) fs.symlinkSync(target, path.join(root, name));
  return { root, victim };
}

const skipReason = !isRoot
  ? 'needs root'
  : !kernelHasFs('proc') || !haveTool('mount')
    ? 'needs procfs and mount(8)'
    : null;

const modes: Array<{ label: string; env: Record<string, string> }> = [
  { label: 'openat2', env: {} },
  { label: 'user-space walk (GRAPHDRIVER_NO_OPENAT2=1)', env: { GRAPHDRIVER_NO_OPENAT2: '1' } },
];

describeIf(skipReason, 'openBounded', () => {
  for (const mode of modes) {
    describe(mode.label, () => {
      let base = '';
      let root = '';
      let victim = '';
      let procMounted = false;
      let before: Record<string, string> = {};
      let results: Outcome[] = [];

      beforeAll(() => {
        base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-bounded-'));
        ({ root, victim } = buildTree(base));
        execFileSync('mount', ['-t', 'proc', 'proc', path.join(root, 'procfs')]);
        procMounted = true;
        before = snapshot(base, root);
        const env: NodeJS.ProcessEnv = { ...process.env, ...mode.env };
        if (!('GRAPHDRIVER_NO_OPENAT2' in mode.env)) delete env.GRAPHDRIVER_NO_OPENAT2;
        const stdout = execFileSync(process.execPath, ['-e', RUNNER], {
          input: JSON.stringify({ addon: addonPath(), root, cases: cases.map((c) => ({ path: c.path, opts: c.opts })) }),
          env,
          encoding: 'utf8',
        });
        results = JSON.parse(stdout) as Outcome[];
      });

      afterAll(() => {
        if (procMounted) execFileSync('umount', ['-l', path.join(root, 'procfs')]);
        if (base) fs.rmSync(base, { recursive: true, force: true });
      });

      it('ran every case', () => {
        expect(results).toHaveLength(cases.length);
      });

      it.each(cases.map((c, i) => [c.name, i] as const))('%s', (_name, i) => {
        const c = cases[i];
        const r = results[i];
        const e = c.expect;
        if ('error' in e) {
          expect(r).toEqual({ ok: false, code: e.error });
          return;
        }
        if (!r.ok) throw new Error(`${c.path}: expected success, got ${r.code}`);
        if ('content' in e) {
          expect(r.type).toBe('file');
          expect(r.content).toBe(e.content);
        } else if ('contentPrefix' in e) {
          expect(r.type).toBe('file');
          expect(r.content?.startsWith(e.contentPrefix)).toBe(true);
        } else if ('tmpfile' in e) {
          expect(r.type).toBe('file');
          expect(r.nlink).toBe(0);
        } else if ('linkOnFsOf' in e) {
          expect(r.type).toBe('link');
          expect(r.dev).toBe(String(fs.statSync(path.join(root, e.linkOnFsOf), { bigint: true }).dev));
        } else {
          const st = fs.lstatSync(path.join(root, e.object), { bigint: true });
          expect({ dev: r.dev, ino: r.ino }).toEqual({ dev: String(st.dev), ino: String(st.ino) });
        }
      });

      it('created nothing and changed nothing outside the root', () => {
        expect(snapshot(base, root)).toEqual(before);
        expect(fs.readdirSync(victim).sort()).toEqual(['passwd', 'secret']);
        expect(fs.readFileSync(path.join(victim, 'secret'), 'utf8')).toBe(VICTIM_SECRET);
      });

      it('created the O_CREAT targets inside the root', () => {
        for (const rel of ['created-esc', 'outside/created-dangling', 'etc/created-in']) {
          expect(fs.lstatSync(path.join(root, rel)).isFile()).toBe(true);
        }
        expect(fs.existsSync(path.join(root, 'outside', 'created-dangling2'))).toBe(false);
      });
    });
  }

  describe('through the checked bindings (in this process)', () => {
    const b = loadBindings();
    let base = '';
    let root = '';

    beforeAll(() => {
      base = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-bounded-'));
      ({ root } = buildTree(base));
    });
    afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

    it('resolves an escaping path inside the root and returns a usable fd', async () => {
      const fd = await b.openBounded(root, 'esc/etc/passwd');
      try {
        expect(fs.readFileSync(fd, 'utf8')).toBe(ROOT_PASSWD);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('rejects with a Node-style error naming the path', async () => {
      const err = (await b.openBounded(root, 'abs', { resolve: 'beneath' }).catch((e: unknown) => e)) as NativeError;
      expect(err.code).toBe('EXDEV');
      expect(err.errno).toBe(-os.constants.errno.EXDEV);
      expect(err.path).toBe('abs');
      expect(typeof err.syscall).toBe('string');
    });

    it('rejects a missing root', async () => {
      await expect(b.openBounded(path.join(base, 'nope'), 'x')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    });

    it('validates options before native code', async () => {
      await expect(b.openBounded(root, 'x', { resolve: 'outside' as 'in-root' })).rejects.toThrow(TypeError);
    });
  });
});
