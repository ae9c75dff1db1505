import { existsSync } from 'node:fs';
import path from 'node:path';

/** The tests run the real processes from dist/: `npm test` builds first. */
export default function setup(): void {
  const entry = path.resolve('dist/workers/worker.js');
  if (!existsSync(entry)) throw new Error('dist/ is missing: run `npm run build` (npm test does it for you)');
}
