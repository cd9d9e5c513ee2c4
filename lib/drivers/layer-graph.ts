/**
 * The in-memory parent/child relation of a driver's layers. Every driver refuses to remove a layer that other
 * layers are built on, so each keeps this index; they differ only in where the relation is persisted (vfs and btrfs
 * in small parent records, overlay2 in its `lower` files), which their subclasses add.
 * @module
 */

/** Parent of each layer and children of each parent. Callers serialise changes (the driver's graph lock). */
export class LayerGraph {
  private readonly parentOf = new Map<string, string>();
  private readonly childrenOf = new Map<string, Set<string>>();

  /** Records that `child` is built on `parent` (replacing any earlier record of `child`). */
  add(child: string, parent: string): void {
    this.drop(child);
    this.parentOf.set(child, parent);
    let set = this.childrenOf.get(parent);
    if (!set) this.childrenOf.set(parent, (set = new Set()));
    set.add(child);
  }

  /** Forgets `child`. */
  drop(child: string): void {
    const parent = this.parentOf.get(child);
    if (parent === undefined) return;
    this.parentOf.delete(child);
    const set = this.childrenOf.get(parent);
    if (set) {
      set.delete(child);
      if (set.size === 0) this.childrenOf.delete(parent);
    }
  }

  /** True when a parent is recorded for `id`. */
  hasParent(id: string): boolean {
    return this.parentOf.has(id);
  }

  /** The recorded parent of `id`, null for a base layer (or a layer the driver kept no record of). */
  parent(id: string): string | null {
    return this.parentOf.get(id) ?? null;
  }

  /** Ids of the layers built on `id`. */
  children(id: string): string[] {
    return [...(this.childrenOf.get(id) ?? [])];
  }
}
