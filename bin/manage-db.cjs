#!/usr/bin/env node
// The CLI is written in TypeScript, compiled to dist/ and bundled into one file by `npm ci` (the prepare
// script), which runs with V8's code cache kept beside it: see src/cli/cached-bundle.cts. This file and
// that one are CommonJS, as the bundle is: Node starts them without its ES module loader.
const path = require('node:path');

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before anything else is loaded: the version needs no module of the CLI.
  process.stdout.write(`${require('../package.json').version}\n`);
} else {
  require('../dist/src/cli/cached-bundle.cjs').runCachedBundle(path.join(__dirname, '../dist/src/cli-bundle/manage-db.cjs'));
}
