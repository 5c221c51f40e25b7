// kTLS + splice against the user-space record layer, in Debian's 6.1 kernel (qemu guest, ../shared/tools/guest-kernel):
// the pair fixture of native/dataplane/test (two data planes on loopback, SIZE MiB each way through one connection)
// with "ktls" on and off, ABBA, in one boot. Ratios only: the guest is emulated (TCG).
//   node bench/dataplane/ktls.mjs [--size MIB] [--reps N] [--cpu MODEL]   → bench/results/ktls.json
// --cpu is qemu's CPU model for the guest, default `max`: TCG then emulates AES-NI and PCLMULQDQ, so the kernel
// seals with aesni-intel as a real machine's would (qemu's default model has neither: generic C AES-GCM).
// guest-kernel takes no qemu options: a qemu-system-x86_64 first on PATH adds `-cpu`.
// CPU: the data planes' share of the emulator's CPU time on this host ("What counts" below; bench/README.md).
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { header, median, onCleanup, root, round, runCommand, writeResult } from '../lib.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeMiB = arg('size', 32);
const reps = arg('reps', 2);
const cpuModel = process.argv.includes('--cpu') ? process.argv[process.argv.indexOf('--cpu') + 1] : 'max';
const guest = join(root, '..', 'shared', 'tools', 'guest-kernel');
const pair = join(root, 'native/dataplane/test/fixtures/ktls-pair.mjs');
if (!existsSync(join(root, 'native/dataplane/build/mesh-dataplane'))) throw new Error('run bash scripts/build.sh first');

const loadBefore = loadavg()[0];
const dir = mkdtempSync(join(root, 'build', 'bench-ktls-'));
onCleanup(() => rmSync(dir, { recursive: true, force: true }));
// The fixture and the binary as they are now: a rebuild during the (long) run does not reach it.
const fixture = join(dir, 'ktls-pair.mjs');
const binary = join(dir, 'mesh-dataplane');
copyFileSync(pair, fixture);
copyFileSync(join(root, 'native/dataplane/build/mesh-dataplane'), binary);
chmodSync(binary, 0o755);
const qemuDir = join(dir, 'qemu');
mkdirSync(qemuDir);
const qemu = runCommand('/bin/sh', ['-c', 'command -v qemu-system-x86_64']);
const realQemu = (await qemu).stdout.trim() || '/usr/bin/qemu-system-x86_64';
// Its pid (exec keeps it) for the emulator's CPU time below.
writeFileSync(join(qemuDir, 'qemu-system-x86_64'), `#!/bin/sh\necho $$ > ${join(dir, 'qemu.pid')}\nexec ${realQemu} "$@" -cpu ${cpuModel}\n`);
chmodSync(join(qemuDir, 'qemu-system-x86_64'), 0o755);

// ABBA per rep: ktls, user, user, ktls.
const order = [];
for (let i = 0; i < reps; i++) order.push(...(i % 2 === 0 ? ['ktls', 'user'] : ['user', 'ktls']));
const runs = order.map((arm, i) => `MESH_KTLS_MARK=1 MESH_DATAPLANE_BIN=${binary} node ${fixture} ${join(dir, `${i}-${arm}.json`)} ${sizeMiB}${arm === 'user' ? ' --ktls=false' : ''}`);
const modules = 'gcm ghash-generic ctr aesni-intel ghash-clmulni-intel chacha20poly1305 chacha-x86_64 poly1305-x86_64';
const script = [
  `for m in ${modules}; do modprobe $m 2>/dev/null; done`,
  `grep -m1 -o -w 'aes\\|pclmulqdq\\|avx2' /proc/cpuinfo | sort -u | tr '\\n' ' ' > ${join(dir, 'cpu.txt')}`,
  ...runs,
  // Which AES-GCM the kernel used (the emulated CPU decides whether AES-NI is there); listed once instantiated.
  `grep -A4 'name *: gcm(aes)' /proc/crypto | grep driver > ${join(dir, 'crypto.txt')}`,
].join('\n');
// From a file: the command reaches the guest on the kernel's command line, which holds 2,048 bytes.
writeFileSync(join(dir, 'run.sh'), `${script}\n`);
// What counts. Inside the guest every process's CPU time is the scheduler's run time, and under emulation on a
// loaded host that includes the time the host did not run the vCPU: it follows the host's load, not the work.
// The emulator's own CPU time on this host (qemu's utime + stime, read when the fixture marks the start and end
// of each transfer) is what the guest's work cost, all of it: data planes, the application and the backend,
// kernel threads, softirq wherever it ran. The data planes' part of it is their share of the guest's run time in
// that transfer: (data planes + kernel threads) / (data planes + kernel threads + the fixture's own process, the
// application and the backend). Both arms are counted the same way.
const emulatorCpu = {};
const qemuSeconds = () => {
  try {
    const pid = readFileSync(join(dir, 'qemu.pid'), 'utf8').trim();
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return null;
  }
};
const watch = setInterval(() => {
  for (let i = 0; i < order.length; i++) {
    for (const t of ['t0', 't1']) {
      const key = `${i}-${order[i]}.${t}`;
      if (emulatorCpu[key] === undefined && existsSync(join(dir, `${i}-${order[i]}.json.${t}`))) emulatorCpu[key] = qemuSeconds();
    }
  }
}, 50);
const r = await runCommand('/usr/bin/env', [`PATH=${qemuDir}:${process.env.PATH}`, guest, '--timeout', '1800', '--', '/bin/sh', join(dir, 'run.sh')], { timeoutMs: 1_900_000 });
clearInterval(watch);

