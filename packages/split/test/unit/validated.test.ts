// compile() takes a snapshot that validate() or a Validator passed, and only that: validation happens once,
// before compiling. The names and field checks the agent's config code shares come from this package.
import { describe, expect, it } from 'vitest';

import * as split from '../../src/index.js';
import { compile, Compiler, type Snapshot, SnapshotError, validate, Validator } from '../../src/index.js';
import { route, service, slice, snapshot } from '../support.js';

const base = (): Snapshot =>
  snapshot({
    services: [service('reviews', '127.0.0.100', 80), service('reviews-v1', '127.0.0.101', 80), service('reviews-v2', '127.0.0.102', 80)],
    endpointSlices: [slice('reviews-v1', ['127.0.0.2'], 9080), slice('reviews-v2', ['127.0.0.3'], 9080)],
    httpRoutes: [route('reviews', 'reviews', 80, [['reviews-v1', 90], ['reviews-v2', 10]])],
  });

describe('compile() takes a validated snapshot', () => {
  it('refuses a snapshot that did not go through validation', () => {
    expect(() => compile(base() as never)).toThrow(TypeError);
    expect(() => new Compiler().compile(base() as never)).toThrow(/not validated/);
  });

  it('compiles what was validated: the caller editing its lists afterwards changes nothing', () => {
    const s = base();
    const v = validate(s);
    s.services.push(service('reviews', '127.0.0.100', 80)); // a duplicate: invalid, had it been checked
    s.httpRoutes.length = 0;
    const c = compile(v);
    expect(c.services.map((x) => x.service)).toEqual(['default/reviews', 'default/reviews-v1', 'default/reviews-v2']);
    expect(c.services[0]!.route).toBe('default/reviews');
  });

  it('validate() throws SnapshotError naming every problem', () => {
    const s = base();
    s.services[0]!.spec.ports[0]!.port = 0;
    expect(() => validate(s)).toThrow(SnapshotError);
    expect(() => new Validator().validate(s)).toThrow('Service default/reviews: spec.ports[0].port: must be an integer in [1, 65535], got 0');
  });

  it('a Compiler given another Validator\'s snapshot compiles it from scratch, with the same result', () => {
    const a = new Validator();
    const compiler = new Compiler();
    const s = base();
    compiler.compile(a.validate(s));
    const next = { ...s, httpRoutes: [route('reviews', 'reviews', 80, [['reviews-v1', 1], ['reviews-v2', 1]])] };
    const fromOther = compiler.compile(new Validator().validate(next));
    expect(fromOther).toEqual(compile(validate(next)));
    // And back on the first Validator, whose last snapshot this Compiler did not compile.
    expect(compiler.compile(a.validate(next))).toEqual(fromOther);
  });
});

describe('a Validator', () => {
  it('checks an object again when it moves to another kind\'s list (what it was checked as no longer holds)', () => {
    const validator = new Validator();
    const s = base();
    validator.validate(s);
    const moved = { ...s, services: s.services.slice(1), httpRoutes: [...s.httpRoutes, s.services[0]! as never] };
    const problem = 'HTTPRoute default/reviews: kind: must be HTTPRoute, got "Service"';
    expect(() => validate(moved)).toThrow(problem);
    expect(() => validator.validate(moved)).toThrow(problem);
  });
});

describe('names and field checks shared with the agent', () => {
  it('objectName, namespaceOf and the DNS and port checks, with their messages', () => {
    expect(split.objectName('Workload', { name: 'web' })).toBe('Workload default/web');
    expect(split.objectName('Service', undefined)).toBe('Service (no metadata)');
    expect(split.namespaceOf({ namespace: 'shop' })).toBe('shop');
    expect([split.isDnsLabel('web-1'), split.isDnsLabel('Web'), split.isDnsLabel('a.b'), split.isDnsLabel(7)]).toEqual([true, false, false, false]);
    expect([split.isDnsSubdomain('node-1.example'), split.isDnsSubdomain('-x'), split.isDnsSubdomain('a'.repeat(254))]).toEqual([true, false, false]);
    expect([split.isPort(1), split.isPort(65535), split.isPort(0), split.isPort(65536), split.isPort(80.5), split.isPort('80')]).toEqual([true, true, false, false, false, false]);
    expect(split.portExpected(70000)).toBe('must be an integer in [1, 65535], got 70000');
    expect([split.isIP('127.0.0.1'), split.isIP('fd00::1'), split.isIP('10.0.0.300')]).toEqual([true, true, false]);
    expect(split.ipExpected('x')).toBe('must be an IPv4 or IPv6 address, got "x"');
  });
});
