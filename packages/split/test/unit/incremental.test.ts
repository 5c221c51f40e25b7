// A Compiler fed a stream of snapshots (each a few random edits away from the last, changed objects replaced by
// new ones) compiles each exactly as compile() does from scratch: same services, same route status, same
// problems for an invalid one. The same for endpoints computed from workloads with a SliceCache.
import { describe, expect, it } from 'vitest';

import {
  compile,
  Compiler,
  endpointSlicesFor,
  endpointSliceSteps,
  runSteps,
  type Service,
  type SliceCache,
  type Snapshot,
  SnapshotError,
  validate,
  Validator,
  type WorkloadEndpoints,
} from '../../src/index.js';

/** mulberry32: a seeded generator, so a failure replays. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)]! };
}
type Rng = ReturnType<typeof rng>;

const NAMES = Array.from({ length: 12 }, (_, i) => `s${i}`);
const NAMESPACES = ['default', 'shop'];

function randomService(r: Rng, name: string, ns: string): Service {
  const dual = r.int(4) === 0;
  const v4 = `127.1.${r.int(2)}.${r.int(100)}`; // few addresses: collisions happen (an invalid snapshot)
  const ports = r.int(3) === 0
    ? [{ name: 'http', port: 80, targetPort: r.pick([8080, 'web'] as (number | string)[]) }, { name: 'dns', port: 53, protocol: 'UDP' as const }]
    : [{ port: r.pick([80, 81]), ...(r.int(2) ? { targetPort: 9000 + r.int(3) } : {}) }];
  return {
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: { clusterIP: v4, ...(dual ? { clusterIPs: [v4, `fd00::${r.int(1000).toString(16)}`] } : {}), ports, ...(r.int(3) === 0 ? { selector: { app: r.pick(['a', 'b', 'c']) } } : {}) },
  };
}

function randomSlice(r: Rng, svc: string, ns: string, n: number): Snapshot['endpointSlices'][number] {
  const v6 = r.int(5) === 0;
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-${n}`, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
    addressType: v6 ? 'IPv6' : 'IPv4',
    endpoints: Array.from({ length: 1 + r.int(4) }, () => ({
      addresses: [v6 ? `fd00::1:${r.int(20).toString(16)}` : `127.2.0.${r.int(30)}`],
      conditions: { ready: r.int(6) !== 0 },
    })),
    ...(r.int(4) === 0 ? {} : { ports: [{ name: r.pick(['', 'http']), port: 8000 + r.int(3), protocol: 'TCP' as const }] }),
  };
}

function randomRoute(r: Rng, name: string, ns: string): Snapshot['httpRoutes'][number] {
  const refs = Array.from({ length: r.int(4) }, () => ({
    name: r.pick(NAMES),
    port: r.pick([80, 81]),
    ...(r.int(5) ? { weight: r.int(100) } : {}),
    ...(r.int(12) === 0 ? { namespace: 'other' } : {}),
  }));
  return {
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns, creationTimestamp: `2026-01-0${1 + r.int(3)}T00:00:00Z` },
    spec: {
      parentRefs: [{ kind: 'Service', group: '', name: r.pick(NAMES), ...(r.int(3) ? { port: r.pick([80, 81]) } : {}) }],
      rules: r.int(6) === 0 ? [] : [{ backendRefs: refs }],
    },
  };
}

function initial(r: Rng): Snapshot {
  const s: Snapshot = { services: [], endpointSlices: [], httpRoutes: [] };
  for (const ns of NAMESPACES) {
    for (const name of NAMES) {
      if (r.int(5) === 0) continue;
      s.services.push(randomService(r, name, ns));
      for (let i = 0; i < r.int(3); i++) s.endpointSlices.push(randomSlice(r, name, ns, i));
    }
    for (let i = 0; i < 5; i++) s.httpRoutes.push(randomRoute(r, `r${i}`, ns));
  }
  return s;
}

/** One edit, the way a config source makes it: a changed object is a new object; the lists are new arrays. */
function edit(r: Rng, s: Snapshot): Snapshot {
  const next: Snapshot = { services: [...s.services], endpointSlices: [...s.endpointSlices], httpRoutes: [...s.httpRoutes] };
  const replace = <T>(list: T[], change: (o: T) => void) => {
    if (!list.length) return;
    const i = r.int(list.length);
    const copy = structuredClone(list[i]!);
    change(copy);
    list[i] = copy;
  };
  const remove = <T>(list: T[]) => list.length && list.splice(r.int(list.length), 1);
  const ns = r.pick(NAMESPACES);
  switch (r.int(12)) {
    case 0: replace(next.httpRoutes, (rt) => { const refs = rt.spec.rules?.[0]?.backendRefs; if (refs?.length) refs[r.int(refs.length)]!.weight = r.int(100); }); break;
    case 1: replace(next.endpointSlices, (es) => es.endpoints.push({ addresses: [es.addressType === 'IPv6' ? `fd00::2:${r.int(9)}` : `127.3.0.${r.int(9)}`] })); break;
    case 2: replace(next.endpointSlices, (es) => { if (es.endpoints.length > 1) es.endpoints.splice(r.int(es.endpoints.length), 1); }); break;
    case 3: replace(next.endpointSlices, (es) => { const e = es.endpoints[0]!; e.conditions = { ready: e.conditions?.ready === false }; }); break;
    case 4: remove(next.endpointSlices); break;
    case 5: next.endpointSlices.push(randomSlice(r, r.pick(NAMES), ns, 10 + r.int(1000))); break;
    case 6: remove(next.services); break;
    case 7: {
      const name = r.pick(NAMES);
      const i = next.services.findIndex((x) => x.metadata.name === name && x.metadata.namespace === ns);
      if (i >= 0) next.services[i] = randomService(r, name, ns);
      else next.services.push(randomService(r, name, ns));
      break;
    }
    case 8: remove(next.httpRoutes); break;
    case 9: {
      const name = `r${r.int(8)}`;
      const i = next.httpRoutes.findIndex((x) => x.metadata.name === name && x.metadata.namespace === ns);
      if (i >= 0) next.httpRoutes[i] = randomRoute(r, name, ns);
      else next.httpRoutes.push(randomRoute(r, name, ns));
      break;
    }
    case 10: replace(next.httpRoutes, (rt) => (rt.metadata.creationTimestamp = `2026-01-0${1 + r.int(3)}T00:00:00Z`)); break;
    case 11: {
      // Order changes what compile returns (and which of two conflicting objects is reported).
      const list = r.pick([next.services, next.endpointSlices, next.httpRoutes] as unknown[][]);
      if (list.length > 1) list.push(list.splice(r.int(list.length), 1)[0]);
      break;
    }
  }
  return next;
}