const GIB = 1024 ** 3;
const arms = { ktls: [], user: [] };
for (const f of readdirSync(dir).filter((f) => f.endsWith('.json')).sort((a, b) => parseInt(a) - parseInt(b))) {
  const res = JSON.parse(readFileSync(join(dir, f), 'utf8'));
  if (res.error) throw new Error(`${f}: ${res.error}\n${r.stdout}`);
  const arm = f.includes('ktls') ? 'ktls' : 'user';
  const path = res.metrics.a['mesh_dataplane_record_layer_total{role="outbound",path="ktls"}'] === 1 ? 'ktls' : 'user';
  if (path !== arm) throw new Error(`${f}: ran on the ${path} path`);
  if (res.up.got !== res.up.sent || res.down.got !== res.down.sent) throw new Error(`${f}: bytes differ`);
  const bytes = 2 * res.size;  // both directions
  const key = f.replace(/\.json$/, '');
  const emulator = emulatorCpu[`${key}.t1`] - emulatorCpu[`${key}.t0`];
  if (!(emulator > 0)) throw new Error(`${f}: no emulator CPU time read (${JSON.stringify(emulatorCpu)})`);
  const c = res.cpuSeconds;
  const share = (c.dataplanes + c.kthreads) / (c.dataplanes + c.kthreads + c.app);
  arms[arm].push({
    throughput_mbit_s: (bytes * 8) / res.seconds / 1e6,
    cpu_s_per_gib: (emulator * share) / (bytes / GIB),
    emulator_cpu_s_per_gib: emulator / (bytes / GIB),
    dataplane_share: share,
    guest_clock_cpu_s_per_gib: res.dataplaneCpuSeconds / (bytes / GIB),
    kthreads_cpu_s_per_gib: c.kthreads / (bytes / GIB),
    user_bytes: res.metrics.a['mesh_dataplane_user_bytes_total{role="outbound"}'] + res.metrics.b['mesh_dataplane_user_bytes_total{role="inbound"}'],
  });
}
if (arms.ktls.length !== reps || arms.user.length !== reps) throw new Error(`missing runs:\n${r.stdout}\n${r.stderr}`);
const med = (arm, k) => median(arms[arm].map((x) => x[k]));
const result = {
  ...header('ktls', loadBefore),
  guest: {
    kernel: '6.1 (Debian, qemu TCG)',
    cpu: `qemu -cpu ${cpuModel}`,
    cpuFlags: readFileSync(join(dir, 'cpu.txt'), 'utf8').trim(),
    // The data plane's first TLS 1.3 suite (both ends are data planes): kTLS TLS_CIPHER_AES_GCM_128, "gcm(aes)".
    cipherSuite: 'TLS_AES_128_GCM_SHA256',
    gcmAes: readFileSync(join(dir, 'crypto.txt'), 'utf8').trim().replace(/\s+/g, ' '),
  },
  params: { sizeMiBEachWay: sizeMiB, repsPerArm: reps, order },
  // cpu_s_per_gib: the data planes' share of the emulator's CPU time (host seconds per GiB through both
  // directions, see "What counts" above); emulator_cpu_s_per_gib: all of the guest's; guest_clock_cpu_s_per_gib:
  // the data planes' utime + stime as the guest sees them (what this bench recorded before: host load in it).
  medians: Object.fromEntries(['ktls', 'user'].map((arm) => [arm, {
    throughput_mbit_s: round(med(arm, 'throughput_mbit_s'), 1),
    cpu_s_per_gib: round(med(arm, 'cpu_s_per_gib')),
    emulator_cpu_s_per_gib: round(med(arm, 'emulator_cpu_s_per_gib')),
    dataplane_share: round(med(arm, 'dataplane_share')),
    guest_clock_cpu_s_per_gib: round(med(arm, 'guest_clock_cpu_s_per_gib')),
    kthreads_cpu_s_per_gib: round(med(arm, 'kthreads_cpu_s_per_gib')),
  }])),
  ratios: {
    throughput_ktls_vs_user: round(med('ktls', 'throughput_mbit_s') / med('user', 'throughput_mbit_s'), 2),
    cpu_per_gib_ktls_vs_user: round(med('ktls', 'cpu_s_per_gib') / med('user', 'cpu_s_per_gib'), 2),
    emulator_cpu_per_gib_ktls_vs_user: round(med('ktls', 'emulator_cpu_s_per_gib') / med('user', 'emulator_cpu_s_per_gib'), 2),
    guest_clock_cpu_per_gib_ktls_vs_user: round(med('ktls', 'guest_clock_cpu_s_per_gib') / med('user', 'guest_clock_cpu_s_per_gib'), 2),
  },
  goal: { cpu_per_gib_ktls_vs_user: '<= 0.6' },
  raw: arms,
};
const file = writeResult('ktls', result);
console.log(JSON.stringify({ medians: result.medians, ratios: result.ratios, guest: result.guest }, null, 2));
console.log(`wrote ${file}`);
process.exit(0);
