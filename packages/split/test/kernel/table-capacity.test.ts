// A snapshot that does not fit the maps is refused before the first write: the maps keep the previous one.
import { describePrivileged } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { SplitDatapath } from '../../src/index.js';
import { service, slice, snapshot } from '../support.js';

const svc = (i: number, eps: number) => ({
  svc: service(`s${i}`, `127.0.60.${i}`, 80),
  slice: slice(`s${i}`, Array.from({ length: eps }, (_, j) => `127.0.61.${i * 10 + j}`), 8080),
});

describePrivileged('split table capacity', () => {
  let dp: SplitDatapath;
  beforeAll(() => {
    dp = SplitDatapath.load({ maxServices: 4, maxEndpoints: 10 });
  });
  afterAll(() => dp?.close());

  const dump = () => ({
    services: [...dp.servicesMap.getBatch()].map(([k, v]) => `${k.port}:${v.id}.${v.version}`).sort(),
    endpoints: [...dp.endpointsMap.getBatch()].map(([k]) => `${k.svcId}.${k.version}.${k.index}`).sort(),
  });

  it('too many services or endpoint slots: RangeError, and the maps are as before', () => {
    const base = [svc(1, 2), svc(2, 2), svc(3, 2)];
    dp.apply(snapshot({ services: base.map((s) => s.svc), endpointSlices: base.map((s) => s.slice) }));
    const before = dump();
    expect(before.services).toHaveLength(3);
    expect(before.endpoints).toHaveLength(6);

    // 5 services into a 4-entry table.
    const five = [...base, svc(4, 1), svc(5, 1)];
    expect(() => dp.apply(snapshot({ services: five.map((s) => s.svc), endpointSlices: five.map((s) => s.slice) }))).toThrow(
      /5 service addresses \(5 while the old ones are replaced\) do not fit the service table \(4 entries\): raise maxServices/,
    );
    expect(dump()).toEqual(before);

    // Changing every endpoint needs 6 new slots beside the 6 installed: 12 > 10.
    const moved = [1, 2, 3].map((i) => ({ svc: service(`s${i}`, `127.0.60.${i}`, 80), slice: slice(`s${i}`, [`127.0.62.${i}`, `127.0.63.${i}`], 8080) }));
    expect(() => dp.apply(snapshot({ services: moved.map((s) => s.svc), endpointSlices: moved.map((s) => s.slice) }))).toThrow(
      /6 new endpoint slots do not fit beside the 6 installed \(endpoint table: 10 entries\): raise maxEndpoints/,
    );
    expect(dump()).toEqual(before);

    // What fits still applies.
    const two = moved.slice(0, 2);
    expect(dp.apply(snapshot({ services: two.map((s) => s.svc), endpointSlices: two.map((s) => s.slice) })).services).toBe(2);
  });
});
