/**
 * Moving images in and out: `pull` and `push` (OCI distribution registries), `load` and `save` (`docker save`
 * and OCI archives). Progress goes to stderr (bars on a terminal, plain lines otherwise); Ctrl-C aborts a
 * transfer, which then leaves nothing behind.
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';

import type { Command } from 'commander';

import type { Image } from '../../image/image-store';
import { normalizeReference } from '../../image/reference';
import type { PullOptions } from '../../registry/pull';
import type { PushOptions } from '../../registry/push';
import { arg, boolOpt, checkTarDestination, handler, listArg, strOpt, tempSibling, type CommandEnv, type OptionValues, type RunState } from '../command';
import type { CliContext } from '../context';
import { UsageError } from '../errors';
import { parsePlatform } from '../options';
import { copyStream, familiarRef } from '../output';
import { createProgress, LOAD_LABELS, progressMode, PULL_LABELS, PUSH_LABELS, type PhaseLabels, type ProgressEvent, type ProgressReporter } from '../progress';
import { inputSource } from './images';

/** Runs a transfer with progress and Ctrl-C handling: Ctrl-C aborts, the reporter always stops. */
async function withProgress<T>(
  env: CommandEnv,
  quiet: boolean,
  labels: PhaseLabels,
  fn: (onProgress: (p: ProgressEvent) => void, signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const reporter: ProgressReporter = createProgress(progressMode(env.ctx.io.stderr, { json: env.globals.json, quiet }), env.ctx.io.stderr, labels);
  const abort = new AbortController();
  const dispose = env.ctx.onInterrupt(() => abort.abort(Object.assign(new Error('interrupted'), { code: 'ABORT_ERR' })));
  try {
    return await fn((p) => reporter.update(p), abort.signal);
  } finally {
    dispose();
    reporter.stop();
  }
}

/** Registry credentials from --username and --password-stdin (the password never appears on a command line). */
async function credentials(env: CommandEnv, opts: OptionValues): Promise<{ username: string; password: string } | undefined> {
  const username = strOpt(opts, 'username');
  const fromStdin = boolOpt(opts, 'passwordStdin');
  if (username === undefined && !fromStdin) return undefined;
  if (username === undefined || !fromStdin) {
    throw new UsageError('--username and --password-stdin go together', 'echo "$PASSWORD" | graphdriver pull --username me --password-stdin <reference>');
  }
  if (env.ctx.io.stdin.isTTY === true) throw new UsageError('--password-stdin reads the password from stdin, but stdin is a terminal', 'pipe the password in');
  const parts: Buffer[] = [];
  for await (const c of env.ctx.io.stdin) parts.push(Buffer.from(c as Uint8Array));
  // One trailing newline (from echo or a file) is not part of the password.
  const password = Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '');
  if (password === '') throw new UsageError('--password-stdin: the password read from stdin is empty');
  return { username, password };
}

/** `Loaded image: busybox:latest` per reference, `Loaded image ID: sha256:...` for an image without one (Docker's lines). */
export function formatLoaded(images: readonly Image[]): string {
  const lines: string[] = [];
  for (const img of images) {
    if (img.references.length === 0) lines.push(`Loaded image ID: ${img.id}`);
    for (const r of img.references) lines.push(`Loaded image: ${familiarRef(r)}`);
  }
  return lines.map((l) => `${l}\n`).join('');
}

/** A pass-through that reports the bytes read from an archive of unknown size (stdin). */
function countingStream(src: Readable, id: string, onProgress: (p: ProgressEvent) => void): Readable {
  let bytes = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      onProgress({ id, phase: 'reading', bytes });
      cb(null, chunk);
    },
  });
  src.on('error', (e) => t.destroy(e));
  return src.pipe(t);
}

const registryOptions = (c: Command): Command =>
  c
    .option('--insecure', 'allow plain http and unverified TLS for this registry')
    .option('-u, --username <name>', 'registry user name (with --password-stdin)')
    .option('--password-stdin', 'read the registry password or token from stdin');

