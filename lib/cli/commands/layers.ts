/**
 * `graphdriver layers`: the read-only layers of the store (chain id, diffID, parent, the driver's cache id, size).
 * @module
 */
import type { Command } from 'commander';

import type { Layer } from '../../layer/layer-store';
import { boolOpt, handler, type RunState } from '../command';
import type { CliContext } from '../context';
import { formatTable, humanSize, showId } from '../output';

/** The `layers` table; parents first (a layer is listed after the one it is built on), then by chain id. */
export function formatLayers(layers: readonly Layer[], noTrunc: boolean): string {
  return formatTable(
    ['CHAIN ID', 'DIFF ID', 'PARENT', 'CACHE ID', 'SIZE'],
    orderLayers(layers).map((l) => [
      showId(l.chainId, noTrunc),
      showId(l.diffId, noTrunc),
      l.parent === null ? '<none>' : showId(l.parent, noTrunc),
      showId(l.cacheId, noTrunc),
      humanSize(l.size),
    ]),
  );
}

/** Layers ordered so that each comes after its parent (depth-first from the base layers, by chain id). */
export function orderLayers(layers: readonly Layer[]): Layer[] {
  const byParent = new Map<string | null, Layer[]>();
  const ids = new Set(layers.map((l) => l.chainId));
  for (const l of layers) {
    // A parent that is not listed (should not happen) is treated as a base so the layer is still shown.
    const p = l.parent !== null && ids.has(l.parent) ? l.parent : null;
    const list = byParent.get(p) ?? [];
    list.push(l);
    byParent.set(p, list);
  }
  const out: Layer[] = [];
  const visit = (p: string | null): void => {
    for (const l of (byParent.get(p) ?? []).sort((a, b) => a.chainId.localeCompare(b.chainId))) {
      out.push(l);
      visit(l.chainId);
    }
  };
  visit(null);
  return out;
}

export function registerLayerCommands(program: Command, ctx: CliContext, state: RunState): void {
  program
    .command('layers')
    .description('list the read-only layers')
    .option('-q, --quiet', 'only chain ids')
    .option('--no-trunc', 'full ids')
    .action(
      handler(ctx, state, async (env, _args, opts) => {
        const s = await env.store();
        const layers = orderLayers(await s.listLayers());
        const noTrunc = opts.trunc === false;
        if (boolOpt(opts, 'quiet')) {
          await env.out.result(() => layers.map((l) => `${showId(l.chainId, noTrunc)}\n`).join(''), () => layers.map((l) => l.chainId));
          return;
        }
        await env.out.result(() => formatLayers(layers, noTrunc), () => layers);
      }),
    );
}
