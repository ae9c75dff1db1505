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
