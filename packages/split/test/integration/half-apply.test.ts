// A batch of service entries the kernel refuses part-way (E2BIG: the map holds entries the table did not count)
// leaves no mix of two configs: the apply is undone, every service keeps its previous backends while clients dial
// and afterwards, no new service is half-installed, and once the map has room the same apply goes through.
import { createCgroup, describePrivileged, spawnTracked, stopProcess, waitForLine, type Cgroup } from '@mesh/testkit';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setImmediate as tick } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { compile, SplitDatapath, validate } from '../../src/index.js';
import { addr16, fromAddr16 } from '../../src/maps.js';
import { service, slice, snapshot } from '../support.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const HOSTS = { a: '127.0.0.22', b: '127.0.0.23' };
const VIP = { a: '127.0.0.160', b: '127.0.0.161', new: ['127.0.0.162', '127.0.0.163', '127.0.0.164'] };
const MAX_SERVICES = 16;
const ROUNDS = 20;

describePrivileged('a service batch the kernel refuses part-way', () => {
  let cg: Cgroup;
  let dp: SplitDatapath;
  let servers: ChildProcess;
  let ports: Record<'a' | 'b', number>;
  const dialers: ChildProcess[] = [];

  beforeAll(async () => {
    cg = await createCgroup('splithalf');
    dp = SplitDatapath.load({ maxServices: MAX_SERVICES, maxEndpoints: 64 });
    dp.attach(cg.path);
    servers = spawnTracked(process.execPath, [fixture('servers.mjs'), ...Object.entries(HOSTS).map(([n, h]) => `${n}=${h}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    ports = JSON.parse((await waitForLine(servers, /^\{.*\}$/, 30_000))[0]);
  });
  afterAll(async () => {
    for (const d of dialers) await stopProcess(d);
    dp?.close();
    await cg?.close();
    if (servers) await stopProcess(servers);
  });

  // Before: svc-a → a, svc-z → b. After: the two swap backends and three new services appear. Compiled in name
  // order, so one batch holds svc-a's switch, the new services' inserts, then svc-z's switch.
  const before = () =>
    snapshot({
      services: [service('svc-a', VIP.a, 80), service('svc-z', VIP.b, 80)],
      endpointSlices: [slice('svc-a', [HOSTS.a], ports.a), slice('svc-z', [HOSTS.b], ports.b)],
    });
  const after = () =>
    snapshot({
      services: [service('svc-a', VIP.a, 80), ...VIP.new.map((v, i) => service(`svc-n${i}`, v, 80)), service('svc-z', VIP.b, 80)],
      endpointSlices: [slice('svc-a', [HOSTS.b], ports.b), ...VIP.new.map((_, i) => slice(`svc-n${i}`, [HOSTS.a], ports.a)), slice('svc-z', [HOSTS.a], ports.a)],
    });

  /** Entries the table never wrote, leaving room for one new service: the next inserts fail with E2BIG. */
  function fillServices(): void {
    const [, value] = dp.servicesMap.getBatch()[0]!;
    const room = MAX_SERVICES - dp.servicesMap.count() - 1;
    // Ids of their own and no backends: nothing of theirs is a slot of the bench's services.
    const entry = (i: number) => ({ ...value, id: 50_000 + i, nbackends: 0, totalWeight: 0, nendpoints: value.nendpoints.map(() => 0) });
    dp.servicesMap.setBatch(Array.from({ length: room }, (_, i) => [{ addr: addr16(`127.0.1.${i + 1}`), port: 9, proto: 6, family: 2 }, entry(i)] as const));
  }

  async function dial(vip: string, n: number): Promise<Record<string, number>> {
    const r = await cg.run(process.execPath, [fixture('dial.mjs'), vip, '80', String(n), '8'], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { byName: Record<string, number>; errors: Record<string, number> };
    expect(out.errors, vip).toEqual({});
    return out.byName;
  }

  const vips = () => dp.servicesMap.getBatch().map(([k]) => fromAddr16(k.addr, 2)).filter((a) => a.startsWith('127.0.0.'));

  it(`${ROUNDS} refused applies while clients dial: every connection reaches the previous backends, and the apply goes through once there is room`, async () => {
    const order = compile(validate(after())).services.map((s) => s.service);
    expect(order[0]).toMatch(/svc-a/);
    expect(order.at(-1)).toMatch(/svc-z/);
    dp.apply(before());
    const dialing = (['a', 'b'] as const).map((s) => {
      const d = cg.spawn(process.execPath, [fixture('dial-until.mjs'), VIP[s], '80', '2', '1000000'], { stdio: ['pipe', 'pipe', 'pipe'] });
      dialers.push(d);
      return d;
    });
    for (const d of dialing) await waitForLine(d, /^\{"started":true\}$/, 30_000);

    for (let round = 0; round < ROUNDS; round++) {
      fillServices();
      expect(() => dp.apply(after())).toThrow(/E2BIG/);
      // Nothing of the refused apply routes: the old entries as they were, no new service address.
      expect(await dial(VIP.a, 50)).toEqual({ a: 50 });
      expect(await dial(VIP.b, 50)).toEqual({ b: 50 });
      expect(vips().sort()).toEqual([VIP.a, VIP.b]);
      // The table re-read the maps: it removes what it did not write with the next apply.
      expect(dp.apply(before()).stats.serviceDeletes).toBe(MAX_SERVICES - 3);
      await tick();
    }
    const seen: Record<string, Record<string, number>> = {};
    for (const [i, d] of dialing.entries()) {
      d.stdin!.end();
      const out = JSON.parse((await waitForLine(d, /^\{"done":.*$/, 60_000))[0]) as { done: number; byName: Record<string, number>; errors: Record<string, number> };
      expect(out.errors).toEqual({});
      seen[i ? 'b' : 'a'] = out.byName;
    }
    // During: svc-a only ever reached a, svc-z only b.
    expect(Object.keys(seen.a!)).toEqual(['a']);
    expect(Object.keys(seen.b!)).toEqual(['b']);

    // With room, the same config goes through whole.
    dp.apply(after());
    expect(vips().sort()).toEqual([VIP.a, VIP.b, ...VIP.new].sort());
    expect(await dial(VIP.a, 50)).toEqual({ b: 50 });
    expect(await dial(VIP.b, 50)).toEqual({ a: 50 });
    expect(await dial(VIP.new[2]!, 20)).toEqual({ a: 20 });
  }, 300_000);
});
