// Two projects: `unit` runs everywhere with mocked bindings; `integration` talks to the real kernel and needs root
// (its tests print why they skip when a prerequisite is missing).
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }];
const common = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': tsJest },
  moduleFileExtensions: ['ts', 'js', 'json'],
};
module.exports = {
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
  // Test files run one at a time: integration suites check the global mount table and loop devices, which a
  // concurrently running suite would disturb (and CI machines have two cores anyway).
  maxWorkers: 1,
  // Integration tests mount, attach loop devices and format images: give them room (a per-project testTimeout is
  // ignored by jest 30, so it is set here for all).
  testTimeout: 120000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: [
        '<rootDir>/test/integration/**/*.test.ts',
        '<rootDir>/test/security/**/*.test.ts',
        '<rootDir>/test/reliability/**/*.test.ts',
      ],
    },
  ],
};
