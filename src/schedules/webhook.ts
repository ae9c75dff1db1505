import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { scrubSecrets } from '../secrets.js';

/** What a webhook receives (JSON). `text` makes it a Slack incoming-webhook message as it is. */
export interface Notification {
  event: 'job.failed' | 'job.completed' | 'schedule.missed';
  text: string;
  /** The environment concerned, when there is one. */
  env?: string;
  job?: { id: string; type: string; attempts: number };
  schedule?: string;
  reason?: string;
  at: string;
}

export interface NotifierOptions {
  attempts?: number;
  firstDelayMs?: number;
  timeoutMs?: number;
}

/**
 * Sends notifications to NOTIFY_WEBHOOK_URL in the background, retried with exponential backoff; a
 * slow or failing receiver never holds up a job. Nothing secret goes out: every text is scrubbed.
 */
export class Notifier {
  private readonly pending = new Set<Promise<void>>();
  private readonly attempts: number;
  private readonly firstDelayMs: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly config: Pick<Config, 'NOTIFY_WEBHOOK_URL' | 'secrets'>,
    private readonly logger: Logger,
    options: NotifierOptions = {},
  ) {
    this.attempts = options.attempts ?? 6;
    this.firstDelayMs = options.firstDelayMs ?? 1_000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  get enabled(): boolean {
    return Boolean(this.config.NOTIFY_WEBHOOK_URL);
  }

  send(notification: Notification): void {
    if (!this.config.NOTIFY_WEBHOOK_URL) return;
    const scrub = (text: string | undefined) =>
      text === undefined ? undefined : scrubSecrets(text, this.config.secrets);
    const body = JSON.stringify({
      ...notification,
      text: scrub(notification.text),
      reason: scrub(notification.reason),
    });
    const delivery = this.deliver(this.config.NOTIFY_WEBHOOK_URL, body, notification).finally(() =>
      this.pending.delete(delivery),
    );
    this.pending.add(delivery);
  }

  private async deliver(url: string, body: string, notification: Notification): Promise<void> {
    let lastError = '';
    for (let attempt = 1; attempt <= this.attempts; attempt += 1) {
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'dbops' },
          body,
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        await response.body?.cancel().catch(() => undefined);
        if (response.ok) return;
        lastError = `HTTP ${response.status}`;
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429)
          break; // the receiver refuses it
      } catch (error) {
        lastError = errorMessage(error);
      }
      if (attempt < this.attempts) await sleep(this.firstDelayMs * 2 ** (attempt - 1));
    }
    // The URL itself is a secret (Slack's carries a token): it is never logged.
    this.logger.warn(
      { event: notification.event, jobId: notification.job?.id, reason: lastError },
      'webhook notification not delivered',
    );
  }

  /** Waits (up to `timeoutMs`) for deliveries under way, e.g. before the process exits. */
  async flush(timeoutMs = 5_000): Promise<void> {
    await Promise.race([Promise.allSettled([...this.pending]), sleep(timeoutMs)]);
  }
}
