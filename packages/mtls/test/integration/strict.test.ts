// STRICT in the kernel: a workload port in STRICT mode takes TCP only from the data plane's inbound source
// address; a plaintext client elsewhere gets nothing (its SYNs are dropped before the socket sees them), the
// application accepts 0 connections and reads 0 bytes, and the drop is counted. PERMISSIVE ports serve anyone.
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { capturedOutput, createCgroup, createNetns, describePrivileged, inNetns, type Cgroup, type Netns, vethPair, waitForLine } from '@mesh/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { MtlsDatapath } from '../../src/datapath/index.js';
import type { Dialled } from './capture-support.js';

const serverScript = fileURLToPath(new URL('../fixtures/server.mjs', import.meta.url));
const dial6Script = fileURLToPath(new URL('../fixtures/dial6.py', import.meta.url));
const dialScript = fileURLToPath(new URL('../fixtures/dial.mjs', import.meta.url));

// Inside the test's own namespaces: the workload, a plaintext client and the data plane's inbound source.
const WORKLOAD_IP = '10.231.0.1';
const CLIENT_IP = '10.231.0.2';
const DATAPLANE_IP = '10.231.0.3';
const WORKLOAD_IP6 = 'fd31::1';
const CLIENT_IP6 = 'fd31::2';
const DATAPLANE_IP6 = 'fd31::3';
const STRICT_PORT = 8081;
const PERMISSIVE_PORT = 8082;
const DEFAULT_PORT = 8083; // no port-level mode: the workload-wide one applies
const PEER_PORT = 8084; // a server outside the mesh, in the client's namespace, that the workload dials

