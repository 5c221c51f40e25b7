// tc_filter attached to a veth between two network namespaces, in both modes (TCX bpf_links and clsact
// netlink filters) and both directions, with real UDP and TCP traffic between processes in the namespaces.
import {
  createNetns, describePrivileged, uniqueName, vethPair, type Netns, type VethPair,
} from '@mesh/testkit';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

import {
  BPFFS, codec as c, ifIndex, Link, liveHandles, NotSupportedError, type BpfObject, type TcAttachOptions,
} from '../../src/index.js';
import { AF_INET, AF_INET6, dropEvent, IPPROTO_TCP, IPPROTO_UDP, l4Counters, l4Key, lpmV4Key, lpmV6Key, sumCounters, testprog, testprogs, Verdict } from '../programs.js';
import { startPeer, type Peer } from './peer.js';
import { pattern } from './support.js';

const names = testprogs.tc_filter;
// Ethernet + IP + UDP headers, as tc sees a frame on a veth.
const UDP_FRAME = { 4: 14 + 20 + 8, 6: 14 + 40 + 8 } as const;
const ADDR = {
  a: { 4: '198.18.7.1', 6: 'fd00:7::1' },
  b: { 4: '198.18.7.2', 6: 'fd00:7::2' },
} as const;

let nsA: Netns;
let nsB: Netns;
let veth: VethPair;
let client: Peer;
let server: Peer;
const udpPort = { 4: 0, 6: 0 };
let tcpPort6 = 0;
const pinDirs: string[] = [];
const handlesAtStart = liveHandles();

beforeAll(async () => {
  nsA = await createNetns('bpftca');
  nsB = await createNetns('bpftcb');
  veth = await vethPair(nsA, nsB, { addrA: [ADDR.a[4], ADDR.a[6]], addrB: [ADDR.b[4], ADDR.b[6]], prefix: 'bpftc' });
  client = await startPeer(nsA);
  server = await startPeer(nsB);
  udpPort[4] = (await server.udpListen({ family: 4, host: ADDR.b[4] })).port;
  udpPort[6] = (await server.udpListen({ family: 6, host: ADDR.b[6] })).port;
  tcpPort6 = (await server.listen({ host: ADDR.b[6], mode: 'echo' })).port;
});

afterAll(async () => {
  for (const dir of pinDirs) rmSync(dir, { recursive: true, force: true });
  // Deleting a namespace deletes its veth end, and with it every tc attachment on the pair.
  await nsA?.close();
  await nsB?.close();
  await veth?.close();
  expect(liveHandles()).toBe(handlesAtStart);
});

/** Where each direction is attached: ingress on B's end (what arrives from A), egress on A's end (what leaves A). */
function hookOf(direction: 'ingress' | 'egress') {
  return direction === 'ingress'
    ? { ifname: veth.nameB, ns: nsB, netns: nsB.path }
    : { ifname: veth.nameA, ns: nsA, netns: nsA.path };
}

function attach(obj: BpfObject, direction: 'ingress' | 'egress', mode: 'tcx' | 'clsact'): Link {
  const { ifname, netns } = hookOf(direction);
  const opts: TcAttachOptions = { direction, netns, mode };
  return obj.program(names.programs.tc_filter).attachTc(ifname, opts);
}

function mapsOf(obj: BpfObject) {
  const verdicts = obj.map(names.maps.verdicts, { key: c.u32, value: c.u64n });
  return {
    portStats: obj.perCpuMap(names.maps.port_stats, { key: l4Key, value: l4Counters }),
    verdict: (v: number) => verdicts.get(v),
  };
}

/** A → B over UDP; the results of each datagram (answer or time-out). */
function exchange(family: 4 | 6, payloads: string[], timeoutMs = 2000) {
  return client.udpExchange({ family, host: ADDR.b[family], port: udpPort[family], payloads, timeoutMs, bind: ADDR.a[family] });
}

const answered = (payloads: string[], family: 4 | 6) =>
  payloads.map((data) => ({ data, fromAddress: ADDR.b[family], fromPort: udpPort[family] }));

async function tcShow(ns: Netns, ifname: string, direction: 'ingress' | 'egress'): Promise<string> {
  return (await ns.execChecked('tc', ['filter', 'show', 'dev', ifname, direction])).stdout;
}

