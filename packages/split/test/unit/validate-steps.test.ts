// The Validator runs in steps (the agent serves /healthz between them): no step may touch a whole config at
// once. Counted in work, not milliseconds: the Map and Set inserts made between two yields.
import { afterEach, describe, expect, it } from 'vitest';

import { type Service, type Snapshot, Validator } from '../../src/index.js';

function service(i: number): Service {
  return {
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: 'default' },
    spec: { clusterIP: `127.20.${i >> 8}.${i & 255}`, ports: [{ port: 8080 }] },
  };
}

const snapshot = (services: Service[]): Snapshot => ({ services, endpointSlices: [], httpRoutes: [] });

const mapSet = Map.prototype.set;
const setAdd = Set.prototype.add;
afterEach(() => {
  Map.prototype.set = mapSet;
  Set.prototype.add = setAdd;
});

/** Runs the steps, returning the most Map.set and Set.add calls any one step made. */
function mostInsertsPerStep(steps: Generator<void, unknown, void>): number {
  let n = 0;
  Map.prototype.set = function (this: Map<unknown, unknown>, k: unknown, v: unknown) {
    n++;
    return mapSet.call(this, k, v);
  } as typeof mapSet;
  Set.prototype.add = function (this: Set<unknown>, v: unknown) {
    n++;
    return setAdd.call(this, v);
  } as typeof setAdd;
  let most = 0;
  try {
    for (;;) {
      n = 0;
      const r = steps.next();
      most = Math.max(most, n);
      if (r.done) return most;
    }
  } finally {
    Map.prototype.set = mapSet;
    Set.prototype.add = setAdd;
  }
}

describe('Validator steps', () => {
  it('a config of 6,000 Services after one of a single Service: at most a few hundred inserts between yields', () => {
    const v = new Validator();
    const one = [service(0)];
    v.validate(snapshot(one));
    // The same first object kept, 5,999 added after it: the diff's stretch is the whole rest of the list.
    const big = [one[0]!, ...Array.from({ length: 5999 }, (_, i) => service(i + 1))];
    const most = mostInsertsPerStep(v.steps(snapshot(big)));
    expect(most).toBeGreaterThan(0);
    expect(most, 'Map/Set inserts in the longest step').toBeLessThanOrEqual(2048);
  });
});
