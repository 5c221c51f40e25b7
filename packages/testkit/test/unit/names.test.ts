import { describe, expect, it } from 'vitest';
import { IFNAME_MAX, uniqueName } from '../../src/index.js';

describe('uniqueName', () => {
  it('is prefix + pid + counter, different on every call', () => {
    const a = uniqueName('vt');
    const b = uniqueName('vt');
    expect(a).toMatch(new RegExp(`^vt${process.pid}-[0-9a-z]+$`));
    expect(b).not.toBe(a);
    expect(a.length).toBeLessThanOrEqual(IFNAME_MAX);
  });

  it('refuses prefixes that would make names ambiguous or too long', () => {
    expect(() => uniqueName('tk1')).toThrow(TypeError); // 'tk1' + pid 23 and 'tk' + pid 123 would collide
    expect(() => uniqueName('1tk')).toThrow(TypeError);
    expect(() => uniqueName('a b')).toThrow(TypeError);
    expect(() => uniqueName('averyveryverylongprefix')).toThrow(RangeError);
    expect(uniqueName('averyveryverylongprefix', 64)).toMatch(/^averyveryverylongprefix\d+-/);
  });
});
