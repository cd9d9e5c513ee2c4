/**
 * `graphdriver info`: the store root, the driver with its status pairs (Docker's `docker info` Storage Driver
 * section), and how many images, layers and containers the store holds.
 * @module
 */
import type { Command } from 'commander';

import { handler, type RunState } from '../command';
import type { CliContext } from '../context';

/** The facts `info` shows. */
export interface InfoResult {
  root: string;
  driver: string;
  /** The driver's status pairs in its order, as Docker's `DriverStatus`. */
  driverStatus: Array<[string, string]>;
  images: number;
  layers: number;
  containers: number;
}

/** Human form of {@link InfoResult}. */
export function formatInfo(i: InfoResult): string {
  const lines = [`Root: ${i.root}`, `Storage Driver: ${i.driver}`, ...i.driverStatus.map(([k, v]) => ` ${k}: ${v}`)];
  lines.push(`Images: ${i.images}`, `Layers: ${i.layers}`, `Containers: ${i.containers}`);
  return lines.map((l) => `${l}\n`).join('');
}

export function registerInfoCommands(program: Command, ctx: CliContext, state: RunState): void {
  program
    .command('info')
    .description('show the store root, the storage driver and its status, and what the store holds')
    .action(
      handler(ctx, state, async (env) => {
        const s = await env.store();
        const [driverStatus, images, layers, containers] = await Promise.all([s.driver.status(), s.listImages(), s.listLayers(), s.listContainers()]);
        const info: InfoResult = {
          root: s.root,
          driver: s.driver.name,
          driverStatus,
          images: images.length,
          layers: layers.length,
          containers: containers.length,
        };
        await env.out.result(() => formatInfo(info), () => info);
      }),
    );
}
