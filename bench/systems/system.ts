/** What every benchmarked system (ours or a peer) offers the coordinator. */

/** The data set of bench/data/build.sh. */
export interface BenchData {
  dir: string;
  /** Layer tars, bottom first (L1 = Debian minbase rootfs, L2 = apt layer with whiteouts, L3 = small edit). */
  layers: [string, string, string];
  /** `docker save` archive of L1..L3 (tag bench/test:l123). */
  imageTar: string;
  /** OCI image layout of the same (tags l1, l12, l123). */
  ociLayout: string;
  /** ~30,000 small files in one layer. */
  smallTar: string;
  /** One 1 GiB file in one layer. */
  bigTar: string;
  /** The standard container edit (bench/data/mutate.sh) and its 16 MiB blob. */
  mutateScript: string;
  blob: string;
}

/** Which operations a round runs (the rest are skipped to keep a run short). */
export interface RoundPlan {
  /** 16 concurrent container creates. */
  concurrent: boolean;
  /** Import of the many-small-files and 1 GiB layers. */
  bulk: boolean;
  /** Container create + mount over a 128-layer chain. */
  deep: boolean;
}

/** Timings (ms) by operation name, and the peak RSS seen in the round. */
export interface RoundResult {
  times: Record<string, number>;
  rssKb: number;
}

/** A benchmarked system: started once per group, then one scenario per round, then stopped. */
export interface BenchSystem {
  /** Column label, e.g. `graphdriver overlay2`, `containers-storage overlay`, `dockerd overlay2`. */
  readonly label: string;
  /** True for our library (ratios are ours / each peer). */
  readonly ours: boolean;
  start(): Promise<void>;
  round(data: BenchData, plan: RoundPlan): Promise<RoundResult>;
  stop(): Promise<void>;
}

/**
 * Image layers of the deep-chain case: with the container's init layer that makes 128 lower layers, the most
 * overlay2 accepts (Docker's limit too).
 */
export const DEEP_LAYERS = 127;

/** Canonical operation names, in table order, with what they mean. */
export const OPERATIONS: ReadonlyArray<[string, string]> = [
  ['import_layers', 'register L1+L2+L3 (Debian minbase, apt layer, small layer) and create the image'],
  ['load_image', 'load the same image from a `docker save` archive into an empty store'],
  ['create_ctr', 'create a container (init + rw layer)'],
  ['mount', 'mount the container root'],
  ['changes', 'list the changes of the standard edit (~214 changes)'],
  ['diff', 'export those changes as a tar'],
  ['commit', 'commit the container as a new image layer'],
  ['unmount', 'unmount the container root'],
  ['rm_ctr', 'remove the container'],
  ['create16', '16 container creates at once'],
  ['import_small', 'register a layer of ~30,000 small files'],
  ['import_big', 'register a layer holding one 1 GiB file'],
  ['deep128', 'create + mount a container over 128 lower layers (127-layer image + init)'],
  ['pull', 'pull the 3-layer bench image (gzip layers) from a local docker-registry into an empty store'],
  ['pull_skopeo', 'of which `skopeo copy docker://... dir:` (skopeo + load column only)'],
  ['pull_load', 'of which loading that directory with Storage.loadImage (skopeo + load column only)'],
];
