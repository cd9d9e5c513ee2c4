/**
 * Why a driver refuses to remove a layer, said the same way by every driver: it is mounted (gets without puts),
 * native diff work holds it, or other layers are built on it.
 * @module
 */
import { LayerInUseError } from './errors';

/** LayerInUseError when layer `id` has `gets` gets without a put. */
export function refuseMounted(id: string, gets: number): void {
  if (gets > 0) throw new LayerInUseError(id, `it is mounted (${gets} get${gets === 1 ? '' : 's'} without put)`);
}

/** LayerInUseError naming (the first three of) the layers built on `id`, when there are any. */
export function refuseParent(id: string, children: readonly string[]): void {
  if (children.length === 0) return;
  const shown = children.slice(0, 3).map((k) => JSON.stringify(k)).join(', ');
  throw new LayerInUseError(id, `it is the parent of ${children.length} layer${children.length === 1 ? '' : 's'} (${shown}${children.length > 3 ? ', ...' : ''})`);
}

/**
 * Counts native diff operations working on a layer's directory without a mount (aufs and overlay2 read or write
 * `diff/<id>` directly), so that remove can refuse the layer meanwhile. Callers take and check under the layer's lock.
 */
export class HoldCounter {
  private readonly holds = new Map<string, number>();

  /** Operations holding `id` now. */
  count(id: string): number {
    return this.holds.get(id) ?? 0;
  }

  /** Adds a hold on `id`; the returned function releases it (calling it again does nothing). */
  take(id: string): () => void {
    this.holds.set(id, this.count(id) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.count(id) - 1;
      if (n <= 0) this.holds.delete(id);
      else this.holds.set(id, n);
    };
  }

  /** LayerInUseError when operations hold `id`; `verb` says what they do with it ("reading", "using"). */
  refuse(id: string, verb: string): void {
    const h = this.count(id);
    if (h > 0) throw new LayerInUseError(id, `${h} diff operation${h === 1 ? ' is' : 's are'} ${verb} it`);
  }
}
