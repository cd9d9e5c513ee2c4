"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.NaiveDiffDriver = void 0;
/**
 * Docker's graphdriver.NaiveDiffDriver: turns any {@link ProtoDriver} into a full {@link Driver} by mounting a
 * layer (and its parent) with get/put and comparing the two trees with the archive engine.
 * @module
 */
const node_stream_1 = require("node:stream");
const apply_1 = require("../archive/apply");
const changes_1 = require("../archive/changes");
const diff_1 = require("../archive/diff");
const layer_id_1 = require("./layer-id");
/** Runs `fn` and then `release`; a failure of `release` is reported only when `fn` itself succeeded. */
async function releasing(fn, release) {
    let result;
    try {
        result = await fn();
    }
    catch (e) {
        await release().catch(() => undefined);
        throw e;
    }
    await release();
    return result;
}
/** Resolves once the wall clock has passed the second in which `startMs` lies (timers may fire a little early). */
async function untilNextSecond(startMs) {
    const boundary = Math.floor(startMs / 1000) * 1000 + 1000;
    for (let now = Date.now(); now < boundary; now = Date.now()) {
        await new Promise((resolve) => setTimeout(resolve, boundary - now));
    }
}
/**
 * A readable that forwards `source` and calls `release` exactly once: before it signals the end (so a consumer
 * that sees 'end' may remove the layer right away), when the source fails, or when the consumer destroys it early
 * (then 'close' is emitted only after the release has finished). A failing release fails the stream.
 */
class ReleasingReadable extends node_stream_1.Readable {
    source;
    releaseFn;
    beforeEnd;
    sourceIter;
    pumping = false;
    releasing = null;
    constructor(source, releaseFn, beforeEnd) {
        super();
        this.source = source;
        this.releaseFn = releaseFn;
        this.beforeEnd = beforeEnd;
        this.sourceIter = source[Symbol.asyncIterator]();
    }
    release() {
        this.releasing ??= this.releaseFn();
        return this.releasing;
    }
    _read() {
        if (this.pumping)
            return;
        this.pumping = true;
        void this.pump();
    }
    async pump() {
        try {
            for (;;) {
                const r = await this.sourceIter.next();
                if (this.destroyed)
                    return;
                if (r.done) {
                    await this.release();
                    await this.beforeEnd();
                    if (!this.destroyed)
                        this.push(null);
                    return;
                }
                if (!this.push(r.value))
                    return;
            }
        }
        catch (e) {
            this.destroy(e instanceof Error ? e : new Error(String(e)));
        }
        finally {
            this.pumping = false;
        }
    }
    _destroy(err, cb) {
        if (!this.source.destroyed)
            this.source.destroy();
        this.release().then(() => cb(err), (e) => cb(err ?? (e instanceof Error ? e : new Error(String(e)))));
    }
}
/**
 * A full driver made of a ProtoDriver plus the naive diff methods (Docker's NaiveDiffDriver). Every ProtoDriver
 * method delegates to the wrapped driver; every get is matched by a put on every path, errors included.
 */
class NaiveDiffDriver {
    proto;
    /** Native bindings for the archive engine (undefined: the engine loads the real addon). */
    bindings;
    secondBoundary;
    constructor(
    /** The wrapped driver. */
    proto, opts = {}) {
        this.proto = proto;
        if (opts.format !== undefined && opts.format !== 'naive') {
            throw new TypeError(`NaiveDiffDriver: unsupported whiteout format ${JSON.stringify(opts.format)}`);
        }
        this.bindings = opts.bindings;
        this.secondBoundary = opts.secondBoundary ?? true;
    }
    get name() {
        return this.proto.name;
    }
    create(id, parent, opts) {
        return this.proto.create(id, parent, opts);
    }
    createReadWrite(id, parent, opts) {
        return this.proto.createReadWrite(id, parent, opts);
    }
    remove(id) {
        return this.proto.remove(id);
    }
    get(id, opts) {
        return this.proto.get(id, opts);
    }
    put(id) {
        return this.proto.put(id);
    }
    exists(id) {
        return this.proto.exists(id);
    }
    status() {
        return this.proto.status();
    }
    getMetadata(id) {
        return this.proto.getMetadata(id);
    }
    cleanup() {
        return this.proto.cleanup();
    }
    archiveOpts() {
        return this.bindings ? { bindings: this.bindings } : {};
    }
    /** Runs `fn` with layer `id` mounted, and puts it afterwards whatever happens. */
    async withLayer(id, fn) {
        const root = await this.proto.get(id);
        return releasing(() => fn(root), () => this.proto.put(id));
    }
    /**
     * Tar of the layer's changes against `parent` (all of the layer when there is none). The layer stays mounted
     * until the stream ends, fails or is destroyed; the parent only while the changes are computed, as Docker does.
     */
    async diff(id, parent) {
        const parentId = (0, layer_id_1.checkParentId)(parent);
        const started = Date.now();
        const layerFs = await this.proto.get(id);
        let handedOver = false;
        try {
            const changes = parentId === null
                ? await (0, changes_1.changesDirs)(layerFs, null, this.archiveOpts())
                : await this.withLayer(parentId, (parentFs) => (0, changes_1.changesDirs)(layerFs, parentFs, this.archiveOpts()));
            const tar = (0, diff_1.exportChanges)(layerFs, changes, this.archiveOpts());
            const out = new ReleasingReadable(tar, () => this.proto.put(id), () => (this.secondBoundary ? untilNextSecond(started) : Promise.resolve()));
            handedOver = true;
            return out;
        }
        finally {
            if (!handedOver)
                await this.proto.put(id).catch(() => undefined);
        }
    }
    /** The layer's changes against `parent` (all Add when there is none), sorted by path. */
    async changes(id, parent) {
        const parentId = (0, layer_id_1.checkParentId)(parent);
        return this.withLayer(id, (layerFs) => parentId === null
            ? (0, changes_1.changesDirs)(layerFs, null, this.archiveOpts())
            : this.withLayer(parentId, (parentFs) => (0, changes_1.changesDirs)(layerFs, parentFs, this.archiveOpts())));
    }
    /**
     * Extracts a tar diff into layer `id` (whiteouts become deletions); resolves to the bytes of file content
     * applied. `parent` is not used: the layer already holds its parent's content.
     */
    async applyDiff(id, _parent, diff) {
        return this.withLayer(id, async (layerFs) => {
            const r = await (0, apply_1.applyLayer)(layerFs, diff, { ...this.archiveOpts(), format: 'naive' });
            return r.size;
        });
    }
    /** Size in bytes of the files added or modified in the layer against `parent` (hardlinks counted once). */
    async diffSize(id, parent) {
        const changes = await this.changes(id, parent);
        return this.withLayer(id, (layerFs) => (0, changes_1.diffSize)(changes, layerFs, this.archiveOpts()));
    }
}
exports.NaiveDiffDriver = NaiveDiffDriver;
//# sourceMappingURL=naive-diff-driver.js.map