// Outbound capture: a TCP connect() from an enrolled cgroup to a mesh workload lands on the data plane's
// outbound listener (here a stand-in in the test process, outside the mesh's cgroups, as the data plane runs),
// the original destination is found by the accepted socket's peer address, and getpeername() shows what the
// application dialled. Everything else passes untouched.
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BPFFS } from '@mesh/bpf';
import { SplitDatapath, type Snapshot } from '@mesh/split';
import { createCgroup, describePrivileged, uniqueName, type Cgroup } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath, type OriginalDestination } from '../../src/datapath/index.js';
import { dial, namedServer, type NamedServer } from './capture-support.js';

// Loopback addresses only (DEVELOPERS.md, Tests): a connect the hooks miss stays on this machine.
const DATAPLANE = '127.0.0.50';
const WORKLOAD = '127.0.0.51';
const OTHER = '127.0.0.52';
const VIP = '127.0.0.120';

describePrivileged('outbound capture to the data plane', () => {
  let root: Cgroup, enrolled: Cgroup, outside: Cgroup;
  let pinDir: string;
  let split: SplitDatapath;
  let mtls: MtlsDatapath;
  let dataplane: NamedServer, workload: NamedServer, other: NamedServer;
  // What the stand-in data plane found for each connection it accepted, by the peer it saw.
  const found = new Map<string, OriginalDestination | undefined>();

  beforeAll(async () => {
    root = await createCgroup('mtlscap');
    enrolled = await createCgroup('enr', { parent: root.path });
    outside = await createCgroup('out', { parent: root.path });
    pinDir = join(BPFFS, uniqueName('mtlscap', 40));
    const slots = 1024; // a power of two: the split's table is exactly this size
    split = SplitDatapath.load({ pinDir, maxConnections: slots });
    mtls = MtlsDatapath.load({ splitOrig: { path: join(pinDir, 'split_orig'), slots } });
    // The split first: programs of one hook at one cgroup run in attach order, and capture must see the
    // endpoint the split chose.
    split.attach(root.path);
    mtls.attach(root.path);
    dataplane = await namedServer('dataplane', DATAPLANE, (s) => {
      const peer = `${s.remoteAddress}:${s.remotePort}`;
      found.set(peer, mtls.originalDestination(peer));
    });
    workload = await namedServer('workload', WORKLOAD);
    other = await namedServer('other', OTHER);
    const snap: Snapshot = {
      services: [{ kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: VIP, ports: [{ port: 8080, protocol: 'TCP' }] } }],
      endpointSlices: [
        {
          kind: 'EndpointSlice',
          metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
          addressType: 'IPv4',
          endpoints: [{ addresses: [WORKLOAD], conditions: { ready: true } }],
          ports: [{ port: workload.port, protocol: 'TCP' }],
        },
      ],
      httpRoutes: [],
    };
    split.apply(snap);
    mtls.apply({
      dataplane: { outbound: { ipv4: DATAPLANE, port: dataplane.port }, inboundSource: { ipv4: DATAPLANE } },
      enrolled: [{ cgroup: enrolled.path }],
      destinations: [WORKLOAD],
    });
  });
  afterAll(async () => {
    mtls?.close();
    split?.close();
    await dataplane?.close();
    await workload?.close();
    await other?.close();
    await outside?.close();
    await enrolled?.close();
    await root?.close();
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  it('a direct connect to a mesh workload lands on the data plane, found by its local address, shown as dialled', async () => {
    const before = mtls.counters();
    const r = await dial(enrolled, WORKLOAD, workload.port, 5);
    for (const c of r) {
      expect(c).toMatchObject({ line: 'dataplane', peer: `${WORKLOAD}:${workload.port}`, error: null });
      expect(found.get(c.local!)).toEqual({ dst: `${WORKLOAD}:${workload.port}`, dialled: `${WORKLOAD}:${workload.port}` });
      expect(mtls.originalDestination(c.local!)?.dst).toBe(`${WORKLOAD}:${workload.port}`);
    }
    expect(workload.accepted).toBe(0);
    const after = mtls.counters();
    expect(after.capture - before.capture).toBe(5n);
    expect(after.orig_note - before.orig_note).toBe(5n);
    expect(after.getpeername_rewrite - before.getpeername_rewrite).toBeGreaterThanOrEqual(5n);
  });

  it('through a service address: the split picks the workload, capture sends it to the data plane, getpeername shows the VIP', async () => {
    const r = await dial(enrolled, VIP, 8080, 5);
    for (const c of r) {
      expect(c).toMatchObject({ line: 'dataplane', peer: `${VIP}:8080`, error: null });
      expect(found.get(c.local!)).toEqual({ dst: `${WORKLOAD}:${workload.port}`, dialled: `${VIP}:8080` });
    }
    expect(workload.accepted).toBe(0);
  });

  it('an AF_INET6 socket dialling the IPv4-mapped address is captured and shown the mapped address', async () => {
    const r = await dial(enrolled, `::ffff:${WORKLOAD}`, workload.port, 3);
    for (const c of r) {
      expect(c).toMatchObject({ line: 'dataplane', peer: `::ffff:${WORKLOAD}:${workload.port}`, error: null });
      // The data plane (an IPv4 listener) sees the client's IPv4 address; the map holds it as IPv4.
      const local = c.local!.replace(/^::ffff:/, '');
      expect(found.get(local)).toEqual({ dst: `${WORKLOAD}:${workload.port}`, dialled: `${WORKLOAD}:${workload.port}` });
    }
  });

  it('a cgroup not enrolled, a process outside the mesh, and a destination that is no mesh workload pass untouched', async () => {
    const before = mtls.counters();
    const notEnrolled = await dial(outside, WORKLOAD, workload.port, 3);
    expect(notEnrolled.map((c) => [c.line, c.peer])).toEqual(Array(3).fill(['workload', `${WORKLOAD}:${workload.port}`]));
    const notMesh = await dial(enrolled, OTHER, other.port, 3);
    expect(notMesh.map((c) => [c.line, c.peer])).toEqual(Array(3).fill(['other', `${OTHER}:${other.port}`]));
    // A process outside the mesh's cgroups, as the data plane runs: this test process.
    const s = connect({ host: WORKLOAD, port: workload.port });
    const [line] = (await once(s.setEncoding('utf8'), 'data')) as [string];
    s.destroy();
    expect(line).toBe('workload\n');
    expect(workload.accepted).toBe(4);
    expect(mtls.counters().capture).toBe(before.capture);
  });

  it('withdrawn from the mesh (apply without the workload): connects go straight to it again', async () => {
    const stats = mtls.apply({
      dataplane: { outbound: { ipv4: DATAPLANE, port: dataplane.port }, inboundSource: { ipv4: DATAPLANE } },
      enrolled: [{ cgroup: enrolled.path }],
      destinations: [],
    });
    expect(stats).toEqual({ written: 0, deleted: 1 });
    const r = await dial(enrolled, WORKLOAD, workload.port, 2);
    expect(r.map((c) => c.line)).toEqual(['workload', 'workload']);
  });
});

describePrivileged('attach order', () => {
  it('capture attached before the split sees the service address, not the endpoint: nothing is captured', async () => {
    await using root = await createCgroup('mtlsord');
    await using cg = await createCgroup('enr', { parent: root.path });
    using mtls = MtlsDatapath.load();
    using split = SplitDatapath.load();
    mtls.attach(root.path);
    split.attach(root.path);
    const dataplane = await namedServer('dataplane', DATAPLANE);
    const workload = await namedServer('workload', WORKLOAD);
    try {
      split.apply({
        services: [{ kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: VIP, ports: [{ port: 8080, protocol: 'TCP' }] } }],
        endpointSlices: [
          {
            kind: 'EndpointSlice',
            metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
            addressType: 'IPv4',
            endpoints: [{ addresses: [WORKLOAD], conditions: { ready: true } }],
            ports: [{ port: workload.port, protocol: 'TCP' }],
          },
        ],
        httpRoutes: [],
      });
      mtls.apply({
        dataplane: { outbound: { ipv4: DATAPLANE, port: dataplane.port }, inboundSource: {} },
        enrolled: [{ cgroup: cg.path }],
        destinations: [WORKLOAD],
      });
      const r = await dial(cg, VIP, 8080, 2);
      expect(r.map((c) => c.line)).toEqual(['workload', 'workload']);
      expect(mtls.counters().capture).toBe(0n);
    } finally {
      await dataplane.close();
      await workload.close();
    }
  });
});

