// npm's `prepare` (npm ci, npm install, and the first `npx manage-db` in the checkout, which installs
// the checkout into npx's cache): builds dist/ only when a source is newer than the last build, so that
// an `npx manage-db` beside running workers never rebuilds the files they run; then puts manage-db
// in node_modules/.bin.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';

const root = path.resolve(import.meta.dirname, '..');
/** The last file a build writes. */
const BUILT = 'dist/src/cli-bundle/manage-db.cjs';
const SOURCES = ['src', 'workers', 'dashboards', 'bench', 'bin', 'package.json', 'package-lock.json', 'tsconfig.json'];

function newest(file) {
  let stat;
  try {
    stat = statSync(file);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...readdirSync(file).map((name) => newest(path.join(file, name))));
}

const built = newest(path.join(root, BUILT));
if (built === 0 || Math.max(...SOURCES.map((source) => newest(path.join(root, source)))) > built) {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
} else {
  process.stderr.write('dbops: dist/ is newer than every source: not rebuilt\n');
}
const link = path.join(root, 'node_modules', '.bin', 'manage-db');
mkdirSync(path.dirname(link), { recursive: true });
rmSync(link, { force: true });
symlinkSync('../../bin/manage-db.cjs', link);