describePrivileged('STRICT in the kernel', () => {
  let root: Cgroup, wl: Cgroup, peer: Cgroup;
  let nsW: Netns, nsC: Netns;
  let server: ChildProcess, peerServer: ChildProcess;
  let mtls: MtlsDatapath;

  beforeAll(async () => {
    root = await createCgroup('mtlsstr');
    wl = await createCgroup('wl', { parent: root.path });
    nsW = await createNetns('mtlsw');
    nsC = await createNetns('mtlsc');
    await vethPair(nsC, nsW, {
      addrA: [`${CLIENT_IP}/24`, `${DATAPLANE_IP}/24`, `${CLIENT_IP6}/64`, `${DATAPLANE_IP6}/64`],
      addrB: [`${WORKLOAD_IP}/24`, `${WORKLOAD_IP6}/64`],
    });
    mtls = MtlsDatapath.load();
    mtls.attach(root.path);
    // Into the cgroup first: `ip netns exec` mounts a fresh /sys, where the cgroup is not to be found.
    const [cmd, args] = inNetns(nsW, process.execPath, [serverScript, String(STRICT_PORT), String(PERMISSIVE_PORT), String(DEFAULT_PORT)]);
    server = wl.spawn(cmd, args);
    await waitForLine(server, /^ready$/, 30_000);
    // Outside the mesh's cgroups: a server the workload itself connects to.
    peer = await createCgroup('mtlspeer');
    const [pcmd, pargs] = inNetns(nsC, process.execPath, [serverScript, String(PEER_PORT)]);
    peerServer = peer.spawn(pcmd, pargs);
    await waitForLine(peerServer, /^ready$/, 30_000);
  });
  afterAll(async () => {
    await peer?.close();
    await wl?.close(); // stops the server
    await nsW?.close();
    await nsC?.close();
    mtls?.close();
    await root?.close();
  });

  function apply(mode: 'STRICT' | 'PERMISSIVE', ports: Record<number, 'STRICT' | 'PERMISSIVE'>) {
    mtls.apply({
      dataplane: { outbound: { ipv4: '127.0.0.50', port: 15001 }, inboundSource: { ipv4: DATAPLANE_IP, ipv6: DATAPLANE_IP6 } },
      enrolled: [{ cgroup: wl.path, mode, ports }],
      destinations: [WORKLOAD_IP],
    });
  }

  // A refused client waits `timeoutMs` for an answer that never comes; a served one gets it well within 10 s.
  async function dialFrom(local: string, port: number, timeoutMs = 10_000): Promise<Dialled> {
    const r = await nsC.exec(process.execPath, [dialScript, WORKLOAD_IP, String(port), '1', local, String(timeoutMs)], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as Dialled[])[0]!;
  }

  const seen = (what: 'accept' | 'data', port: number) =>
    capturedOutput(server).stdout.split('\n').filter((l) => l.startsWith(`${what} ${port}`)).length;

  // The server prints before it answers, but its output reaches this process through a pipe of its own: a count
  // that must rise is awaited (bounded), one that must not is read as it is.
  async function seenReaches(what: 'accept' | 'data', port: number, n: number): Promise<number> {
    for (let i = 0; i < 50 && seen(what, port) < n; i++) await new Promise((r) => setTimeout(r, 100));
    return seen(what, port);
  }

  it('a plaintext client gets nothing from a STRICT port: 0 accepted, 0 bytes read, drops counted', async () => {
    apply('PERMISSIVE', { [STRICT_PORT]: 'STRICT' });
    const before = mtls.counters();
    const r = await dialFrom(CLIENT_IP, STRICT_PORT, 1500);
    expect(r).toMatchObject({ line: null, error: 'timeout' });
    expect(seen('accept', STRICT_PORT)).toBe(0);
    expect(seen('data', STRICT_PORT)).toBe(0);
    const after = mtls.counters();
    // The SYN and its retransmissions within the client's 1.5 s.
    expect(after.strict_drop_plaintext - before.strict_drop_plaintext).toBeGreaterThanOrEqual(1n);
  });

  it('the data plane (its inbound source address) reaches the STRICT port', async () => {
    const before = mtls.counters();
    const r = await dialFrom(DATAPLANE_IP, STRICT_PORT);
    expect(r).toMatchObject({ line: 'served', error: null });
    expect(await seenReaches('accept', STRICT_PORT, 1)).toBe(1);
    // Checked while a listener's: the SYN and the handshake's final ACK; the request and the FIN reach the
    // accepted socket and pass unchecked.
    const after = mtls.counters();
    expect(after.strict_pass_dataplane - before.strict_pass_dataplane).toBe(2n);
    expect(after.strict_pass_connected - before.strict_pass_connected).toBeGreaterThanOrEqual(1n);
  });

  it('a PERMISSIVE port serves the plaintext client', async () => {
    const before = mtls.counters();
    const r = await dialFrom(CLIENT_IP, PERMISSIVE_PORT);
    expect(r).toMatchObject({ line: 'served', error: null });
    expect(await seenReaches('accept', PERMISSIVE_PORT, 1)).toBe(1);
    expect(await seenReaches('data', PERMISSIVE_PORT, 1)).toBe(1);
    expect(mtls.counters().strict_drop_plaintext).toBe(before.strict_drop_plaintext);
  });

  it('workload-wide STRICT covers ports without their own mode; a port-level PERMISSIVE overrides it', async () => {
    apply('STRICT', { [PERMISSIVE_PORT]: 'PERMISSIVE' });
    expect(await dialFrom(CLIENT_IP, DEFAULT_PORT, 1500)).toMatchObject({ line: null, error: 'timeout' });
    expect(seen('accept', DEFAULT_PORT)).toBe(0);
    expect(await dialFrom(CLIENT_IP, PERMISSIVE_PORT)).toMatchObject({ line: 'served', error: null });
    // Back to PERMISSIVE everywhere: the same client is served on the port it was refused.
    apply('PERMISSIVE', {});
    expect(await dialFrom(CLIENT_IP, DEFAULT_PORT)).toMatchObject({ line: 'served', error: null });
    expect(await seenReaches('accept', DEFAULT_PORT, 1)).toBe(1);
  });

  it('IPv6: plaintext refused, with or without a hop-by-hop header before TCP; the data plane source passes', async () => {
    apply('PERMISSIVE', { [STRICT_PORT]: 'STRICT' });
    const accepted = seen('accept', STRICT_PORT);
    const dial6 = async (local: string, hopopts: boolean, timeoutS: number) => {
      const r = await nsC.exec('python3', [dial6Script, WORKLOAD_IP6, String(STRICT_PORT), local, hopopts ? '1' : '0', String(timeoutS)], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const before = mtls.counters();
    expect(await dial6(CLIENT_IP6, false, 1.5)).toBe('timeout');
    expect(await dial6(CLIENT_IP6, true, 1.5)).toBe('timeout');
    expect(seen('accept', STRICT_PORT)).toBe(accepted);
    expect(mtls.counters().strict_drop_plaintext - before.strict_drop_plaintext).toBeGreaterThanOrEqual(2n);
    expect(await dial6(DATAPLANE_IP6, true, 10)).toBe('served');
    expect(await seenReaches('accept', STRICT_PORT, accepted + 1)).toBe(accepted + 1);
  });

  it('workload-wide STRICT: a plaintext client to a port with no entry of its own is refused, IPv4 and IPv6', async () => {
    apply('STRICT', {});
    const before = mtls.counters();
    const accepted = seen('accept', DEFAULT_PORT);
    expect(await dialFrom(CLIENT_IP, DEFAULT_PORT, 1500)).toMatchObject({ line: null, error: 'timeout' });
    const r = await nsC.exec('python3', [dial6Script, WORKLOAD_IP6, String(DEFAULT_PORT), CLIENT_IP6, '0', '1.5'], { timeoutMs: 60_000 });
    expect(r.stdout.trim(), r.stderr).toBe('timeout');
    expect(seen('accept', DEFAULT_PORT)).toBe(accepted);
    expect(mtls.counters().strict_drop_plaintext - before.strict_drop_plaintext).toBeGreaterThanOrEqual(2n);
  });

  it("workload-wide STRICT: the workload's own outbound connections get their replies, IPv4 and IPv6", async () => {
    apply('STRICT', {});
    const before = mtls.counters();
    const [cmd, args] = inNetns(nsW, process.execPath, [dialScript, CLIENT_IP, String(PEER_PORT), '3', WORKLOAD_IP, '10000']);
    const r = await wl.run(cmd, args, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Dialled[]).map((d) => d.line)).toEqual(['served', 'served', 'served']);
    const [cmd6, args6] = inNetns(nsW, 'python3', [dial6Script, CLIENT_IP6, String(PEER_PORT), WORKLOAD_IP6, '0', '10']);
    const r6 = await wl.run(cmd6, args6, { timeoutMs: 60_000 });
    expect(r6.stdout.trim(), r6.stderr).toBe('served');
    const after = mtls.counters();
    expect(after.strict_drop_plaintext).toBe(before.strict_drop_plaintext);
    // SYN-ACK, answer, FIN per connection: to the workload's connected socket, passed unchecked.
    expect(after.strict_pass_connected - before.strict_pass_connected).toBeGreaterThanOrEqual(4n * 3n);
  });
});
