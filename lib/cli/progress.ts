/**
 * Progress of pull, push and load, per layer: Docker-like bars on a terminal (cli-progress redraws them in
 * place), plain lines `<layer>: <phase> <bytes>/<total>` otherwise (logs, pipes, CI), nothing under --json or
 * --quiet. Everything goes to stderr, so stdout keeps only the command's result.
 * @module
 */
import type { Writable } from 'node:stream';

import { MultiBar, type Options as BarOptions, type SingleBar } from 'cli-progress';

import { humanSize } from './output';

/** One progress report of one layer (what Storage.pullImage/pushImage/loadImage report). */
export interface ProgressEvent {
  /** Layer digest, its 12-hex short form, or another name of the unit of work. */
  id: string;
  /** `waiting`, `downloading`, `extracting`, `pushing`, `loading`, `done`, `already exists`, ... */
  phase: string;
  /** Bytes done in this phase. */
  bytes: number;
  /** Bytes expected in this phase; undefined, NaN or negative when unknown. */
  total?: number;
}

/** Receives progress events and renders them. */
export interface ProgressReporter {
  update(p: ProgressEvent): void;
  /** Final render; the reporter is not used afterwards. */
  stop(): void;
}

/** How progress is shown. */
export type ProgressMode = 'tty' | 'plain' | 'none';

/** The stream progress goes to, with what tells a terminal apart. */
export type ProgressStream = Writable & { isTTY?: boolean; columns?: number };

/** The mode for a stream and the user's wishes. */
export function progressMode(stream: ProgressStream, opts: { json: boolean; quiet: boolean }): ProgressMode {
  if (opts.json || opts.quiet) return 'none';
  return stream.isTTY === true ? 'tty' : 'plain';
}

/** The name a unit of work is shown under: 12 hex for digests (as Docker), the name itself otherwise. */
export function layerLabel(id: string): string {
  const m = /^(?:sha256|sha512):([0-9a-f]{12})[0-9a-f]*$/.exec(id);
  if (m) return m[1]!;
  return id.length > 40 ? `${id.slice(0, 37)}...` : id;
}

function knownTotal(total: number | undefined): total is number {
  return typeof total === 'number' && Number.isFinite(total) && total >= 0;
}

/** One plain progress line (no newline): `3f4d90098f5b: downloading 1048576/5242880`, `?` for an unknown total. */
export function plainLine(p: ProgressEvent): string {
  return `${layerLabel(p.id)}: ${p.phase} ${Math.max(0, Math.floor(p.bytes))}/${knownTotal(p.total) ? Math.floor(p.total) : '?'}`;
}

/**
 * Plain lines: one at every phase change and at the end of a phase, and at most one per `intervalMs` per layer
 * in between, so logs stay readable for large layers.
 */
export class PlainProgress implements ProgressReporter {
  private readonly last = new Map<string, { phase: string; at: number; bytes: number }>();
  /** Latest event of each layer that was held back by the rate limit (printed by {@link stop}). */
  private readonly held = new Map<string, ProgressEvent>();

