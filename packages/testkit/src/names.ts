let counter = 0;

/** Interface names are limited by IFNAMSIZ (16 bytes with the NUL). */
export const IFNAME_MAX = 15;

/**
 * `prefix` + pid + '-' + a per-process counter, unique across concurrent test workers and calls.
 * Throws RangeError when the result would exceed `maxLength`, rather than truncating into a collision.
 */
export function uniqueName(prefix: string, maxLength: number = IFNAME_MAX): string {
  // The prefix may not end in a digit, so where it stops and the pid starts is never ambiguous.
  if (!/^[A-Za-z](?:[A-Za-z0-9_-]*[A-Za-z_-])?$/.test(prefix)) {
    throw new TypeError(`name prefix must start with a letter, use letters, digits, '_' or '-', and not end in a digit; got ${JSON.stringify(prefix)}`);
  }
  const name = `${prefix}${process.pid}-${(counter++).toString(36)}`;
  if (name.length > maxLength) {
    throw new RangeError(`name ${name} is ${name.length} characters, at most ${maxLength} allowed: shorten the prefix ${JSON.stringify(prefix)}`);
  }
  return name;
}
