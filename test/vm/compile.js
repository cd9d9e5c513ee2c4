#!/usr/bin/env node
'use strict';
// Compiles the TypeScript the guest tests need (lib/, test/conformance/, test/support/) to plain CommonJS for the
// VM, which runs node without ts-jest: `node test/vm/compile.js` prints the output directory.
//
// Output: node_modules/.cache/graphdriver-vm/<same relative path>.js. Inside node_modules, so it is ignored by git
// and the guest resolves npm packages (tar-stream, expect, ...) from the checkout's node_modules as usual; it is
// shared into the guest with the rest of the checkout. Files are transpiled one by one (no type check: `npm run
// typecheck` does that) and only when the source is newer than the output, so a warm run takes a second or two.
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const OUT = path.join(ROOT, 'node_modules', '.cache', 'graphdriver-vm');
const SOURCES = ['lib', 'test/conformance', 'test/support'];

function walk(dir, out) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if (e.code === 'ENOENT') return;
    throw e;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
}

function main() {
  const ts = require(path.join(ROOT, 'node_modules', 'typescript'));
  const files = [];
  for (const s of SOURCES) walk(path.join(ROOT, s), files);
  const compilerOptions = {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    sourceMap: false,
    inlineSourceMap: true,
    inlineSources: false,
  };
  const wanted = new Set();
  let built = 0;
  for (const src of files) {
    const rel = path.relative(ROOT, src);
    const dest = path.join(OUT, rel.replace(/\.ts$/, '.js'));
    wanted.add(dest);
    let stale = true;
    try {
      stale = fs.statSync(dest).mtimeMs < fs.statSync(src).mtimeMs;
    } catch {
      stale = true;
    }
    if (!stale) continue;
    const text = fs.readFileSync(src, 'utf8');
    const r = ts.transpileModule(text, { compilerOptions, fileName: src, reportDiagnostics: true });
    const errors = (r.diagnostics || []).filter((d) => d.category === ts.DiagnosticCategory.Error);
    if (errors.length > 0) {
      const msg = errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('\n');
      throw new Error(`${rel}: ${msg}`);
    }
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, r.outputText);
    fs.renameSync(tmp, dest);
    built++;
  }
  // Outputs whose source is gone would still load: remove them.
  const all = [];
  (function collect(dir) {
    let entries;
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) collect(p);
      else all.push(p);
    }
  })(OUT);
  let removed = 0;
  for (const f of all) {
    if (!wanted.has(f)) {
      fs.rmSync(f, { force: true });
      removed++;
    }
  }
  process.stderr.write(`vm: compiled ${built} of ${files.length} TypeScript files${removed ? `, removed ${removed} stale` : ''} into ${path.relative(ROOT, OUT)}\n`);
  process.stdout.write(`${OUT}\n`);
}

main();
