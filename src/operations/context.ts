import { isNoteworthyLine } from '../postgres/tools.js';
import { scrubSecrets } from '../secrets.js';
import type { OperationContext, Progress } from './operation.js';

/** Where a running operation's progress and log lines go: a BullMQ job, or the terminal (--local). */
export interface ReportSink {
  progress(progress: Progress): Promise<unknown> | void;
  log(lines: string[]): Promise<unknown> | void;
}

/**
 * Builds an operation's context. Progress and log lines are coalesced and sent at most every
 * `intervalMs`, so a tool printing thousands of lines costs a few Redis round trips, not thousands.
 * A tool's --verbose chatter handed to `log` is left out here, for every operation at once.
 */
export function createContext<Payload>(
  base: Pick<
    OperationContext<Payload>,
    | 'jobId'
    | 'job'
    | 'ledger'
    | 'attempt'
    | 'payload'
    | 'config'
    | 'logger'
    | 'signal'
    | 'enqueue'
    | 'childResults'
    | 'awaitChildren'
  >,
  sink: ReportSink,
  intervalMs = 250,
): { context: OperationContext<Payload>; flush(): Promise<void> } {
  let latest: Progress | undefined;
  let sentPercent = -1;
  let sentStep = '';
  let lines: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<unknown> = Promise.resolve();

  const send = () => {
    timer = undefined;
    const batch = lines;
    lines = [];
    const progress = latest;
    latest = undefined;
    chain = chain.then(async () => {
      try {
        if (batch.length > 0) await sink.log(batch);
        if (progress) await sink.progress(progress);
      } catch (error) {
        base.logger.warn({ err: error }, 'could not report progress');
      }
    });
  };
  const schedule = () => {
    timer ??= setTimeout(send, intervalMs);
  };

  const context: OperationContext<Payload> = {
    ...base,
    progress(percent, step) {
      const rounded = Math.round(Math.min(100, Math.max(0, percent)) * 10) / 10;
      if (rounded === sentPercent && step === sentStep) return;
      sentPercent = rounded;
      sentStep = step;
      latest = { percent: rounded, step: scrubSecrets(step, base.config.secrets) };
      schedule();
    },
    log(line) {
      if (!isNoteworthyLine(line)) return;
      lines.push(scrubSecrets(line, base.config.secrets));
      schedule();
    },
  };
  return {
    context,
    async flush() {
      if (timer) clearTimeout(timer);
      send();
      await chain;
    },
  };
}
