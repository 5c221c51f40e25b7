let counter = 0;

/** Interface names are limited by IFNAMSIZ (16 bytes with the NUL). */
export const IFNAME_MAX = 15;

/**
 * `prefix` + pid + a per-process counter, unique across concurrent test workers and calls.
 * Throws RangeError when the result would exceed `maxLength`, rather than truncating into a collision.
 */
export function uniqueName(prefix: string, maxLength: number = IFNAME_MAX): string {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(prefix)) {
    throw new TypeError(`name prefix must be a letter followed by letters, digits or '_', got ${JSON.stringify(prefix)}`);
  }
  // Base 36 keeps pid and counter short enough for interface names; '-' keeps them from running together.
  const name = `${prefix}${process.pid.toString(36)}-${(counter++).toString(36)}`;
  if (name.length > maxLength) {
    throw new RangeError(`name ${name} is ${name.length} characters, at most ${maxLength} allowed: shorten the prefix ${JSON.stringify(prefix)}`);
  }
  return name;
}
