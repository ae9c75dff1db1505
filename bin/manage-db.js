#!/usr/bin/env node
// The CLI is written in TypeScript, compiled to dist/ and bundled into a few files by `npm ci` (the
// prepare script): loading bullmq, ioredis and zod as hundreds of small modules took longer than the rest.
import { readFileSync } from 'node:fs';
import module from 'node:module';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before anything else is loaded: the version needs no module of the CLI.
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  process.stdout.write(`${version}\n`);
} else {
  // Node 22.1 and later keep the compiled CLI on disk between calls (a shorter start); Node 20 has no such cache.
  module.enableCompileCache?.();
  await import('../dist/src/cli-bundle/main.js');
}
