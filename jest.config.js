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
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      // integration tests mount, attach loop devices and format images: give them room and run files serially
      testTimeout: 120000,
      maxWorkers: 1,
    },
  ],
};
