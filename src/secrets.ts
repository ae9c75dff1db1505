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
