// Who may talk to whom: the outbound side refuses a server that is not the destination's SPIFFE ID; the tunnel
// refuses a client the destination's policies do not admit, from another root, or with an expired SVID — each
// before one byte reaches the backend, each counted by reason.
import { connect } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '@mesh/testkit';
import { dial, get, meshAgent, missingDataplane, outcome, type Svid } from './harness.js';
import { CLIENT_ID, eventually, fdsOf, startNodes, TD, type Nodes } from './fixture.js';

const missing = missingDataplane();
const INTRUDER_ID = `${TD}/ns/default/sa/intruder`;
const OTHER_SERVER_ID = `${TD}/ns/default/sa/other-server`;

describePrivileged('mesh-dataplane identities', () => {
  let n: Nodes;
  let fdsAtStart: [number, number];
  // Workload addresses on node A: 11 intruder (valid SVID, not allowed), 12 client ID from a rogue root,
  // 13 client ID expired. Node B: 21 a second server workload with another identity.
  beforeAll(async () => {
    if (missing) throw new Error(missing);
    n = await startNodes({
      tweak: async ({ ip, pki, root, configA, configB, target }) => {
        const rogue = await pki.root('rogue');
        const intruder = await pki.svid(root, 'intruder', INTRUDER_ID);
        const foreign = await pki.svid(rogue, 'foreign', CLIENT_ID);
        const expired = await pki.svid(root, 'expired', CLIENT_ID, { notBefore: Date.now() - 3 * 86_400_000, notAfter: Date.now() - 86_400_000 });
        const otherServer = await pki.svid(root, 'other-server', OTHER_SERVER_ID);
        const workload = (host: number, svid: Svid): (typeof configA.workloads)[0] => ({ address: ip(host), ...svid, bundle: root.cert });
        configA.workloads.push(workload(11, intruder), workload(12, foreign), workload(13, expired));
        configB.workloads.push(workload(21, otherServer));
        configB.handshakeTimeoutMs = 2000;
        configB.workloads[0]!.policies = { deny: [], allow: [{ name: 'default/allow-client', rules: [{ from: [{ principals: [CLIENT_ID] }] }] }] };
        // Node A believes ip(21) is the usual server: B presents other-server there.
        configA.destinations = [{ address: `${ip(21)}:${target.port}`, tunnel: 'B', spiffeId: `${TD}/ns/default/sa/server` }];
      },
    });
    fdsAtStart = [await fdsOf(n.a.child.pid!), await fdsOf(n.b.child.pid!)];
  });
  afterAll(async () => {
    await n?.close();
  });

  const refused = async (from: string, to = n.target): Promise<void> => {
    const sock = dial(n.a, from, to);
    sock.write(`GET / HTTP/1.1\r\nhost: x\r\n\r\n`);
    const r = await outcome(sock);
    expect(r.bytes, `bytes received from ${from}`).toBe(0);
  };
  const count = async (dp: 'a' | 'b', name: string, labels: string, want: number): Promise<void> => {
    await eventually(`${name}{${labels}} = ${want} on node ${dp}`, async () => (await n[dp].counter(name, labels)) === want);
  };

  it('refuses a server presenting another SPIFFE ID than the destination expects', async () => {
    await refused(n.client, { host: n.ip(21), port: n.target.port });
    await count('a', 'mesh_dataplane_handshake_failures_total', 'role="outbound",reason="wrong_identity"', 1);
    expect(await n.a.counter('mesh_dataplane_connections_established_total', 'role="outbound"')).toBe(0);
  });

  it('refuses a client no ALLOW policy admits before a byte reaches the backend', async () => {
    await refused(n.ip(11));
    await count('b', 'mesh_dataplane_connection_errors_total', 'role="inbound",reason="not_allowed"', 1);
    expect(n.accepts()).toBe(0);
  });

  it('refuses a client whose SVID chains to another root', async () => {
    await refused(n.ip(12));
    await count('b', 'mesh_dataplane_handshake_failures_total', 'role="inbound",reason="untrusted_chain"', 1);
    expect(n.accepts()).toBe(0);
  });

  it('refuses a client with an expired SVID', async () => {
    await refused(n.ip(13));
    await count('b', 'mesh_dataplane_handshake_failures_total', 'role="inbound",reason="expired"', 1);
    expect(n.accepts()).toBe(0);
  });

  it('serves the allowed client (the same setup is not simply broken)', async () => {
    const agent = meshAgent(n.a, n.client, n.target, 1);
    const res = await get({ host: n.target.host, port: n.target.port, path: '/ok', agent });
    agent.destroy();
    expect(res.status).toBe(200);
    expect(n.accepts()).toBe(1);
  });

  it('refuses plaintext on the tunnel port, and drops a peer that never finishes its handshake', async () => {
    const plain = connect({ host: n.b.tunnel!.host, port: n.b.tunnel!.port });
    plain.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    expect((await outcome(plain)).bytes).toBe(0);
    await count('b', 'mesh_dataplane_handshake_failures_total', 'role="inbound",reason="protocol"', 1);
    const silent = connect({ host: n.b.tunnel!.host, port: n.b.tunnel!.port });
    const started = Date.now();
    expect((await outcome(silent)).bytes).toBe(0);
    // handshakeTimeoutMs is 2 s here; the sweep runs every second.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    await count('b', 'mesh_dataplane_handshake_failures_total', 'role="inbound",reason="timeout"', 1);
    expect(n.accepts()).toBe(1);
  });

  it('refuses an application whose address is no workload of the node, without dialling the tunnel', async () => {
    await refused(n.ip(99));
    await count('a', 'mesh_dataplane_connection_errors_total', 'role="outbound",reason="unknown_source"', 1);
  });
  it('leaves no fd behind after the refusals', async () => {
    await eventually(`node A back to ${fdsAtStart[0]} fds`, async () => (await fdsOf(n.a.child.pid!)) === fdsAtStart[0]);
    await eventually(`node B back to ${fdsAtStart[1]} fds`, async () => (await fdsOf(n.b.child.pid!)) === fdsAtStart[1]);
  });
}, { tools: ['openssl'] });
