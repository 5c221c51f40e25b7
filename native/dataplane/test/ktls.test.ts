// The kTLS fast path: in Debian's 6.1 kernel (qemu guest, ../shared/tools/guest-kernel) both data planes hand
// the record layer to the kernel after the handshake and splice 100 MiB each way without a byte through user
// space, across a veth link between two network namespaces whose capture holds no plaintext; on this host (no
// CONFIG_TLS) the same transfer goes through OpenSSL and the fallback is reported. On both, a peer that ends the
// stream with a fatal alert or a close_notify while bytes are queued: every byte before it, then a reset or an end.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describePrivileged, run } from '@mesh/testkit';
import { expect, it } from 'vitest';
import { missingDataplane } from './harness.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const guest = fileURLToPath(new URL('../../../../shared/tools/guest-kernel', import.meta.url));
const pair = fileURLToPath(new URL('./fixtures/ktls-pair.mjs', import.meta.url));
const missing = missingDataplane();

// Module autoloading does not reach the guest's modules: the AEADs kTLS asks the crypto API for, and veth, by
// hand. The guest's root is read-only: `ip netns` gets a tmpfs /run.
const GUEST_MODULES = ['gcm', 'ghash-generic', 'ctr', 'aesni-intel', 'chacha20poly1305', 'chacha-x86_64', 'poly1305-x86_64', 'veth'];
const GUEST_PRELUDE = `for m in ${GUEST_MODULES.join(' ')}; do modprobe $m 2>/dev/null; done; mount -t tmpfs tmpfs /run`;

interface Capture {
  bytes: number;
  markers: number;
  packets: number | null;
  dropped: number | null;
}

interface PairResult {
  kernel: string;
  size: number;
  error?: string;
  ktls: { a: string; b: string };
  received: number | string;
  up: { sent: string; got: string };
  down: { sent: string; got: string };
  tlsMid: Record<string, number> | null;
  tlsAfter: Record<string, number> | null;
  metrics: { a: Record<string, number>; b: Record<string, number> };
  /** --peer: what the application behind A received (alert/close: its length), how its connection ended (null: still open). */
  end?: string | null;
  /** --peer=alert|close: the bytes received are exactly "hello\n" and the peer's data. */
  exact?: boolean;
  expected?: number;
  /** --link: the capture of the link between the nodes, and of the application's plaintext leg. */
  capture?: { link: Capture; plain: Capture };
  logs?: { a: string; b: string };
}

function m(r: PairResult, node: 'a' | 'b', name: string, labels = ''): number | undefined {
  return r.metrics[node][labels === '' ? name : `${name}{${labels}}`];
}

/**
 * Runs the pair fixture once per entry of `runs` (its arguments after OUT), here or in one boot of the guest; the
 * JSON results come back through `build/`, the guest's writable share. `env`: assignments in front of each run.
 */
