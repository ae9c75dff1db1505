import cliProgress from 'cli-progress';
import type { Progress } from '../operations/operation.js';

export interface ProgressDisplay {
  update(progress: Progress): void;
  stop(): void;
}

/** A bar on a terminal, plain lines otherwise (logs, CI, pipes); always on stderr, stdout stays for results. */
export function createProgressDisplay(stream: NodeJS.WriteStream = process.stderr): ProgressDisplay {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: '{bar} {percentage}% | {step}', stream, hideCursor: true, clearOnComplete: false, barsize: 30 },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update({ percent, step }) {
        if (!started) {
          bar.start(100, 0, { step: '' });
          started = true;
        }
        bar.update(Math.floor(percent), { step: step.slice(0, Math.max(10, (stream.columns ?? 80) - 50)) });
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let last = '';
  return {
    update({ percent, step }) {
      const line = `[${String(Math.floor(percent)).padStart(3)}%] ${step}`;
      if (line !== last) stream.write(`${line}\n`);
      last = line;
    },
    stop() {},
  };
}
