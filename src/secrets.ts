import { hkdfSync } from 'node:crypto';
/** The key that signs backups, derived from an encryption key: a signature reveals nothing of the encryption key. */
export function deriveSigningKey(encryptionKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', encryptionKey, Buffer.alloc(0), 'dbops backup signing', 32));
}

export interface SigningKeys {
  /** What signs: BACKUP_SIGNING_KEY, or the key derived from BACKUP_ENCRYPTION_KEY. */
  key: Buffer;
  source: string;
  /** What else a signature may have been made with: the keys derived from BACKUP_DECRYPTION_KEYS (before a rotation). */
  older: Buffer[];
}

/** BACKUP_SIGNING_KEY, or the key derived from BACKUP_ENCRYPTION_KEY; undefined when neither is set. */
export function signingKeyFrom(
  signingKey: string | undefined,
  encryptionKey: string | undefined,
  olderEncryptionKeys: string[] = [],
): SigningKeys | undefined {
  const older = olderEncryptionKeys.map((text) => deriveSigningKey(parseKey(text)!));
  if (signingKey) return { key: parseKey(signingKey)!, source: 'BACKUP_SIGNING_KEY', older };
  if (encryptionKey)
    return { key: deriveSigningKey(parseKey(encryptionKey)!), source: 'derived from BACKUP_ENCRYPTION_KEY', older };
  return undefined;
}

/** BACKUP_ENCRYPTION_KEY: 32 bytes, as 64 hex digits or base64. */
export function parseKey(text: string): Buffer | undefined {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) {
    const key = Buffer.from(trimmed, 'base64');
    if (key.length === 32) return key;
  }
  return undefined;
}

/**
 * Removes secrets from text before it leaves the process (logs, job logs, failure reasons, CLI output).
 * Two nets: the configured passwords themselves, and any `scheme://user:password@` credential.
 */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#\s@]*:)[^@\s/]+@/gi;
const PASSWORD_PARAM = /(password=)[^&\s]+/gi;

export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let result = text.replace(URL_CREDENTIALS, '$1***@').replace(PASSWORD_PARAM, '$1***');
  for (const secret of secrets) {
    if (secret.length >= 3 && result.includes(secret)) result = result.split(secret).join('***');
  }
  return result;
}
