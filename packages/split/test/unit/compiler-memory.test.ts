// What a Compiler keeps between snapshots per Service: its compiled addresses and which inputs it was compiled
// from (for 10,000 Services, each compiled from itself and its slices alone, a Set of one Service per input key was
// ~1.9 MiB of the agent's heap).

import { heapUsedAfterGc } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { Compiler, Validator } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const heap = heapUsedAfterGc;

it('a Compiler holds at most 1,240 bytes per Service of one endpoint, and recompiles what an edit touches', () => {
  const n = 40_000;
  const ip = (i: number) => `127.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  const services = Array.from({ length: n }, (_, i) => service(`s-${i}`, ip(i), 80));
  const slices = Array.from({ length: n }, (_, i) => slice(`s-${i}`, [`10.${60 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`], 8080));
  const v = new Validator();
  const validated = v.validate(snapshot({ services, endpointSlices: slices }));
  const compiler = new Compiler();
  compiler.compile(validated); // code made on first use is not what is measured
  const v2 = new Validator();
  const again = v2.validate(snapshot({ services, endpointSlices: slices }));
  const fresh = new Compiler();
  const before = heap();
  const out = fresh.compile(again);
  const perService = (heap() - before) / n;
  expect(out.services).toHaveLength(n);
  // Measured on Node 20: 1,316 bytes with a Set per input key; 1,165 now.
  expect(Math.round(perService)).toBeLessThanOrEqual(1240);

  // A slice edited: its Service alone is compiled again, the others are the very objects of before.
  const edited = slice('s-5', ['10.61.0.1'], 8080);
  const next = fresh.compile(v2.validate(snapshot({ services, endpointSlices: slices.map((s, i) => (i === 5 ? edited : s)) })));
  expect(next.services[5]!.backends[0]!.endpoints).toEqual([{ addr: '10.61.0.1', port: 8080 }]);
  expect(next.services[4]).toBe(out.services[4]);
  expect(next.services[5]).not.toBe(out.services[5]);
}, 60_000);
