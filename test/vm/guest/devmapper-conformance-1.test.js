'use strict';
// Runs inside the test VM (npm run test:vm): part 1 of 2 of the shared driver conformance suite against
// DevMapperDriver on a real thin pool (see test/vm/devmapper-conformance.js for the split and the scale).
require('../devmapper-conformance').run(1);
