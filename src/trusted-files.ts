import { closeSync, fstatSync, openSync, readFileSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';

/*
 * Files dbops takes its configuration or its programs from (a `.env`, PG_BIN_DIR's tools, the backup
 * signing key) are trusted only as git's safe.directory trusts a repository: they belong to the user
 * running dbops (or to root), and nobody else can write them. Anything else may have been put there by
 * another user of the host, and is ignored or refused, in one line that says why.
 */

const currentUid = (): number => process.getuid?.() ?? 0;

/** Why `info` (a file or directory's stat) is not to be trusted by this process, or undefined when it is. */
export function untrustedBecause(info: Stats, what: string): string | undefined {
  const uid = currentUid();
  if (info.uid !== uid && info.uid !== 0)
    return `${what} belongs to uid ${info.uid}, not to this user (uid ${uid}) or root`;
  if ((info.mode & 0o022) !== 0) return `${what} is writable by ${info.mode & 0o002 ? 'anyone' : 'its group'}`;
  return undefined;
}

/**
 * Reads a file only when it and its directory are trusted; undefined when it does not exist. The file is
 * checked through the descriptor it is read from, so it cannot be swapped between the check and the read.
 */
export function readTrustedFile(file: string): { text: string } | { refused: string } | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const refused = untrustedBecause(fstatSync(fd), file) ?? untrustedDirectory(path.dirname(path.resolve(file)));
    if (refused) return { refused };
    return { text: readFileSync(fd, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

/**
 * A directory another user could replace files in: theirs, or writable by others without the sticky bit
 * (in /tmp, another user cannot remove a file that is not theirs).
 */
export function untrustedDirectory(dir: string): string | undefined {
  const info = statSync(dir);
  const uid = currentUid();
  if (info.uid !== uid && info.uid !== 0)
    return `its directory ${dir} belongs to uid ${info.uid}, not to this user (uid ${uid}) or root`;
  if ((info.mode & 0o022) !== 0 && (info.mode & 0o1000) === 0) return `its directory ${dir} is writable by others`;
  return undefined;
}

/** Why a program (or the directory that holds programs) may not be run by this process, or undefined. */
export function untrustedProgramPath(file: string): string | undefined {
  let info: Stats;
  try {
    info = statSync(file);
  } catch {
    return undefined; // missing: the caller says so in its own words
  }
  return untrustedBecause(info, file) ?? untrustedDirectory(path.dirname(path.resolve(file)));
}