export function registerTransferCommands(program: Command, ctx: CliContext, state: RunState): void {
  registryOptions(
    program
      .command('pull')
      .description('download an image from a registry')
      .argument('<reference>', 'name[:tag|@digest], e.g. busybox or localhost:5000/app:1')
      .option('--platform <os/arch[/variant]>', 'platform to select from a multi-platform image (default: linux/amd64)'),
  )
    .option('-q, --quiet', 'no progress; print only the reference')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const ref = normalizeReference(arg(args, 0));
        const quiet = boolOpt(opts, 'quiet');
        const o: PullOptions = {};
        const platform = strOpt(opts, 'platform');
        if (platform !== undefined) {
          parsePlatform(platform);
          o.platform = platform;
        }
        if (boolOpt(opts, 'insecure')) o.insecure = true;
        const creds = await credentials(env, opts);
        if (creds !== undefined) o.credentials = creds;
        const s = await env.store();
        let digest: string | undefined;
        o.onResolved = (m) => (digest = m.digest);
        const img = await withProgress(env, quiet, PULL_LABELS, (onProgress, signal) => s.pullImage(ref, { ...o, onProgress, signal }));
        if (!quiet) {
          if (digest !== undefined) await env.out.note(`Digest: ${digest}`);
          await env.out.note(`Status: pulled ${familiarRef(ref)} (image ${img.id})`);
        }
        await env.out.result(() => `${ref}\n`, () => img);
      }),
    );

  registryOptions(
    program
      .command('push')
      .description('upload an image to a registry')
      .argument('<reference>', 'name[:tag], e.g. localhost:5000/app:1'),
  )
    .option('--image <image>', 'the local image to push (default: the reference itself)')
    .option('-q, --quiet', 'no progress')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const ref = normalizeReference(arg(args, 0));
        const o: PushOptions = {};
        const image = strOpt(opts, 'image');
        if (image !== undefined) o.image = image;
        if (boolOpt(opts, 'insecure')) o.insecure = true;
        const creds = await credentials(env, opts);
        if (creds !== undefined) o.credentials = creds;
        const s = await env.store();
        let pushed: { digest: string; size: number } | undefined;
        o.onPushed = (r) => (pushed = { digest: r.digest, size: r.size });
        await withProgress(env, boolOpt(opts, 'quiet'), PUSH_LABELS, (onProgress, signal) => s.pushImage(ref, { ...o, onProgress, signal }));
        // Docker's last line of a push: `<tag>: digest: sha256:... size: N`.
        if (pushed !== undefined && !boolOpt(opts, 'quiet')) await env.out.note(`${familiarRef(ref)}: digest: ${pushed.digest} size: ${pushed.size}`);
        await env.out.result(() => `${ref}\n`, () => ({ reference: ref, ...(pushed ?? {}) }));
      }),
    );

  program
    .command('load')
    .description('load images from a `docker save` or OCI archive (stdin, or -i file; plain, gzip or zstd) or a skopeo dir: directory (-i dir)')
    .option('-i, --input <file>', 'read from a file instead of stdin')
    .option('-q, --quiet', 'no progress')
    .action(
      handler(ctx, state, async (env, _args, opts) => {
        const src = inputSource(ctx, strOpt(opts, 'input'), 'load');
        const s = await env.store();
        const images = await withProgress(env, boolOpt(opts, 'quiet'), LOAD_LABELS, (onProgress, signal) => {
          // A file goes by path (the loader reads it directly); stdin is counted as it is read.
          const input = typeof src === 'string' ? src : countingStream(src, 'stdin', onProgress);
          return s.loadImage(input, { onProgress, signal });
        });
        await env.out.result(() => formatLoaded(images), () => images);
      }),
    );

  program
    .command('save')
    .description('write images as a `docker save` archive (to stdout, or -o file)')
    .argument('<image...>', 'image references or ids')
    .option('-o, --output <file>', 'write to a file instead of stdout')
    .option('--format <format>', 'docker (Docker <= 24 layout) or oci (OCI layout with manifest.json, as Docker 25+)', 'docker')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const output = strOpt(opts, 'output');
        const format = strOpt(opts, 'format');
        if (format !== 'docker' && format !== 'oci') throw new UsageError(`--format ${JSON.stringify(format)} is not docker or oci`);
        checkTarDestination(ctx, output);
        const refs = listArg(args, 0);
        const s = await env.store();
        if (output !== undefined) {
          const file = path.resolve(ctx.cwd, output);
          // Written next to the target and renamed into place: a failed save leaves an existing file untouched.
          const tmp = tempSibling(file);
          try {
            await s.saveImage(refs, tmp, { format });
            await fs.promises.rename(tmp, file);
          } catch (e) {
            await fs.promises.unlink(tmp).catch(() => undefined);
            throw e;
          }
          await env.out.result(() => '', () => ({ images: refs, output: file }));
          return;
        }
        // stdout is never ended by a command: the saver writes into a pass-through that is copied to it.
        const pass = new PassThrough();
        const copy = copyStream(pass, ctx.io.stdout, { end: false });
        try {
          await s.saveImage(refs, pass, { format });
        } catch (e) {
          pass.destroy(e instanceof Error ? e : new Error(String(e)));
          await copy.catch(() => undefined);
          throw e;
        }
        if (!pass.writableEnded) pass.end();
        await copy;
      }),
    );
}
