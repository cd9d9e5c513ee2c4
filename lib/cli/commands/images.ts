/**
 * Image commands: `import`, `images`, `tag`, `rmi`.
 * @module
 */
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import type { Command } from 'commander';

import type { Image } from '../../image/image-store';
import { normalizeReference, parseReference, referenceName } from '../../image/reference';
import type { ImportImageOptions, RemoveImageResult } from '../../storage/storage';
import { arg, boolOpt, forEachItem, handler, listArg, optArg, strOpt, type RunState } from '../command';
import type { CliContext } from '../context';
import { UsageError } from '../errors';
import { parsePlatform } from '../options';
import { createdAgo, familiarRef, formatTable, humanSize, repoTag, showId } from '../output';

/** One row of `images`: an image once per reference, or once with `<none>` when it has none. */
export interface ImageRow {
  /** The image the row shows. */
  image: Image;
  repository: string;
  tag: string;
  id: string;
  created: string;
  size: string;
}

/** The rows of `images`, newest first (as Docker), optionally only those of one repository. */
export function imageRows(images: readonly Image[], now: Date, opts: { noTrunc?: boolean; repository?: string } = {}): ImageRow[] {
  const sorted = [...images].sort((a, b) => (Date.parse(b.created ?? '') || 0) - (Date.parse(a.created ?? '') || 0) || a.id.localeCompare(b.id));
  // A filter with a tag or digest matches that reference exactly; a bare name matches every tag of the repository.
  let matches: ((ref: string) => boolean) | null = null;
  if (opts.repository !== undefined) {
    const filter = opts.repository;
    const f = parseReference(filter);
    const name = referenceName(f);
    const exact = f.tag !== undefined || f.digest !== undefined ? normalizeReference(filter) : null;
    matches = (ref) => {
      try {
        return exact !== null ? ref === exact : referenceName(parseReference(ref)) === name;
      } catch {
        return false;
      }
    };
  }
  const rows: ImageRow[] = [];
  for (const img of sorted) {
    const id = showId(img.id, opts.noTrunc === true);
    const base = { image: img, id, created: createdAgo(img.created, now), size: humanSize(img.size) };
    const refs = img.references.map((r) => ({ ref: r, ...repoTag(r) }));
    if (matches !== null) {
      for (const r of refs) if (matches(r.ref)) rows.push({ repository: r.repository, tag: r.tag, ...base });
      continue;
    }
    if (refs.length === 0) rows.push({ repository: '<none>', tag: '<none>', ...base });
    for (const r of refs) rows.push({ repository: r.repository, tag: r.tag, ...base });
  }
  return rows;
}

/** The `images` table. */
export function formatImages(rows: readonly ImageRow[]): string {
  return formatTable(
    ['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'],
    rows.map((r) => [r.repository, r.tag, r.id, r.created, r.size]),
  );
}

/** Docker's `rmi` lines: `Untagged: busybox:latest`, `Deleted: sha256:...`. */
export function formatRemoval(r: RemoveImageResult): string {
  return [...r.untagged.map((u) => `Untagged: ${familiarRef(u)}\n`), ...r.deleted.map((d) => `Deleted: ${d}\n`)].join('');
}

/** The source of `import` / `load`: a path, or stdin for `-` (refused when stdin is a terminal). */
export function inputSource(ctx: CliContext, file: string | undefined, what: string): string | Readable {
  if (file !== undefined && file !== '-') return path.resolve(ctx.cwd, file);
  if (ctx.io.stdin.isTTY === true) {
    throw new UsageError(`${what} reads a tar from stdin, but stdin is a terminal`, 'give a file, or redirect: graphdriver ' + what + ' < image.tar');
  }
  return ctx.io.stdin;
}

export function registerImageCommands(program: Command, ctx: CliContext, state: RunState): void {
  program
    .command('import')
    .description('create a one-layer image from a tar (plain, gzip or zstd; - for stdin) or a directory')
    .argument('<source>', 'tar file, directory, or - for stdin')
    .argument('[reference]', 'name[:tag] to give the image')
    .option('-m, --message <text>', 'commit message of the image')
    .option('--platform <os/arch[/variant]>', 'platform recorded in the image config (default: this host)')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const reference = optArg(args, 1);
        const o: ImportImageOptions = {};
        if (reference !== undefined) o.reference = normalizeReference(reference);
        const message = strOpt(opts, 'message');
        if (message !== undefined) o.message = message;
        const platform = strOpt(opts, 'platform');
        if (platform !== undefined) {
          const p = parsePlatform(platform);
          o.os = p.os;
          o.architecture = p.architecture;
          if (p.variant !== undefined) o.variant = p.variant;
        }
        const src = inputSource(ctx, arg(args, 0), 'import');
        const s = await env.store();
        const img = await s.importImage(src, o);
        await env.out.result(() => `${img.id}\n`, () => img);
      }),
    );

  program
    .command('images')
    .description('list images')
    .argument('[repository]', 'only images of this repository')
    .option('-q, --quiet', 'only image ids')
    .option('--no-trunc', 'full image ids')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const s = await env.store();
        const images = await s.listImages();
        // commander turns --no-trunc into trunc: false.
        const noTrunc = opts.trunc === false;
        const repository = optArg(args, 0);
        const rows = imageRows(images, ctx.now(), repository !== undefined ? { noTrunc, repository } : { noTrunc });
        // JSON lists each image once, in the order of the table.
        const shown = [...new Set(rows.map((r) => r.image))];
        if (boolOpt(opts, 'quiet')) {
          const ids = [...new Set(rows.map((r) => r.id))];
          await env.out.result(() => ids.map((i) => `${i}\n`).join(''), () => shown.map((i) => i.id));
          return;
        }
        await env.out.result(() => formatImages(rows), () => shown);
      }),
    );

  program
    .command('tag')
    .description('give an image another reference')
    .argument('<source>', 'image reference or id')
    .argument('<target>', 'new name[:tag]')
    .action(
      handler(ctx, state, async (env, args) => {
        const target = normalizeReference(arg(args, 1));
        const s = await env.store();
        const ref = await s.tagImage(arg(args, 0), target);
        const img = await s.getImage(ref);
        await env.out.result(() => '', () => ({ reference: ref, id: img.id }));
      }),
    );

  program
    .command('rmi')
    .description('remove images (untag a reference; delete the image with its last one)')
    .argument('<image...>', 'image references or ids')
    .option('-f, --force', 'remove even when containers use the image or it has several references')
    .option('--no-prune', 'keep untagged parent images')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const s = await env.store();
        const all: RemoveImageResult = { untagged: [], deleted: [], deletedLayers: [] };
        const force = boolOpt(opts, 'force');
        const prune = opts.prune !== false;
        try {
          await forEachItem(env, listArg(args, 0), async (ref) => {
            const r = await s.removeImage(ref, { force, prune });
            all.untagged.push(...r.untagged);
            all.deleted.push(...r.deleted);
            all.deletedLayers.push(...r.deletedLayers);
            if (!env.globals.json) await env.out.result(() => formatRemoval(r), () => r);
          });
        } finally {
          if (env.globals.json) await env.out.result(() => '', () => all);
        }
      }),
    );
}