async function runPairs(runs: string[][], inGuest: boolean, env = ''): Promise<PairResult[]> {
  const dir = mkdtempSync(join(repo, 'build', 'ktls-'));
  const outs = runs.map((_, i) => join(dir, `result-${i}.json`));
  try {
    const script = runs.map((args, i) => `${env} node ${pair} ${outs[i]} ${args.join(' ')}`).join('; ');
    const r = inGuest
      ? await run(
          guest,
          ['--timeout', '900', '--', '/bin/sh', '-c', `${GUEST_PRELUDE}; ${script}`],
          { cwd: repo, timeoutMs: 1_000_000 },
        )
      : await run('/bin/sh', ['-c', script], { cwd: repo, timeoutMs: 300_000 });
    return outs.map((out, i) => {
      expect(existsSync(out), `${r.stdout}\n${r.stderr}`).toBe(true);
      const result = JSON.parse(readFileSync(out, 'utf8')) as PairResult;
      // A run that is to end in a reset says so with --record-limit.
      if (!runs[i]!.some((a) => a.startsWith('--record-limit'))) expect(result.error, JSON.stringify(result, null, 2)).toBeUndefined();
      return result;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function expectIntact(r: PairResult, size: number): void {
  expect(r.size).toBe(size);
  expect(r.received).toBe(size);
  expect(r.up.got).toBe(r.up.sent);
  expect(r.down.got).toBe(r.down.sent);
  expect(m(r, 'a', 'mesh_dataplane_bytes_total', 'role="outbound",direction="plain_to_tls"')).toBe(size);
  expect(m(r, 'b', 'mesh_dataplane_bytes_total', 'role="inbound",direction="plain_to_tls"')).toBe(size);
  // Only non-zero error series are reported: none.
  const errors = [r.metrics.a, r.metrics.b].flatMap((x) => Object.keys(x).filter((k) => k.startsWith('mesh_dataplane_connection_errors_total')));
  expect(errors).toEqual([]);
}

const PEER_BYTES = 4 * 1024 * 1024;

// A fatal alert after 4 MiB (bad_record_mac, from s_server, the data and the alert let go at once) and a
// close_notify after 4 MiB, both met while the application is not reading: every byte before them, in order,
// then a reset (peer_alert counted) or a clean end.
function expectPeerEnds(alert: PairResult, close: PairResult, path: 'ktls' | 'user'): void {
  for (const r of [alert, close]) {
    expect(m(r, 'a', 'mesh_dataplane_record_layer_total', `role="outbound",path="${path}"`), JSON.stringify(r, null, 2)).toBe(1);
    expect(r.expected).toBe(PEER_BYTES + 6);
    expect({ received: r.received, exact: r.exact }).toEqual({ received: PEER_BYTES + 6, exact: true });
  }
  expect(alert.end).toBe('ECONNRESET');
  expect(m(alert, 'a', 'mesh_dataplane_connection_errors_total', 'role="outbound",reason="peer_alert"')).toBe(1);
  expect(close.end).toBe('end');
  expect(Object.keys(close.metrics.a).filter((k) => k.startsWith('mesh_dataplane_connection_errors_total'))).toEqual([]);
}

describePrivileged('mesh-dataplane kTLS', () => {
  it('without kTLS on this host: 100 MiB each way through the user-space record layer, and the fallback reported', async () => {
    if (missing) throw new Error(missing);
    const size = 100 * 1024 * 1024;
    const [r, ku, alert, close] = (await runPairs(
      [['100'], ['0', '--peer=keyupdate'], ['4', '--peer=alert'], ['4', '--peer=close']],
      false,
    )) as [PairResult, PairResult, PairResult, PairResult];
    expectIntact(r, size);
    const hostHasTls = readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').split(/\s+/).includes('tls');
    if (!hostHasTls && !r.ktls.a.startsWith('available')) {
      // The reason is printed at start and the gauge says 0; each connection is counted on the user path.
      expect(r.ktls.a).toMatch(/^unavailable: .*TCP_ULP/);
      expect(m(r, 'a', 'mesh_dataplane_ktls_available')).toBe(0);
      expect(m(r, 'b', 'mesh_dataplane_ktls_available')).toBe(0);
      expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="user"')).toBe(1);
      expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(0);
      expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="user"')).toBe(1);
      expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="ktls"')).toBe(0);
    } else {
      expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(1);
    }
    if (!hostHasTls) {
      // OpenSSL follows a peer's KeyUpdate: the connection goes on, every byte in order.
      expect(ku.received).toBe('hello\nafter\n');
      expect(ku.end).toBeNull();
      expectPeerEnds(alert, close, 'user');
    }
  }, 400_000);

  it('in the 6.1 guest: both ends hand over to kTLS and splice 100 MiB each way, 0 bytes through user space', async () => {
    if (missing) throw new Error(missing);
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    const size = 100 * 1024 * 1024;
    const [r, ku, limited, alert, close] = (await runPairs(
      [['100', '--link'], ['0', '--peer=keyupdate'], ['4', '--record-limit=64'], ['4', '--peer=alert'], ['4', '--peer=close']],
      true,
    )) as [PairResult, PairResult, PairResult, PairResult, PairResult];
    expect(r.kernel).toMatch(/^6\.1\./);
    expect(r.ktls).toEqual({ a: 'available', b: 'available' });
    expectIntact(r, size);
    expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(1);
    expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="user"')).toBe(0);
    expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="ktls"')).toBe(1);
    expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="user"')).toBe(0);
    expect(m(r, 'a', 'mesh_dataplane_user_bytes_total', 'role="outbound"')).toBe(0);
    expect(m(r, 'b', 'mesh_dataplane_user_bytes_total', 'role="inbound"')).toBe(0);
    // Half-way through, the kernel held the tunnel's two ends: a TX and an RX software session each.
    expect(r.tlsMid?.TlsCurrTxSw).toBe(2);
    expect(r.tlsMid?.TlsCurrRxSw).toBe(2);
    expect(r.tlsAfter?.TlsDecryptError).toBe(0);
    expect(r.tlsAfter?.TlsCurrTxSw).toBe(0);
    // Node B in its own namespace behind a veth pair: the capture of that link carried every byte of the tunnel
    // (at least the 200 MiB of application bytes, none dropped) and not one marker, which the plaintext leg of
    // the application to node A shows (the control: more than half of the 51,200 markers, a few may straddle
    // two frames).
    const cap = r.capture!;
    expect(cap.link.dropped).toBe(0);
    expect(cap.link.bytes).toBeGreaterThan(2 * size);
    expect(cap.link.markers).toBe(0);
    expect(cap.plain.markers).toBeGreaterThan(25_600);

    // `openssl s_server` as node B sends "hello", a KeyUpdate, then "after": the kernel (6.1) cannot take the new
    // keys, so the application gets exactly the bytes before the KeyUpdate and then a reset, never a clean end.
    expect(ku.ktls.a).toBe('available');
    expect(m(ku, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(1);
    expect(ku.received).toBe('hello\n');
    expect(ku.end).toBe('ECONNRESET');
    expect(m(ku, 'a', 'mesh_dataplane_connection_errors_total', 'role="outbound",reason="key_update"')).toBe(1);

    // The record limit (lowered to 64 records, ~1 MiB, for the test; 2^24 in service): the connection ends with a
    // reset before the key seals more, counted record_limit, and the application never sees a clean end.
    expect(limited.error).toMatch(/ECONNRESET|EPIPE/);
    const limitHits =
      (m(limited, 'a', 'mesh_dataplane_connection_errors_total', 'role="outbound",reason="record_limit"') ?? 0) +
      (m(limited, 'b', 'mesh_dataplane_connection_errors_total', 'role="inbound",reason="record_limit"') ?? 0);
    expect(limitHits).toBeGreaterThanOrEqual(1);
    expect(m(limited, 'a', 'mesh_dataplane_bytes_total', 'role="outbound",direction="plain_to_tls"')).toBeLessThan(4 * 1024 * 1024);

    expectPeerEnds(alert, close, 'ktls');
    expect(m(alert, 'a', 'mesh_dataplane_user_bytes_total', 'role="outbound"')).toBe(0);
    expect(close.tlsAfter?.TlsDecryptError).toBe(0);
  }, 1_100_000);
  it('in the 6.1 guest: a pooled client (what a node without kTLS runs) to a node with kTLS: that connection stays in user space at both ends', async () => {
    if (missing) throw new Error(missing);
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    const [r] = (await runPairs([['4', '--pool-a']], true)) as [PairResult];
    expect(r.ktls).toEqual({ a: 'available', b: 'available' });
    expectIntact(r, 4 * 1024 * 1024);
    expect(m(r, 'a', 'mesh_dataplane_tunnel_streams_total', 'role="outbound",tunnel="pooled",handshake="new"')).toBe(1);
    expect(m(r, 'b', 'mesh_dataplane_tunnel_streams_total', 'role="inbound",tunnel="pooled"')).toBe(1);
    // B saw the client's ALPN and kept the record layer in user space, where the pool's frames are read.
    expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="user"')).toBe(1);
    expect(m(r, 'b', 'mesh_dataplane_record_layer_total', 'role="inbound",path="ktls"')).toBe(0);
  }, 600_000);
  it('in the 6.1 guest: the splice pump takes every ready record before passing them on, through 256 KiB pipes', async () => {
    if (missing) throw new Error(missing);
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    // Each data plane under strace, counting its splice calls (one file per data plane: -f follows its threads).
    const dir = mkdtempSync(join(repo, 'build', 'ktls-strace-'));
    try {
      const bin = process.env.MESH_DATAPLANE_BIN ?? join(repo, 'native/dataplane/build/mesh-dataplane');
      const wrapper = join(dir, 'strace-dataplane.sh');
      writeFileSync(wrapper, `#!/bin/sh\nexec strace -f -qq -e trace=splice -o ${dir}/splice.$$ ${bin} "$@"\n`, { mode: 0o755 });
      const [r] = (await runPairs([['8']], true, `MESH_DATAPLANE_BIN=${wrapper}`)) as [PairResult];
      expectIntact(r, 8 * 1024 * 1024);
      expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(1);
      const traces = readdirSync(dir).filter((f) => f.startsWith('splice.'));
      expect(traces).toHaveLength(2);
      for (const f of traces) {
        const lines = readFileSync(join(dir, f), 'utf8').split('\n');
        const calls = lines.filter((l) => l.includes('splice(')).length;
        const biggest = Math.max(...lines.map((l) => Number(/= (\d+)$/.exec(l)?.[1] ?? 0)));
        // 16 MiB through each data plane (8 MiB each way). One splice per 16 KiB record read, one to the
        // application per record, 64 KiB pipes and a retry after every EAGAIN made ~90-100 calls per MiB (1,438
        // to 1,581, 13-16 % of them EAGAIN); batched, 40-46 (EAGAIN 1-8 %: a pipe short of slots, a full
        // kTLS send buffer).
        expect(calls / 16, `${f}: splice calls per MiB`).toBeLessThan(64);
        expect(biggest, `${f}: the largest splice`).toBeGreaterThan(64 * 1024);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
  it('in the 6.1 guest with no AEAD module loaded: the data plane loads them, AES-NI GCM first', async () => {
    if (missing) throw new Error(missing);
    expect(existsSync(guest), `${guest} (DEVELOPERS.md, Tests: the qemu route to a second kernel)`).toBe(true);
    const dir = mkdtempSync(join(repo, 'build', 'ktls-modules-'));
    try {
      // qemu's `max` CPU model has AES-NI and PCLMULQDQ (its default has neither); guest-kernel takes no qemu
      // options, so a qemu first on PATH adds it. In the guest only `tls` is loaded, by guest-kernel itself.
      mkdirSync(join(dir, 'qemu'));
      writeFileSync(join(dir, 'qemu', 'qemu-system-x86_64'), '#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 "$@" -cpu max\n', { mode: 0o755 });
      const out = join(dir, 'result.json');
      const script = `node ${pair} ${out} 1; grep -A4 'name *: gcm(aes)' /proc/crypto > ${dir}/crypto.txt; lsmod > ${dir}/lsmod.txt`;
      const g = await run(guest, ['--timeout', '600', '--', '/bin/sh', '-c', script], {
        cwd: repo,
        timeoutMs: 700_000,
        env: { ...process.env, PATH: `${join(dir, 'qemu')}:${process.env.PATH}` },
      });
      expect(existsSync(out), `${g.stdout}\n${g.stderr}`).toBe(true);
      const r = JSON.parse(readFileSync(out, 'utf8')) as PairResult;
      expect(r.error, JSON.stringify(r, null, 2)).toBeUndefined();
      expect(r.ktls).toEqual({ a: 'available', b: 'available' });
      expectIntact(r, 1024 * 1024);
      expect(m(r, 'a', 'mesh_dataplane_record_layer_total', 'role="outbound",path="ktls"')).toBe(1);
      expect(readFileSync(join(dir, 'lsmod.txt'), 'utf8')).toMatch(/^aesni_intel /m);
      // The sockets' gcm(aes) came after aesni_intel: the kernel's AES-NI GCM, not gcm_base(ctr(aes-generic),…).
      expect(readFileSync(join(dir, 'crypto.txt'), 'utf8')).toMatch(/driver\s*: generic-gcm-aesni/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 800_000);
});
