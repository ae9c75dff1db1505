#!/usr/bin/env node
// The CLI is written in TypeScript, compiled to dist/ and bundled into one CommonJS file by `npm ci` (the
// prepare script). Node 22.1 and later keep V8's compile cache for it (module.enableCompileCache(): in
// NODE_COMPILE_CACHE, else a directory of the system's temporary one, per user; NODE_DISABLE_COMPILE_CACHE=1
// turns it off). This file is CommonJS, as the bundle is: Node starts them without its ES module loader.
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before anything else is loaded: the version needs no module of the CLI.
  process.stdout.write(`${require('../package.json').version}\n`);
} else {
  require('node:module').enableCompileCache?.();
  require('../dist/src/cli-bundle/manage-db.cjs');
}