describePrivileged('tc_filter on a veth between two namespaces', () => {
  const cases = (['tcx', 'clsact'] as const).flatMap((mode) => (['ingress', 'egress'] as const).map((direction) => ({ mode, direction })));

  it.each(cases)('$mode $direction: UDP and TCP between the namespaces are counted per port; close detaches', async ({ mode, direction }) => {
    using obj = testprog(names.name).load();
    const m = mapsOf(obj);
    const link = attach(obj, direction, mode);
    const { ifname, ns } = hookOf(direction);

    const info = link.info();
    const progId = obj.program(names.programs.tc_filter).info().id;
    expect(info.programId).toBe(progId);
    expect(info.ifindex).toBe(ifIndex(ifname, ns.path));
    if (mode === 'tcx') {
      expect(link.kind).toBe('link');
      expect(info).toMatchObject({ linkType: 'tcx', attachType: direction === 'ingress' ? 'tcx_ingress' : 'tcx_egress' });
    } else {
      expect(link.kind).toBe('tc');
      expect(info).toMatchObject({ direction });
      expect(info.handle).toBeGreaterThan(0);
      expect(info.priority).toBeGreaterThan(0);
      expect(await tcShow(ns, ifname, direction)).toMatch(new RegExp(`bpf .*${names.programs.tc_filter}.* id ${progId} `));
    }

    const payloads = ['a'.repeat(10), 'b'.repeat(500), 'c'.repeat(1400)];
    for (const family of [4, 6] as const) {
      expect((await exchange(family, payloads)).results).toEqual(answered(payloads, family));
      const key = { family: family === 4 ? AF_INET : AF_INET6, proto: IPPROTO_UDP, port: udpPort[family] };
      expect(sumCounters(m.portStats.get(key))).toEqual({
        packets: payloads.length,
        bytes: payloads.reduce((n, p) => n + p.length + UDP_FRAME[family], 0),
      });
    }

    await client.connect({ host: ADDR.b[6], port: tcpPort6 });
    await client.write({ sizes: [3000] });
    expect(await client.finish()).toEqual([pattern(0, 3000).toString()]);
    const tcp = sumCounters(m.portStats.get({ family: AF_INET6, proto: IPPROTO_TCP, port: tcpPort6 }));
    // SYN, the data, the FIN and acknowledgements all go A → B.
    expect(tcp.packets).toBeGreaterThanOrEqual(4);
    expect(tcp.bytes).toBeGreaterThan(3000);
    expect(m.verdict(Verdict.PASS)).toBeGreaterThanOrEqual(2 * payloads.length + tcp.packets);
    expect(m.verdict(Verdict.DROP_DENY)).toBe(0);

    link.close();
    const key4 = { family: AF_INET, proto: IPPROTO_UDP, port: udpPort[4] };
    const before = sumCounters(m.portStats.get(key4));
    expect((await exchange(4, ['after'])).results).toEqual(answered(['after'], 4));
    expect(sumCounters(m.portStats.get(key4))).toEqual(before);
    if (mode === 'clsact') expect(await tcShow(ns, ifname, direction)).not.toContain(names.programs.tc_filter);
  });

  it.each([4, 6] as const)('IPv%i: a deny rule for A drops its packets, counts them and reports each through the ring buffer', async (family) => {
    using obj = testprog(names.name).load();
    const m = mapsOf(obj);
    const events: ReturnType<typeof dropEvent.decode>[] = [];
    const ring = obj.ringBuffer(names.maps.drop_events, (batch) => events.push(...batch), { codec: dropEvent });
    attach(obj, 'ingress', 'tcx');
    const ruleId = 700 + family;
    if (family === 4) obj.map(names.maps.deny_v4, { key: lpmV4Key, value: c.u32 }).set({ prefixlen: 32, addr: ADDR.a[4] }, ruleId);
    else obj.map(names.maps.deny_v6, { key: lpmV6Key, value: c.u32 }).set({ prefixlen: 128, addr: ADDR.a[6] }, ruleId);

    const payloads = ['dropped-1', 'dropped-22'];
    const { localPort, results } = await exchange(family, payloads, 300);
    expect(results).toEqual([{ timedOut: true }, { timedOut: true }]);
    expect(m.verdict(Verdict.DROP_DENY)).toBe(payloads.length);
    expect(sumCounters(m.portStats.get({ family: family === 4 ? AF_INET : AF_INET6, proto: IPPROTO_UDP, port: udpPort[family] }))).toEqual({
      packets: 0,
      bytes: 0,
    });

    ring.consume();
    const ours = events.filter((e) => e.dport === udpPort[family]);
    expect(ours).toHaveLength(payloads.length);
    const addrLen = family === 4 ? 4 : 16;
    ours.forEach((e, i) => {
      expect(e).toMatchObject({
        family: family === 4 ? AF_INET : AF_INET6,
        proto: IPPROTO_UDP,
        sport: localPort,
        reason: Verdict.DROP_DENY,
        ruleId,
        pktLen: payloads[i]!.length + UDP_FRAME[family],
      });
      expect(c.bytesToIp(e.saddr.subarray(0, addrLen))).toBe(ADDR.a[family]);
      expect(c.bytesToIp(e.daddr.subarray(0, addrLen))).toBe(ADDR.b[family]);
    });
  });

  it.each(['tcx', 'clsact'] as const)('%s: update() swaps in a program of a second load, in place', async (mode) => {
    using first = testprog(names.name).load();
    // The second program drops the UDP port the first one lets through.
    using second = testprog(names.name).setConstant(names.constants.cfg_blocked_port, udpPort[4]).load();
    const link = attach(first, 'ingress', mode);
    const m1 = mapsOf(first);
    const m2 = mapsOf(second);
    const secondProg = second.program(names.programs.tc_filter);

    expect((await exchange(4, ['one'])).results).toEqual(answered(['one'], 4));
    link.update(secondProg);
    expect(link.info().programId).toBe(secondProg.info().id);
    expect((await exchange(4, ['two'], 300)).results).toEqual([{ timedOut: true }]);

    expect(m1.verdict(Verdict.DROP_PORT)).toBe(0);
    expect(m2.verdict(Verdict.DROP_PORT)).toBe(1);
    if (mode === 'clsact') {
      // The same filter (handle and priority) now runs the other program.
      const { handle, priority } = link.info();
      const filters = (await tcShow(nsB, veth.nameB, 'ingress')).split('\n').filter((l) => / handle 0x/.test(l));
      expect(filters).toHaveLength(1);
      expect(filters[0]).toContain(`pref ${priority} bpf chain 0 handle 0x${handle!.toString(16)} `);
      expect(filters[0]).toContain(` id ${secondProg.info().id} `);
    }
  });

  it('tcx: a pinned link outlives its handle and the object; openPinned() adopts it, detach() removes it', async () => {
    const dir = join(BPFFS, uniqueName('bpftc', 64));
    mkdirSync(dir);
    pinDirs.push(dir);
    const pin = join(dir, 'tc_ingress');
    try {
      let progId: number;
      let linkId: number | undefined;
      {
        using obj = testprog(names.name).setConstant(names.constants.cfg_blocked_port, udpPort[4]).load();
        const link = attach(obj, 'ingress', 'tcx');
        link.pin(pin);
        progId = obj.program(names.programs.tc_filter).info().id;
        linkId = link.info().id;
      }
      // The object and its link handle are closed: the attachment is still there, still dropping the port.
      expect((await exchange(4, ['still'], 300)).results).toEqual([{ timedOut: true }]);

      const adopted = Link.openPinned(pin);
      expect(adopted.info()).toMatchObject({
        linkType: 'tcx', id: linkId, programId: progId, ifindex: ifIndex(veth.nameB, nsB.path), attachType: 'tcx_ingress',
      });
      adopted.detach();
      expect(adopted.isClosed).toBe(true);
      expect((await exchange(4, ['gone'])).results).toEqual(answered(['gone'], 4));
    } finally {
      // The pin is the last holder of a link no handle refers to: removing it detaches whatever is left.
      rmSync(pin, { force: true });
    }
  });

  it('clsact: pin() is not supported; disconnect() leaves the filter attached after close', async () => {
    const { ifname, ns } = hookOf('ingress');
    try {
      let progId: number;
      {
        using obj = testprog(names.name).setConstant(names.constants.cfg_blocked_port, udpPort[4]).load();
        const link = attach(obj, 'ingress', 'clsact');
        progId = obj.program(names.programs.tc_filter).info().id;
        expect(() => link.pin(join(BPFFS, uniqueName('bpftc', 64)))).toThrow(NotSupportedError);
        link.disconnect();
      }
      expect(await tcShow(ns, ifname, 'ingress')).toContain(`id ${progId} `);
      expect((await exchange(4, ['kept'], 300)).results).toEqual([{ timedOut: true }]);
    } finally {
      // A disconnected filter is ours to remove: the clsact qdisc goes with every filter on it.
      await ns.exec('tc', ['qdisc', 'del', 'dev', ifname, 'clsact']);
    }
    expect(await tcShow(ns, ifname, 'ingress')).toBe('');
    expect((await exchange(4, ['free'])).results).toEqual(answered(['free'], 4));
  });
});