describePrivileged('outbound capture over IPv6', () => {
  it('an IPv6 mesh workload is captured to the IPv6 data plane address, found by the client [ip]:port', async () => {
    await using root = await createCgroup('mtlscapsix');
    await using cg = await createCgroup('enr', { parent: root.path });
    using mtls = MtlsDatapath.load();
    mtls.attach(root.path);
    const found = new Map<string, OriginalDestination | undefined>();
    const dataplane = await namedServer('dataplane', '::1', (s) => {
      const peer = `[${s.remoteAddress}]:${s.remotePort}`;
      found.set(peer, mtls.originalDestination(peer));
    });
    const workload = await namedServer('workload', '::1');
    try {
      mtls.apply({
        // IPv4 and IPv6 data plane addresses share one port; only the IPv6 one is used here.
        dataplane: { outbound: { ipv4: DATAPLANE, ipv6: '::1', port: dataplane.port }, inboundSource: {} },
        enrolled: [{ cgroup: cg.path }],
        // With a port: the data plane listens on ::1 too.
        destinations: [`[::1]:${workload.port}`],
      });
      const r = await dial(cg, '::1', workload.port, 3);
      for (const c of r) {
        expect(c).toMatchObject({ line: 'dataplane', peer: `::1:${workload.port}`, error: null });
        const local = `[${c.local!.slice(0, c.local!.lastIndexOf(':'))}]:${c.local!.slice(c.local!.lastIndexOf(':') + 1)}`;
        expect(found.get(local)).toEqual({ dst: `[::1]:${workload.port}`, dialled: `[::1]:${workload.port}` });
      }
      expect(workload.accepted).toBe(0);
    } finally {
      await dataplane.close();
      await workload.close();
    }
  });
});
