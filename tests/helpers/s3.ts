import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { execa, type ResultPromise } from 'execa';
import { waitFor } from './wait.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** s3rver's built-in account. */
export const S3_KEY_ID = 'S3RVER';
export const S3_SECRET = 'S3RVER';

/**
 * An S3-compatible server (s3rver, from npm) of the test's own on a loopback port, with its buckets,
 * in a process of its own, and a client that looks into it over S3 as anyone else would.
 */
export class S3Server {
  private constructor(
    readonly endpoint: string,
    private readonly dir: string,
    private process: ResultPromise,
    private readonly buckets: string[],
  ) {}

  readonly client = (): S3Client =>
    new S3Client({
      endpoint: this.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });

  private static async launch(
    dir: string,
    port: string,
    buckets: string[],
  ): Promise<{ child: ResultPromise; port: string }> {
    const args = [
      '-d',
      dir,
      '-a',
      '127.0.0.1',
      '-p',
      port,
      '--silent',
      ...buckets.flatMap((bucket) => ['--configure-bucket', bucket]),
    ];
    const child = execa('node', [path.join(ROOT, 'node_modules/s3rver/bin/s3rver.js'), ...args], {
      reject: false,
      all: true,
      buffer: true,
    });
    let output = '';
    child.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const listening = await waitFor(
      's3rver to listen',
      async () => /listening on [\d.]+:(\d+)/.exec(output)?.[1],
      20_000,
    );
    return { child, port: listening };
  }

  static async start(buckets: string[]): Promise<S3Server> {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-s3-'));
    const { child, port } = await S3Server.launch(dir, '0', buckets);
    return new S3Server(`http://127.0.0.1:${port}`, dir, child, buckets);
  }

  /** Killed (SIGKILL: requests in flight are cut) and started again on its port, with what it held. */
  async restart(downMs = 0): Promise<void> {
    await this.down();
    if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.up();
  }

  /** Killed (SIGKILL): nothing answers on its port until `up`. */
  async down(): Promise<void> {
    this.process.kill('SIGKILL');
    await this.process;
  }

  /** Started again on its port, with what it held. */
  async up(): Promise<void> {
    this.process = (await S3Server.launch(this.dir, new URL(this.endpoint).port, this.buckets)).child;
  }

  /** The variables a dbops process needs for a store in `bucket` (endpoint and credentials as the AWS SDK reads them). */
  env(stores: string): Record<string, string> {
    return {
      BACKUP_STORES: stores,
      AWS_ACCESS_KEY_ID: S3_KEY_ID,
      AWS_SECRET_ACCESS_KEY: S3_SECRET,
      AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL_S3: this.endpoint,
    };
  }

  async keys(bucket: string, prefix = ''): Promise<string[]> {
    const client = this.client();
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (listed.Contents ?? []).map((item) => item.Key!).sort();
    } finally {
      client.destroy();
    }
  }

  async get(bucket: string, key: string): Promise<Buffer> {
    const client = this.client();
    try {
      const answer = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return Buffer.from(await answer.Body!.transformToByteArray());
    } finally {
      client.destroy();
    }
  }

  async put(bucket: string, key: string, body: Buffer | string): Promise<void> {
    const client = this.client();
    try {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    } finally {
      client.destroy();
    }
  }

  async remove(bucket: string, key: string): Promise<void> {
    const client = this.client();
    try {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    } finally {
      client.destroy();
    }
  }

  async stop(): Promise<void> {
    this.process.kill('SIGTERM');
    await this.process;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
