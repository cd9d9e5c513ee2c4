'use strict';
// Child process of the devicemapper crash test (guest/devmapper-driver.test.js): opens the driver at argv[2] and
// creates layer argv[3] on parent argv[4], but kills itself with SIGKILL right after the pool has taken the
// `create_snap` message and before the driver wrote the device's record: the worst moment for a crash. Prints
// "CRASH-AT <thin id>" first, so the parent knows which thin device the dead process left behind.
const path = require('node:path');

const JS = path.resolve(__dirname, '..', '..', 'node_modules', '.cache', 'graphdriver-vm');
const { DevMapperDriver } = require(path.join(JS, 'lib', 'drivers', 'devmapper'));
const { loadBindings } = require(path.join(JS, 'lib', 'native', 'bindings'));

const [home, id, parent] = process.argv.slice(2);
const options = JSON.parse(process.env.DM_OPTIONS || '[]');
const real = loadBindings();
const bindings = new Proxy(real, {
  get(target, prop) {
    const v = target[prop];
    if (prop !== 'dmMessage') return typeof v === 'function' ? v.bind(target) : v;
    return async (name, sector, message) => {
      const reply = await target.dmMessage(name, sector, message);
      const m = /^create_snap (\d+) /.exec(message);
      if (m) {
        process.stdout.write(`CRASH-AT ${m[1]}\n`, () => process.kill(process.pid, 'SIGKILL'));
        await new Promise(() => undefined);
      }
      return reply;
    };
  },
});

DevMapperDriver.init(home, options, { bindings })
  .then((d) => d.create(id, parent === '-' ? null : parent))
  .then(
    () => {
      process.stdout.write('NO-CRASH\n');
      process.exit(3);
    },
    (e) => {
      process.stderr.write(`${e.stack}\n`);
      process.exit(4);
    },
  );