function outcome(f: () => unknown): unknown {
  try {
    return f();
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotError);
    return { problems: (err as SnapshotError).problems };
  }
}

describe('Compiler (incremental compile)', () => {
  it.each([1, 2, 3, 4, 5])('equals a full compile after each of 300 random edits (seed %i)', (seed) => {
    const r = rng(seed);
    const compiler = new Compiler();
    const validator = new Validator();
    let s = initial(r);
    let invalid = 0;
    for (let round = 0; round < 300; round++) {
      const full = outcome(() => compile(validate(s)));
      if ((full as { problems?: string[] }).problems) invalid++;
      expect(outcome(() => compiler.compile(validator.validate(s))), `seed ${seed}, round ${round}`).toEqual(full);
      // Several edits at once now and then, as a reload of a changed file brings.
      for (let k = r.int(8) === 0 ? 1 + r.int(5) : 1; k > 0; k--) s = edit(r, s);
    }
    // Most snapshots of the stream are valid (some seeds visit invalid ones too: both must agree on those).
    expect(invalid).toBeLessThan(200);
  });

  it('hands back the very objects of a Service whose inputs did not change', () => {
    const r = rng(9);
    const compiler = new Compiler();
    const validator = new Validator();
    let s = initial(r);
    for (let i = 0; i < 200 && (outcome(() => compile(validate(s))) as { problems?: unknown }).problems; i++) s = edit(r, s);
    const before = compiler.compile(validator.validate(s)).services;
    const next = { ...s, httpRoutes: [...s.httpRoutes] };
    const after = compiler.compile(validator.validate(next)).services;
    expect(after).toEqual(before);
    after.forEach((c, i) => expect(c).toBe(before[i]));
  });
});

describe('endpointSliceSteps with a SliceCache', () => {
  const workload = (r: Rng, i: number): WorkloadEndpoints => ({
    metadata: { name: `w${i}`, namespace: r.pick(NAMESPACES), labels: { app: r.pick(['a', 'b', 'c']), ...(r.int(2) ? { tier: r.pick(['x', 'y']) } : {}) } },
    spec: { addresses: r.int(4) ? [`127.5.0.${i}`] : [`127.5.0.${i}`, `fd00::5:${i}`], ports: [{ name: 'web', port: 7000 + r.int(3) }], ...(r.int(5) ? {} : { ready: false }) },
  });

  it.each([11, 12, 13])('equals computing from scratch after each of 200 random workload and service edits (seed %i)', (seed) => {
    const r = rng(seed);
    const cache: SliceCache = { byService: new Map() };
    const compiler = new Compiler();
    const validator = new Validator();
    let workloads = Array.from({ length: 30 }, (_, i) => workload(r, i));
    let services: Service[] = NAMES.flatMap((name) => NAMESPACES.map((ns): Service => {
      const svc = randomService(r, name, ns);
      const selector: Record<string, string> = r.int(2) ? { app: r.pick(['a', 'b', 'c']) } : { app: r.pick(['a', 'b']), tier: r.pick(['x', 'y']) };
      return { ...svc, spec: { ...svc.spec, selector } };
    }));
    for (let round = 0; round < 200; round++) {
      const full = endpointSlicesFor(services, workloads);
      const cached = runSteps(endpointSliceSteps(services, workloads, cache));
      expect(cached, `seed ${seed}, round ${round}`).toEqual(full);
      const snap = { services, endpointSlices: cached, httpRoutes: [] };
      expect(outcome(() => compiler.compile(validator.validate(snap)))).toEqual(outcome(() => compile(validate({ services, endpointSlices: full, httpRoutes: [] }))));
      workloads = [...workloads];
      services = [...services];
      const i = r.int(workloads.length);
      switch (r.int(4)) {
        case 0: workloads[i] = workload(r, i); break;
        case 1: workloads[i] = { ...workloads[i]!, spec: { ...workloads[i]!.spec, ready: !(workloads[i]!.spec.ready ?? true) } }; break;
        case 2: workloads.push(workloads.splice(i, 1)[0]!); break;
        case 3: {
          const j = r.int(services.length);
          services[j] = { ...services[j]!, spec: { ...services[j]!.spec, selector: { app: r.pick(['a', 'b', 'c']) } } };
          break;
        }
      }
    }
  });
});
