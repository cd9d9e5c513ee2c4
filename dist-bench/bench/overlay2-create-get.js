"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
/**
 * overlay2: create + get of a container layer on a 10-layer chain, against a bare overlay mount of the same
 * directories (mount(2) directly, and the `mount -t overlay` command). Prints medians of N runs and the ratios.
 *
 *   npx tsc -p tsconfig.json --outDir /tmp/gd-bench && node /tmp/gd-bench/bench/overlay2-create-get.js [runs]
 *
 * Needs root and a kernel with overlay. GRAPHDRIVER_ADDON selects the addon build.
 */
const node_child_process_1 = require("node:child_process");
const fs = __importStar(require("node:fs"));
const os = __importStar(require("node:os"));
const path = __importStar(require("node:path"));
const overlay2_1 = require("../lib/drivers/overlay2");
const bindings_1 = require("../lib/native/bindings");
const constants_1 = require("../lib/native/constants");
const CHAIN = 10;
function median(xs) {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function ms(t0) {
    return Number(process.hrtime.bigint() - t0) / 1e6;
}
async function main() {
    const runs = Number(process.argv[2] ?? 5);
    const b = (0, bindings_1.loadBindings)();
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-bench-ov-'));
    const home = path.join(root, 'overlay2');
    const d = await overlay2_1.Overlay2Driver.init(home);
    try {
        let parent = null;
        for (let i = 0; i < CHAIN; i++) {
            const id = `layer${i}`;
            await d.create(id, parent);
            fs.writeFileSync(path.join(d.dir(id), 'diff', `f${i}`), `layer ${i}\n`);
            parent = id;
        }
        const lowerDirs = (await d.getMetadata(`layer${CHAIN - 1}`));
        // The same lower directories the driver stacks: the top layer's diff, then its lowers.
        const lowers = [lowerDirs.UpperDir, ...lowerDirs.LowerDir.split(':')].join(':');
        const driverTimes = [];
        const syscallTimes = [];
        const commandTimes = [];
        for (let r = -1; r < runs; r++) {
            // Driver: create the container layer and mount it.
            const id = `ctr${r + 1}`;
            // Each timed section starts from a quiet filesystem: unmounting an overlay syncs its upper filesystem, and
            // that journal commit would otherwise land in whichever section runs next.
            await b.syncfs(root);
            let t0 = process.hrtime.bigint();
            await d.createReadWrite(id, parent);
            const merged = await d.get(id);
            const tDriver = ms(t0);
            if (!fs.existsSync(path.join(merged, 'f0')))
                throw new Error('bottom layer not visible');
            await d.put(id);
            await d.remove(id);
            // Bare mount(2) of the same lower dirs, with fresh upper/work/merged dirs made the same way.
            const bare = path.join(root, `bare${r + 1}`);
            await b.syncfs(root);
            t0 = process.hrtime.bigint();
            for (const sub of ['', 'upper', 'work', 'merged'])
                fs.mkdirSync(path.join(bare, sub));
            await b.mount('overlay', path.join(bare, 'merged'), 'overlay', 0, `index=off,lowerdir=${lowers},upperdir=${bare}/upper,workdir=${bare}/work`);
            const tSys = ms(t0);
            await b.umount(path.join(bare, 'merged'), constants_1.UmountFlags.MNT_DETACH);
            fs.rmSync(bare, { recursive: true, force: true });
            // The mount(8) command, as one would type it.
            await b.syncfs(root);
            t0 = process.hrtime.bigint();
            for (const sub of ['', 'upper', 'work', 'merged'])
                fs.mkdirSync(path.join(bare, sub));
            (0, node_child_process_1.execFileSync)('mount', ['-t', 'overlay', 'overlay', '-o', `index=off,lowerdir=${lowers},upperdir=${bare}/upper,workdir=${bare}/work`, path.join(bare, 'merged')]);
            const tCmd = ms(t0);
            await b.umount(path.join(bare, 'merged'), constants_1.UmountFlags.MNT_DETACH);
            fs.rmSync(bare, { recursive: true, force: true });
            if (r >= 0) {
                driverTimes.push(tDriver);
                syscallTimes.push(tSys);
                commandTimes.push(tCmd);
            }
        }
        const md = median(driverTimes);
        const msys = median(syscallTimes);
        const mcmd = median(commandTimes);
        const out = {
            runs,
            chain: CHAIN,
            driverCreateGetMs: +md.toFixed(3),
            bareMountSyscallMs: +msys.toFixed(3),
            bareMountCommandMs: +mcmd.toFixed(3),
            ratioVsSyscall: +(md / msys).toFixed(2),
            ratioVsCommand: +(md / mcmd).toFixed(2),
            samples: { driver: driverTimes.map((x) => +x.toFixed(3)), syscall: syscallTimes.map((x) => +x.toFixed(3)), command: commandTimes.map((x) => +x.toFixed(3)) },
        };
        console.log(JSON.stringify(out, null, 2));
    }
    finally {
        await d.cleanup().catch(() => undefined);
        fs.rmSync(root, { recursive: true, force: true });
    }
}
main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
});
//# sourceMappingURL=overlay2-create-get.js.map