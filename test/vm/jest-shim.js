'use strict';
// Just enough of jest's globals on top of node:test for the shared TypeScript suites (compiled by compile.js) to
// run unchanged in the VM: describe/it/test (+ .skip/.only), beforeEach/afterEach/beforeAll/afterAll,
// jest.setTimeout, and expect from the checkout's node_modules (the same `expect` package jest uses). A file may
// set `globalThis.vmTestFilter = (path) => boolean` (path: describe names, then the test name) before loading a
// suite to run only some of its tests.
const nodeTest = require('node:test');
const { expect } = require('expect');

let timeout = 120000;

// Names of the describes being registered (node:test runs a describe's body at once, while registering), so that
// `globalThis.vmTestFilter(path)` can leave describes and tests out: a guest file may run part of a shared suite.
const suitePath = [];
const wanted = (name) => typeof globalThis.vmTestFilter !== 'function' || globalThis.vmTestFilter([...suitePath, name]);

/** jest passes no arguments to a test without `done`; node:test would pass its context: keep them apart. */
const bare = (fn) => (fn === undefined ? undefined : () => fn());

function it(name, fn, ms) {
  if (!wanted(name)) return undefined;
  return nodeTest.it(name, { timeout: ms ?? timeout }, bare(fn));
}
it.skip = (name, fn) => nodeTest.it(name, { skip: true }, bare(fn));
it.only = (name, fn, ms) => nodeTest.it(name, { only: true, timeout: ms ?? timeout }, bare(fn));
it.todo = (name) => nodeTest.it(name, { todo: true });

function describe(name, fn) {
  if (!wanted(name)) return undefined;
  return nodeTest.describe(name, () => {
    suitePath.push(name);
    try {
      return fn();
    } finally {
      suitePath.pop();
    }
  });
}
describe.skip = (name, fn) => nodeTest.describe(name, { skip: true }, fn);
describe.only = (name, fn) => nodeTest.describe(name, { only: true }, fn);

const hook = (h) => (fn, ms) => h(bare(fn), { timeout: ms ?? timeout });

Object.assign(globalThis, {
  describe,
  it,
  test: it,
  beforeEach: hook(nodeTest.beforeEach),
  afterEach: hook(nodeTest.afterEach),
  beforeAll: hook(nodeTest.before),
  afterAll: hook(nodeTest.after),
  expect,
  jest: {
    setTimeout(ms) {
      timeout = ms;
    },
  },
});
