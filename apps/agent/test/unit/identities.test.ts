// The agent's workload identities: one SVID per SPIFFE ID in use on the node (every workload of a service account
// shares it), and the SVID files the data plane reads (cert chain, key, bundle), written whole, 0600 in a 0700
// directory, rewritten on renewal, removed with the last workload of their ID.
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { uniqueName } from '@mesh/testkit';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';

import type { ResolvedWorkload } from '../../src/config/objects.js';
import { svidFileName, WorkloadIdentities, type IdentityOptions } from '../../src/identities.js';
import { createLogger } from '../../src/log.js';

const TD = 'ids.test';
const wl = (namespace: string, name: string, serviceAccount: string): ResolvedWorkload => ({ name, namespace, serviceAccount, labels: {}, cgroup: `${namespace}/${name}`, addresses: [] });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function open(o: Partial<IdentityOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), `${uniqueName('ids', 40)}-`));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  // On a tmpfs, as /run is on a node.
  const run = mkdtempSync(join('/dev/shm', `${uniqueName('ids', 40)}-`));
  cleanups.push(() => rmSync(run, { recursive: true, force: true }));
  const logPath = join(dir, 'log');
  const fd = openSync(logPath, 'w');
  cleanups.push(() => closeSync(fd));
  const svidDir = join(run, 'agent', 'svid');
  const ids = await WorkloadIdentities.open({ trustDomain: TD, stateDir: join(dir, 'state'), ca: { mode: 'builtin' }, svidTtlMs: 3600_000, svidDir, log: createLogger({ fd }), ...o });
  cleanups.push(() => ids.close());
  return { ids, svidDir, logText: () => readFileSync(logPath, 'utf8') };
}

/** Polls `ok` every 20 ms for at most `ms`. */
async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

const allValid = (ids: WorkloadIdentities, n: number) => () => {
  const w = ids.view().workloads;
  return w.length === n && w.every((x) => x.state === 'valid');
};

const sample = (text: string, line: RegExp) => text.split('\n').filter((l) => line.test(l));

