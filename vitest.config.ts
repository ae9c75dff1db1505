import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    globalSetup: ['tests/helpers/global-setup.ts'],
    reporters: ['default', 'json'],
    outputFile: { json: 'test-output/vitest.json' },
  },
});
