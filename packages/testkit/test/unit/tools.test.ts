import { describe, expect, it } from 'vitest';
import { ensureTool, hasTool, toolPackage } from '../../src/index.js';

describe('tools', () => {
  it('finds binaries on PATH or in sbin', () => {
    expect(ensureTool('sh')).toMatch(/^\/.*\/sh$/);
    expect(hasTool('sh')).toBe(true);
  });

  it('says how to get a missing tool', () => {
    expect(() => ensureTool('testkit-absent')).toThrow(/^testkit-absent not found on PATH .*install the Debian package that provides it/);
    expect(toolPackage('h2load')).toBe('nghttp2-client');
    expect(toolPackage('ip')).toBe('iproute2');
  });
});