describe('workload identities', () => {
  it('issues one SVID per SPIFFE ID: 60 workloads over 3 service accounts → 3 issuances, shared by their workloads', async () => {
    const { ids } = await open();
    const registry = new Registry();
    ids.register(registry);
    const sas = ['web', 'api', 'db'];
    const workloads = Array.from({ length: 60 }, (_, i) => wl('shop', `w-${i}`, sas[i % 3]!));
    ids.apply(workloads);
    await until('60 valid workloads', allValid(ids, 60), 20_000);

    const view = ids.view();
    expect(new Set(view.workloads.map((w) => w.serial)).size).toBe(3);
    for (const w of view.workloads) {
      const i = Number(w.workload.slice('shop/w-'.length));
      expect(w.id).toBe(`spiffe://${TD}/ns/shop/sa/${sas[i % 3]}`);
    }
    // Workloads of one ID show the same certificate.
    const byId = new Map<string, Set<string>>();
    for (const w of view.workloads) byId.set(w.id, (byId.get(w.id) ?? new Set()).add(`${w.serial} ${w.notAfter} ${w.nextRenewal}`));
    expect([...byId.values()].map((s) => s.size)).toEqual([1, 1, 1]);

    const text = await registry.metrics();
    expect(sample(text, /^mesh_svid_renewals_total\{result="success"\}/)).toEqual(['mesh_svid_renewals_total{result="success"} 3']);
    // The per-workload series stays (dashboards and alerts use it); the per-ID one is one series per certificate.
    expect(sample(text, /^mesh_svid_expiry_timestamp_seconds\{/)).toHaveLength(60);
    expect(sample(text, /^mesh_svid_identity_expiry_timestamp_seconds\{/)).toHaveLength(3);

    // A workload moving to another service account maps to that ID; no new issuance for an ID in use.
    ids.apply(workloads.map((w, i) => (i === 0 ? { ...w, serviceAccount: 'api' } : w)));
    await until('w-0 on api', () => ids.view().workloads.find((w) => w.workload === 'shop/w-0')?.id === `spiffe://${TD}/ns/shop/sa/api`, 5_000);
    const w0 = ids.view().workloads.find((w) => w.workload === 'shop/w-0')!;
    expect(w0.serial).toBe(view.workloads.find((w) => w.workload === 'shop/w-1')!.serial);
    expect(sample(await registry.metrics(), /^mesh_svid_renewals_total\{result="success"\}/)).toEqual(['mesh_svid_renewals_total{result="success"} 3']);
  }, 30_000);

  it('writes each ID\'s cert, key and the bundle for the data plane: 0600 in a 0700 directory, key matching cert', async () => {
    const { ids, svidDir, logText } = await open();
    const changes: string[][] = [];
    ids.onChange((c) => changes.push(c.ids));
    ids.apply([wl('shop', 'web-1', 'web'), wl('shop', 'web-2', 'web'), wl('pay', 'api', 'api')]);
    await until('3 valid workloads', allValid(ids, 3), 20_000);
    await until('a change signalled for both IDs', () => new Set(changes.flat()).size === 2, 5_000);

    expect((statSync(svidDir).mode & 0o777).toString(8)).toBe('700');
    const files = ids.files('shop/web-1')!;
    expect(files).toEqual(ids.files('shop/web-2'));
    expect(files.id).toBe(`spiffe://${TD}/ns/shop/sa/web`);
    const api = ids.files('pay/api')!;
    expect(api.cert).not.toBe(files.cert);
    expect(api.bundle).toBe(files.bundle);
    for (const f of [files.cert, files.key, files.bundle, api.cert, api.key]) {
      expect(f.startsWith(`${svidDir}/`)).toBe(true);
      const st = statSync(f);
      expect((st.mode & 0o777).toString(8), f).toBe('600');
      // Owned by the agent's user: root on a node.
      expect(st.uid, f).toBe(process.getuid!());
    }
    // Two IDs' cert and key, one bundle: nothing else (no temporary files left).
    expect(readdirSync(svidDir)).toHaveLength(5);

    for (const [f, workload] of [[files, 'shop/web-1'], [api, 'pay/api']] as const) {
      const chain = readFileSync(f.cert, 'utf8');
      const leaf = new X509Certificate(chain);
      expect(leaf.subjectAltName).toBe(`URI:${f.id}`);
      expect(leaf.serialNumber.toLowerCase()).toBe(ids.view().workloads.find((w) => w.workload === workload)!.serial!.toLowerCase());
      const keyPem = readFileSync(f.key, 'utf8');
      expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      const key = createPrivateKey(keyPem);
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(createPublicKey(key).export({ type: 'spki', format: 'der' }).equals(leaf.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
      const root = new X509Certificate(readFileSync(f.bundle, 'utf8'));
      expect(leaf.verify(root.publicKey)).toBe(true);
    }
    // The keys are in the files, never in the logs or the view.
    const keyBody = readFileSync(files.key, 'utf8').split('\n')[1]!;
    expect(logText()).toMatch(/svid issued/);
    expect(logText()).not.toMatch(/PRIVATE KEY/);
    expect(logText()).not.toContain(keyBody);
    expect(JSON.stringify(ids.view())).not.toMatch(/PRIVATE KEY/);

    // The last workload of an ID gone: its files go; the other ID's stay.
    const before = changes.length;
    ids.apply([wl('shop', 'web-1', 'web')]);
    await until('pay/api files removed', () => !existsSync(api.cert) && !existsSync(api.key), 5_000);
    expect(ids.files('pay/api')).toBeUndefined();
    expect(readdirSync(svidDir).sort()).toEqual([files.bundle, files.cert, files.key].map((f) => f.slice(svidDir.length + 1)).sort());
    await until('removal signalled', () => changes.length > before, 5_000);
    expect(changes.at(-1)).toContain(api.id);
  }, 30_000);

  it('renewal (TTL 2 s) rewrites the files whole: a reader in a loop never sees a part of one', async () => {
    const { ids } = await open({ svidTtlMs: 2000 });
    ids.apply([wl('shop', 'web', 'web')]);
    await until('a valid SVID', allValid(ids, 1), 20_000);
    await until('files written', () => ids.files('shop/web') !== undefined, 5_000);
    const f = ids.files('shop/web')!;
    // The reader is another process, as the data plane is: it reads while the agent writes. ~5 s: about five
    // renewals at 40–60 % of 2 s.
    const reader = `
      const { readFileSync } = require('node:fs');
      const { X509Certificate, createPrivateKey } = require('node:crypto');
      const [cert, key] = process.argv.slice(1);
      const serials = new Set(); const bad = []; let reads = 0;
      for (const end = Date.now() + 5000; Date.now() < end; reads++) {
        const c = readFileSync(cert, 'utf8'), k = readFileSync(key, 'utf8');
        try {
          serials.add(new X509Certificate(c).serialNumber);
          if (!c.endsWith('-----END CERTIFICATE-----\\n')) throw new Error('cut certificate');
          if (createPrivateKey(k).asymmetricKeyType !== 'ec') throw new Error('not an EC key');
        } catch (err) { if (bad.length < 5) bad.push(err.message + ' ' + JSON.stringify(c.slice(-40)) + ' ' + k.length); }
      }
      process.stdout.write(JSON.stringify({ reads, serials: serials.size, bad }));
    `;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['-e', reader, f.cert, f.key], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    const r = JSON.parse(out) as { reads: number; serials: number; bad: string[] };
    expect(r.bad).toEqual([]);
    expect(r.reads).toBeGreaterThan(50);
    expect(r.serials).toBeGreaterThanOrEqual(3);
  }, 30_000);

  it('names files by ID, injectively and within a file name\'s length; refuses an unusable SVID directory, naming it', async () => {
    expect(svidFileName('spiffe://cluster.local/ns/shop/sa/web')).toBe('cluster.local+ns+shop+sa+web');
    const long = (sa: string) => `spiffe://${TD}/ns/shop/sa/${'x'.repeat(300)}${sa}`;
    expect(svidFileName(long('a')).length).toBeLessThanOrEqual(200);
    expect(svidFileName(long('a'))).not.toBe(svidFileName(long('b')));
    const dir = mkdtempSync(join(tmpdir(), `${uniqueName('ids', 40)}-`));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'file'), '');
    await expect(open({ svidDir: join(dir, 'file', 'svid') })).rejects.toThrow(`SVID directory ${join(dir, 'file', 'svid')}: ENOTDIR`);
  });
});