  constructor(
    private readonly stream: Writable,
    private readonly intervalMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  update(p: ProgressEvent): void {
    const t = this.now();
    const prev = this.last.get(p.id);
    const complete = knownTotal(p.total) && p.bytes >= p.total;
    const changed = prev === undefined || prev.phase !== p.phase;
    const due = prev !== undefined && t - prev.at >= this.intervalMs && p.bytes !== prev.bytes;
    const finishing = complete && prev !== undefined && prev.bytes !== p.bytes;
    if (!changed && !due && !finishing) {
      if (prev === undefined || p.bytes !== prev.bytes) this.held.set(p.id, p);
      return;
    }
    this.held.delete(p.id);
    this.last.set(p.id, { phase: p.phase, at: t, bytes: p.bytes });
    this.stream.write(`${plainLine(p)}\n`);
  }

  /** Prints what the rate limit held back, so each layer's last line has its final count. */
  stop(): void {
    for (const p of this.held.values()) this.stream.write(`${plainLine(p)}\n`);
    this.held.clear();
    this.last.clear();
  }
}

/** Shows nothing. */
export class NoProgress implements ProgressReporter {
  update(): void {}
  stop(): void {}
}

/** How an operation words its phases, beyond capitalising them (`downloading` → `Downloading`). */
export type PhaseLabels = Readonly<Record<string, string>>;

/** Docker's wording for pulls. */
export const PULL_LABELS: PhaseLabels = { done: 'Pull complete', 'already exists': 'Already exists' };
/** Docker's wording for pushes. */
export const PUSH_LABELS: PhaseLabels = { done: 'Pushed', 'already exists': 'Layer already exists', mounted: 'Mounted from another repository' };
/** Docker's wording for loads. */
export const LOAD_LABELS: PhaseLabels = { done: 'Loaded', loading: 'Loading layer', 'already exists': 'Already exists' };

/** The label of a phase: the operation's wording, else the phase capitalised. */
export function phaseLabel(phase: string, labels: PhaseLabels): string {
  const l = labels[phase];
  if (l !== undefined) return l;
  return phase.length === 0 ? phase : phase[0]!.toUpperCase() + phase.slice(1);
}

/** Phases that have no bar: nothing is moving. */
const STILL = new Set(['waiting', 'preparing', 'done', 'already exists', 'mounted']);

/** Docker's bar: `=` for every 2% done, then `>`, then blanks up to 50 columns. */
export function renderBar(bytes: number, total: number): string {
  const ratio = total > 0 ? Math.min(1, Math.max(0, bytes / total)) : 0;
  const n = Math.floor(Math.floor(ratio * 100) / 2);
  return `[${'='.repeat(n)}>${' '.repeat(50 - n)}]`;
}

/** One terminal line: `3f4d90098f5b: Downloading [=====>    ]  12.5MB/58.2MB`. */
export function ttyLine(p: ProgressEvent, labels: PhaseLabels): string {
  const label = `${layerLabel(p.id)}: ${phaseLabel(p.phase, labels)}`;
  if (STILL.has(p.phase)) return label;
  if (!knownTotal(p.total) || p.total === 0) return `${label} ${humanSize(p.bytes)}`;
  return `${label} ${renderBar(p.bytes, p.total)} ${humanSize(p.bytes)}/${humanSize(p.total)}`;
}

interface BarPayload {
  line: string;
}

/** Bars on a terminal, one per layer in order of first appearance, redrawn in place by cli-progress. */
export class TtyProgress implements ProgressReporter {
  private readonly multi: MultiBar;
  private readonly bars = new Map<string, SingleBar>();

  constructor(stream: ProgressStream, private readonly labels: PhaseLabels) {
    const opts: BarOptions = {
      stream,
      // The whole line is rendered here; cli-progress only places and redraws it.
      format: (_o, _params, payload: BarPayload) => payload.line,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      linewrap: false,
      fps: 10,
      // SIGINT is handled by the command (it aborts the transfer and stops the bars).
      gracefulExit: false,
    };
    this.multi = new MultiBar(opts);
  }

  update(p: ProgressEvent): void {
    const payload: BarPayload = { line: ttyLine(p, this.labels) };
    const total = knownTotal(p.total) ? p.total : 0;
    const bar = this.bars.get(p.id);
    if (bar === undefined) {
      this.bars.set(p.id, this.multi.create(total, p.bytes, payload));
      return;
    }
    if (bar.getTotal() !== total) bar.setTotal(total);
    bar.update(p.bytes, payload);
  }

  stop(): void {
    this.multi.stop();
  }
}

/** The reporter for a mode. */
export function createProgress(mode: ProgressMode, stream: ProgressStream, labels: PhaseLabels): ProgressReporter {
  if (mode === 'tty') return new TtyProgress(stream, labels);
  if (mode === 'plain') return new PlainProgress(stream);
  return new NoProgress();
}
