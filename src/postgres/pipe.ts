import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { StderrTail, finishTool, startTool, type PgTool, type ToolOptions } from './tools.js';

/** Makes a FIFO at `file` (mode 600); false where the file system has none (some network ones). */
export async function makeFifo(file: string): Promise<boolean> {
  return (await execa('mkfifo', ['-m', '600', file], { reject: false })).exitCode === 0;
}

/**
 * Runs `use` with a directory where FIFOs can be made: `workDir` itself, or, where its file system has
 * none (some network ones) or its path has a quote or backslash (psql reads the FIFO's path inside a
 * command), a private directory of the host's, removed afterwards.
 */
export async function withFifoDir<T>(workDir: string, use: (fifoDir: string) => Promise<T>): Promise<T> {
  const probe = path.join(workDir, 'fifo-probe');
  let fallback: string | undefined;
  try {
    if (/['\\]/.test(workDir) || !(await makeFifo(probe)))
      fallback = await mkdtemp(path.join(os.tmpdir(), 'dbops-fifo-'));
    await rm(probe, { force: true });
    return await use(fallback ?? workDir);
  } finally {
    if (fallback) await rm(fallback, { recursive: true, force: true });
  }
}

/** How long the side that did not fail first may take to end by itself before it is stopped. */
const OTHER_SIDE_GRACE_MS = 2_000;

export interface PipeEnd {
  tool: PgTool;
  args: string[];
  options: ToolOptions;
}

/**
 * Runs two tools joined by a FIFO the caller made: `writer` writes into it, `reader` reads it. No byte
 * passes through this process, which only reads their stderr. If either side fails, the other is given
 * a moment to end by itself (an early end of its input, a broken pipe) and is then stopped: one side of
 * a FIFO waits forever in open() for a partner that failed before opening it. The side whose failure
 * caused the other's says why: the other's error (stopped by us, a broken pipe, an input that ended
 * early) is only a consequence, and must not turn a retryable failure into a permanent one.
 */
export async function pipeTools(writer: PipeEnd, reader: PipeEnd): Promise<void> {
  const start = (end: PipeEnd) => {
    const tail = new StderrTail();
    const child = startTool(end.tool, end.args, {
      ...end.options,
      onStderrLine: (line) => {
        tail.push(line);
        end.options.onStderrLine?.(line);
      },
    });
    return { tool: end.tool, child, tail };
  };
  const written = start(writer);
  const read = start(reader);
  let first: unknown;
  let stopOther: NodeJS.Timeout | undefined;
  const settle = (side: ReturnType<typeof start>, other: ResultPromise) =>
    finishTool(side.tool, side.child, side.tail).catch((error: unknown) => {
      if (first === undefined) {
        first = error;
        // Ending by itself, it keeps its own exit status for the message.
        stopOther = setTimeout(() => other.kill(), OTHER_SIDE_GRACE_MS);
      }
      throw error;
    });
  const [wrote, readAll] = await Promise.allSettled([settle(written, read.child), settle(read, written.child)]);
  clearTimeout(stopOther);
  if (wrote.status === 'rejected' && readAll.status === 'rejected') {
    // Both failed, and one only because of the other: whichever exit this process saw first.
    if (lostItsReader(written.child, written.tail)) throw readAll.reason;
    if (lostItsWriter(read.tail)) throw wrote.reason;
    throw first;
  }
  if (readAll.status === 'rejected') throw readAll.reason;
  if (wrote.status === 'rejected') throw wrote.reason;
}

/** The reader's input ended in the middle (pg_restore of a truncated archive): its writer failed. */
function lostItsWriter(tail: StderrTail): boolean {
  return tail
    .errors()
    .some((line) =>
      /could not read from input file|input file is too short|unexpected end of (file|input)/i.test(line),
    );
}

/**
 * The writer lost its reader: the reader stopped, and the reader's own error says why. The writer
 * either says so, or dies of SIGPIPE without a word (and may be reaped before the reader is).
 */
function lostItsReader(child: ResultPromise, tail: StderrTail): boolean {
  return (
    child.signalCode === 'SIGPIPE' ||
    tail.errors().some((line) => /broken pipe|could not write to output|could not write COPY data/i.test(line))
  );
}
