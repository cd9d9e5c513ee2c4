/**
 * Container commands: `create`, `mount`, `unmount`, `changes`, `diff`, `commit`, `rm`, `ps`.
 *
 * A container here is what Docker's storage keeps for one: an init layer and a read-write layer on top of an
 * image. `mount` leaves the root filesystem mounted after the command exits (see lib/cli/store.ts) until
 * `unmount` or `rm`.
 * @module
 */
import type { Command } from 'commander';

import type { Container } from '../../container/container-store';
import type { Image } from '../../image/image-store';
import { normalizeReference } from '../../image/reference';
import type { CommitOptions, CreateContainerOptions } from '../../storage/storage';
import { arg, boolOpt, checkTarDestination, forEachItem, handler, listArg, listOpt, optArg, strOpt, writeTar, type RunState } from '../command';
import type { CliContext } from '../context';
import { errorCode } from '../errors';
import { collect, keyValues } from '../options';
import { changesJson, createdAgo, familiarRef, formatChanges, formatTable, shortId, showId } from '../output';

/** How `ps` names a container's image: its first reference, else its short id (also when the image is gone). */
export function imageLabel(imageId: string, images: readonly Image[], noTrunc: boolean): string {
  const img = images.find((i) => i.id === imageId);
  const ref = img?.references[0];
  if (ref !== undefined) return familiarRef(ref);
  return noTrunc ? imageId : shortId(imageId);
}

/** The `ps` table, newest first. */
export function formatContainers(containers: readonly Container[], images: readonly Image[], now: Date, noTrunc: boolean): string {
  const sorted = sortContainers(containers);
  return formatTable(
    ['CONTAINER ID', 'IMAGE', 'CREATED', 'NAMES'],
    sorted.map((c) => [showId(c.id, noTrunc), imageLabel(c.image, images, noTrunc), createdAgo(c.created, now), c.name ?? '']),
  );
}

/** Newest first, then by id. */
export function sortContainers(containers: readonly Container[]): Container[] {
  return [...containers].sort((a, b) => (Date.parse(b.created ?? '') || 0) - (Date.parse(a.created ?? '') || 0) || a.id.localeCompare(b.id));
}

export function registerContainerCommands(program: Command, ctx: CliContext, state: RunState): void {
  program
    .command('create')
    .description('create a container (init layer + read-write layer) from an image; prints its id')
    .argument('<image>', 'image reference or id')
    .option('--name <name>', 'unique container name')
    .option('--opt <key=value>', 'per-container driver option, e.g. size=10G (repeatable)', collect)
    .option('--mount-label <label>', 'SELinux mount label')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const o: CreateContainerOptions = {};
        const name = strOpt(opts, 'name');
        if (name !== undefined) o.name = name;
        const storageOpt = listOpt(opts, 'opt');
        if (storageOpt.length > 0) o.storageOpt = keyValues(storageOpt, '--opt');
        const label = strOpt(opts, 'mountLabel');
        if (label !== undefined) o.mountLabel = label;
        const s = await env.store();
        const c = await s.createContainer(arg(args, 0), o);
        await env.out.result(() => `${c.id}\n`, () => c);
      }),
    );

  program
    .command('mount')
    .description("mount a container's root filesystem and print its path (it stays mounted until unmount or rm)")
    .argument('<container>', 'container id, id prefix or name')
    .action(
      handler(ctx, state, async (env, args) => {
        const s = await env.store();
        const c = await s.getContainer(arg(args, 0));
        const p = await s.mountContainer(c.id);
        await env.out.result(() => `${p}\n`, () => ({ id: c.id, path: p }));
      }),
    );

  program
    .command('unmount')
    .alias('umount')
    .description("unmount a container's root filesystem")
    .argument('<container>', 'container id, id prefix or name')
    .action(
      handler(ctx, state, async (env, args) => {
        const s = await env.store();
        const c = await s.getContainer(arg(args, 0));
        let unmounted = true;
        try {
          await s.unmountContainer(c.id);
        } catch (e) {
          // Unmounting what is not mounted is not an error for the user: the container is in the state asked for.
          if (errorCode(e) !== 'ERR_NOT_MOUNTED') throw e;
          unmounted = false;
        }
        await env.out.result(() => `${c.id}\n`, () => ({ id: c.id, unmounted }));
      }),
    );

  program
    .command('changes')
    .description("list the container's changed paths against its image: A (added), C (changed), D (deleted)")
    .argument('<container>', 'container id, id prefix or name')
    .action(
      handler(ctx, state, async (env, args) => {
        const s = await env.store();
        const changes = await s.containerChanges(arg(args, 0));
        await env.out.result(() => formatChanges(changes), () => changesJson(changes));
      }),
    );

  program
    .command('diff')
    .description("write the container's changes as a layer tar (to stdout, or -o file)")
    .argument('<container>', 'container id, id prefix or name')
    .option('-o, --output <file>', 'write to a file instead of stdout')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const output = strOpt(opts, 'output');
        checkTarDestination(ctx, output);
        const s = await env.store();
        const c = await s.getContainer(arg(args, 0));
        const tar = await s.exportContainerDiff(c.id);
        const bytes = await writeTar(ctx, tar, output);
        // With -o, stdout is free for the result; without it stdout is the tar itself.
        if (output !== undefined) await env.out.result(() => '', () => ({ id: c.id, output, bytes }));
      }),
    );

  program
    .command('commit')
    .description("create an image from a container's changes on top of its image; prints the image id")
    .argument('<container>', 'container id, id prefix or name')
    .argument('[reference]', 'name[:tag] to give the new image')
    .option('-m, --message <text>', 'commit message')
    .option('-a, --author <name>', 'author')
    .action(
      handler(ctx, state, async (env, args, opts) => {
        const o: CommitOptions = {};
        const reference = optArg(args, 1);
        if (reference !== undefined) o.reference = normalizeReference(reference);
        const message = strOpt(opts, 'message');
        if (message !== undefined) o.message = message;
        const author = strOpt(opts, 'author');
        if (author !== undefined) o.author = author;
        const s = await env.store();
        const img = await s.commitContainer(arg(args, 0), o);
        await env.out.result(() => `${img.id}\n`, () => img);
      }),
    );

  program
    .command('rm')
    .description('remove containers (unmounting them first)')
    .argument('<container...>', 'container ids, id prefixes or names')
    .action(
      handler(ctx, state, async (env, args) => {
        const s = await env.store();
        const removed: string[] = [];
        try {
          await forEachItem(env, listArg(args, 0), async (name) => {
            const c = await s.getContainer(name);
            await s.removeContainer(c.id);
            removed.push(c.id);
            // Docker echoes each argument as given.
            if (!env.globals.json) await env.out.result(() => `${name}\n`, () => null);
          });
        } finally {
          if (env.globals.json) await env.out.result(() => '', () => removed);
        }
      }),
    );

  program
    .command('ps')
    .description('list containers')
    .option('-q, --quiet', 'only container ids')
    .option('--no-trunc', 'full ids')
    .action(
      handler(ctx, state, async (env, _args, opts) => {
        const s = await env.store();
        const containers = sortContainers(await s.listContainers());
        const noTrunc = opts.trunc === false;
        if (boolOpt(opts, 'quiet')) {
          await env.out.result(() => containers.map((c) => `${showId(c.id, noTrunc)}\n`).join(''), () => containers.map((c) => c.id));
          return;
        }
        const images = await s.listImages();
        await env.out.result(() => formatContainers(containers, images, ctx.now(), noTrunc), () => containers);
      }),
    );
}
