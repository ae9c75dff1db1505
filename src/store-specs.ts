import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from './errors.js';

/** One backup store as BACKUP_STORES names it: a directory, or a bucket and a key prefix in S3. */
export type StoreSpec =
  | { name: string; kind: 'file'; dir: string }
  | {
      name: string;
      kind: 's3';
      bucket: string;
      /** Key prefix without leading or trailing slashes ('' for the bucket's root). */
      prefix: string;
      /** Path-style addressing (`http://host/bucket/key`), as MinIO-like servers want. */
      forcePathStyle: boolean;
      /** Overrides AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and AWS_REGION for this store. */
      endpoint?: string;
      region?: string;
    };

/**
 * What the AWS SDK's standard variables say, read from the configuration's source (the process
 * environment, usually) so that a configuration stands on its own; what is unset here the SDK finds
 * itself (AWS_PROFILE and the shared files, instance roles).
 */
export interface S3Settings {
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  region?: string;
  endpoint?: string;
}

/** The AWS SDK's variables dbops reads itself (s3SettingsFrom), and AWS_PROFILE, which the SDK reads. */
export const AWS_VARIABLES = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_REGION',
  'AWS_DEFAULT_REGION',
  'AWS_ENDPOINT_URL_S3',
  'AWS_ENDPOINT_URL',
  'AWS_PROFILE',
] as const;

export function s3SettingsFrom(source: Record<string, string | undefined>): S3Settings {
  const { AWS_ACCESS_KEY_ID: keyId, AWS_SECRET_ACCESS_KEY: secret, AWS_SESSION_TOKEN: token } = source;
  if (Boolean(keyId) !== Boolean(secret))
    throw new ConfigError('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or neither');
  const endpoint = source.AWS_ENDPOINT_URL_S3 || source.AWS_ENDPOINT_URL || undefined;
  if (endpoint && !/^https?:\/\/[^@\s]+$/.test(endpoint))
    throw new ConfigError('AWS_ENDPOINT_URL_S3: expected an http(s):// URL without credentials');
  return {
    ...(keyId && secret
      ? { credentials: { accessKeyId: keyId, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) } }
      : {}),
    region: source.AWS_REGION || source.AWS_DEFAULT_REGION || undefined,
    endpoint,
  };
}

const STORE_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const S3_OPTIONS = new Set(['forcePathStyle', 'endpoint', 'region']);

/** Where a store is, for people: never a credential (S3's come from the AWS SDK's own sources). */
export function describeStore(spec: StoreSpec): string {
  return spec.kind === 'file' ? `file://${spec.dir}` : `s3://${spec.bucket}${spec.prefix ? `/${spec.prefix}` : ''}`;
}

function parseOne(entry: string, index: number): StoreSpec {
  const named = /^([A-Za-z0-9_-]+)=(.+)$/.exec(entry);
  const text = named ? named[2]! : entry;
  const name = named?.[1]?.toLowerCase();
  if (name !== undefined && !STORE_NAME.test(name))
    throw new ConfigError(`BACKUP_STORES: store name "${name}" must be letters, digits, _ or - (at most 32)`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`BACKUP_STORES: entry ${index + 1} is no URL (expected file:///dir or s3://bucket/prefix)`);
  }
  if (url.username || url.password)
    throw new ConfigError(
      'BACKUP_STORES: credentials do not go in the URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile',
    );
  if (url.protocol === 'file:') {
    if (url.search) throw new ConfigError(`BACKUP_STORES: a file:// store takes no options`);
    return { name: name ?? 'file', kind: 'file', dir: path.resolve(fileURLToPath(url)) };
  }
  if (url.protocol === 's3:') {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(url.hostname))
      throw new ConfigError(`BACKUP_STORES: "${url.hostname}" is no S3 bucket name`);
    for (const key of url.searchParams.keys()) {
      if (!S3_OPTIONS.has(key))
        throw new ConfigError(`BACKUP_STORES: unknown option "${key}" (known: ${[...S3_OPTIONS].join(', ')})`);
    }
    const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
    const forcePathStyle = url.searchParams.get('forcePathStyle');
    if (forcePathStyle !== null && !['true', 'false'].includes(forcePathStyle))
      throw new ConfigError('BACKUP_STORES: forcePathStyle is true or false');
    const endpoint = url.searchParams.get('endpoint') ?? undefined;
    if (endpoint !== undefined && !/^https?:\/\/[^@]+$/.test(endpoint))
      throw new ConfigError('BACKUP_STORES: endpoint is an http(s):// URL without credentials');
    return {
      name: name ?? 's3',
      kind: 's3',
      bucket: url.hostname,
      prefix,
      forcePathStyle: forcePathStyle === 'true',
      endpoint,
      region: url.searchParams.get('region') ?? undefined,
    };
  }
  throw new ConfigError(`BACKUP_STORES: "${url.protocol}//" is no store kind dbops knows (file://, s3://)`);
}

/**
 * BACKUP_STORES: `[name=]url,…`; unset, the one store is BACKUP_DIR. Names default to the kind
 * (`file`, `s3`), numbered when a kind repeats (`s3`, `s3-2`); `--store` picks one by name.
 */
export function parseBackupStores(raw: string | undefined, backupDir: string): StoreSpec[] {
  if (raw === undefined || raw.trim() === '') return [{ name: 'file', kind: 'file', dir: backupDir }];
  const specs = raw
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map(parseOne);
  const seen = new Map<string, number>();
  const named = specs.map((spec, index) => {
    const explicit = /^[A-Za-z0-9_-]+=/.test(
      raw
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean)[index]!,
    );
    const count = (seen.get(spec.name) ?? 0) + 1;
    seen.set(spec.name, count);
    if (count > 1 && explicit) throw new ConfigError(`BACKUP_STORES: two stores are named "${spec.name}"`);
    return count > 1 ? { ...spec, name: `${spec.name}-${count}` } : spec;
  });
  const places = new Set<string>();
  for (const spec of named) {
    const place = describeStore(spec);
    if (places.has(place)) throw new ConfigError(`BACKUP_STORES: ${place} is listed twice`);
    places.add(place);
  }
  return named;
}
