// Workload identities in the agent: an SVID per workload of the config (by its service account), shown by
// `meshctl certs` and /v1/certs, counted in /metrics; the built-in CA's root 0600 in --state-dir and reused after
// a restart; a workload removed from the config loses its SVID; no key material in the logs or the API.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createIntermediate, createRoot, exportKeyPem, toPem } from '@mesh/mtls';
import { describePrivileged, stopProcess } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { meshEnvPerTest, sample, testNet } from './harness.js';

const NET = testNet();
const workload = (name: string, sa: string, addr: string) => `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: ${name}, namespace: shop }
spec: { serviceAccount: ${sa}, addresses: [${addr}] }
---
`;

interface Certs {
  trustDomain: string;
  ca: { mode: string; rotationPhase: string };
  bundle: { serial: string }[];
  workloads: { workload: string; id: string; state: string; serial: string; notAfter: string; nextRenewal: string; issuer: string }[];
}

describePrivileged('workload identities in the agent', () => {
  const newEnv = meshEnvPerTest();

  it('issues an SVID per workload, shows it, follows config changes, keeps its root across a restart', async () => {
    const e = await newEnv();
    e.writeConfig(workload('web', 'web-sa', `${NET}.0.1`) + workload('api', 'api-sa', `${NET}.0.2`));
    const flags = ['--trust-domain', 'mesh.test', '--svid-ttl', '2h'];
    const agent = await e.startAgent(flags);

    const certsOf = () => e.api<Certs>('/v1/certs');
    // The first issuance runs beside readiness: wait for it (bounded).
    let c = await certsOf();
    for (let i = 0; i < 100 && c.workloads.some((w) => w.state !== 'valid'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      c = await certsOf();
    }
    expect(c.trustDomain).toBe('mesh.test');
    expect(c.ca).toMatchObject({ mode: 'builtin', rotationPhase: 'none' });
    expect(c.bundle).toHaveLength(1);
    expect(c.workloads.map((w) => [w.workload, w.id, w.state])).toEqual([
      ['shop/api', 'spiffe://mesh.test/ns/shop/sa/api-sa', 'valid'],
      ['shop/web', 'spiffe://mesh.test/ns/shop/sa/web-sa', 'valid'],
    ]);
    const web = c.workloads.find((w) => w.workload === 'shop/web')!;
    const life = Date.parse(web.notAfter) - Date.now();
    expect(life).toBeGreaterThan(2 * 3600_000 - 60_000);
    expect(life).toBeLessThanOrEqual(2 * 3600_000);
    // Next renewal at 40–60 % of the 2 h lifetime.
    const renewIn = Date.parse(web.nextRenewal) - (Date.parse(web.notAfter) - 2 * 3600_000);
    expect(renewIn / (2 * 3600_000)).toBeGreaterThanOrEqual(0.4);
    expect(renewIn / (2 * 3600_000)).toBeLessThanOrEqual(0.6);

    const table = await e.meshctl(['certs']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/WORKLOAD\s+SPIFFE ID\s+STATE\s+SERIAL\s+NOT AFTER\s+NEXT RENEWAL\s+ISSUER/);
    expect(table.stdout).toMatch(new RegExp(`shop/web\\s+spiffe://mesh\\.test/ns/shop/sa/web-sa\\s+valid\\s+${web.serial}\\s+${web.notAfter.replace(/\./g, '\\.')}`));
    expect(table.stdout).toMatch(/trust domain\s+mesh\.test/);

    const metrics = await e.metrics();
    expect(sample(metrics, 'mesh_svid_expiry_timestamp_seconds', { workload: 'shop/web' })).toEqual([Date.parse(web.notAfter) / 1000]);
    expect(sample(metrics, 'mesh_svid_renewals_total', { result: 'success' })).toEqual([2]);
    expect(sample(metrics, 'mesh_svid_renewals_total', { result: 'failure' })).toEqual([0]);
    expect(sample(metrics, 'mesh_trust_bundle_roots', { trust_domain: 'mesh.test' })).toEqual([1]);

    // The data plane's SVID files, by default under /run/mesh/<pin root's name>/svid: 0600 in a 0700 directory.
    const svidFiles = ['bundle.pem', 'mesh.test+ns+shop+sa+web-sa.pem', 'mesh.test+ns+shop+sa+web-sa.key', 'mesh.test+ns+shop+sa+api-sa.pem'];
    for (let i = 0; i < 50 && !svidFiles.every((f) => existsSync(join(e.svidDir, f))); i++) await new Promise((r) => setTimeout(r, 100));
    expect((statSync(e.svidDir).mode & 0o777).toString(8)).toBe('700');
    for (const f of svidFiles) expect((statSync(join(e.svidDir, f)).mode & 0o777).toString(8)).toBe('600');

    // The CA's files: 0600 in a 0700 directory.
    for (const f of ['root.crt', 'root.key']) expect((statSync(join(e.stateDir, 'ca', f)).mode & 0o777).toString(8)).toBe('600');
    expect((statSync(join(e.stateDir, 'ca')).mode & 0o777).toString(8)).toBe('700');
    const rootKey = readFileSync(join(e.stateDir, 'ca', 'root.key'), 'utf8');

    // A workload removed from the config loses its SVID.
    e.writeConfig(workload('web', 'web-sa', `${NET}.0.1`));
    for (let i = 0; i < 100 && (await certsOf()).workloads.length !== 1; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await certsOf()).workloads.map((w) => w.workload)).toEqual(['shop/web']);

    // Keys never in the logs or the API.
    const logText = agent.logs().map((l) => JSON.stringify(l)).join('\n');
    expect(logText).toMatch(/"msg":"svid issued"/);
    expect(logText).not.toMatch(/PRIVATE KEY/);
    const keyBody = rootKey.split('\n')[1]!;
    expect(logText).not.toContain(keyBody);
    expect(JSON.stringify(await certsOf())).not.toMatch(/PRIVATE KEY/);

    // Restart: the same root.
    await stopProcess(agent.child);
    await e.startAgent(flags);
    const after = await certsOf();
    expect(after.bundle.map((r) => r.serial)).toEqual(c.bundle.map((r) => r.serial));
    expect(readFileSync(join(e.stateDir, 'ca', 'root.key'), 'utf8')).toBe(rootKey);
  });

  it('refuses to start on a state directory holding another trust domain\'s root, naming the file', async () => {
    const e = await newEnv();
    e.writeConfig(workload('web', 'web-sa', `${NET}.0.3`));
    const first = await e.startAgent(['--trust-domain', 'one.test']);
    await stopProcess(first.child);
    await expect(e.startAgent(['--trust-domain', 'two.test'])).rejects.toThrow(/root\.crt: the root is for trust domain one\.test, the agent is configured for two\.test/);
  });

  it('external CA gone for longer than a lifetime: the workload is reported without identity (metric, log, meshctl certs), then recovers', async () => {
    const e = await newEnv();
    e.writeConfig(workload('web', 'web-sa', `${NET}.0.4`));
    // An issuer in cert-manager's layout.
    const caDir = join(e.stateDir, 'issuer');
    mkdirSync(caDir);
    const root = await createRoot({ trustDomain: 'mesh.test' });
    const issuer = await createIntermediate(root, { trustDomain: 'mesh.test' });
    writeFileSync(join(caDir, 'tls.crt'), toPem([issuer.certificate]));
    writeFileSync(join(caDir, 'tls.key'), await exportKeyPem(issuer.privateKey), { mode: 0o600 });
    writeFileSync(join(caDir, 'ca.crt'), toPem([root.certificate]));
    const agent = await e.startAgent(['--trust-domain', 'mesh.test', '--ca', 'external', '--ca-dir', caDir, '--svid-ttl', '1m']);
    const certs = async () => JSON.parse((await e.meshctl(['certs', '--json'])).stdout) as Certs;
    const waitFor = async (what: string, ok: (c: Certs) => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      for (let c = await certs(); ; c = await certs()) {
        if (ok(c)) return c;
        if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms; last: ${JSON.stringify(c.workloads)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const first = (await waitFor('first SVID', (c) => c.workloads[0]?.state === 'valid', 10_000)).workloads[0]!;
    expect(first.issuer).toBe(issuer.certificate.subject);

    // The issuer's files disappear (a Secret deleted): renewals fail, the last SVID is kept until it expires.
    renameSync(caDir, `${caDir}.away`);
    const gone = await waitFor('no identity', (c) => c.workloads[0]?.state === 'expired', Date.parse(first.notAfter) - Date.now() + 10_000);
    expect(gone.workloads[0]!.serial).toBe(first.serial);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(first.notAfter));
    const shown = await e.meshctl(['certs']);
    expect(shown.code).toBe(1);
    expect(shown.stdout).toMatch(/shop\/web\s+spiffe:\/\/mesh\.test\/ns\/shop\/sa\/web-sa\s+expired/);
    expect(shown.stdout).toMatch(/shop\/web: external CA .*tls\.crt: cannot read \(ENOENT\)/);
    const text = await e.metrics();
    expect(sample(text, 'mesh_svid_expiry_timestamp_seconds', { workload: 'shop/web' })[0]!).toBeLessThan(Date.now() / 1000);
    expect(sample(text, 'mesh_svid_renewals_total', { result: 'failure' })[0]!).toBeGreaterThan(0);
    const logs = agent.logs();
    // One line per SPIFFE ID, naming its workloads.
    expect(logs.filter((l) => l.msg === 'workload without identity')).toEqual([expect.objectContaining({ level: 'error', id: 'spiffe://mesh.test/ns/shop/sa/web-sa', workloads: ['shop/web'], expiredAt: first.notAfter })]);
    expect(logs.some((l) => l.msg === 'svid renewal failed' && l.level === 'warn')).toBe(true);

    // Back: a new SVID within the retry cap (TTL/10 = 6 s).
    renameSync(`${caDir}.away`, caDir);
    const back = (await waitFor('recovery', (c) => c.workloads[0]?.state === 'valid', 15_000)).workloads[0]!;
    expect(back.serial).not.toBe(first.serial);
    expect((await e.meshctl(['certs'])).code).toBe(0);
  }, 170_000);

  it('root rotation with meshctl ca and agent restarts: two roots in the bundle, then SVIDs from the new root', async () => {
    const e = await newEnv();
    e.writeConfig(workload('web', 'web-sa', `${NET}.0.5`));
    const flags = ['--trust-domain', 'mesh.test', '--svid-ttl', '1h'];
    const ca = (step: string, ...extra: string[]) => e.meshctl(['ca', step, '--state-dir', e.stateDir, '--trust-domain', 'mesh.test', ...extra]);
    const certs = async () => JSON.parse((await e.meshctl(['certs', '--json'])).stdout) as Certs;
    const valid = async () => {
      for (let i = 0; i < 100; i++) {
        const c = await certs();
        if (c.workloads[0]?.state === 'valid') return c;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('no valid SVID within 10 s');
    };
    let agent = await e.startAgent(flags);
    const before = await valid();
    const oldIssuer = before.workloads[0]!.issuer;
    // A step while the agent runs with this state directory is refused: it holds the CA in memory.
    const refused = await ca('add-root');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/stop it first/);

    await stopProcess(agent.child);
    expect((await ca('add-root')).code).toBe(0);
    agent = await e.startAgent(flags);
    const step1 = await valid();
    expect(step1.ca.rotationPhase).toBe('new-root-in-bundle');
    expect(step1.bundle).toHaveLength(2);
    expect(step1.workloads[0]!.issuer).toBe(oldIssuer);
    expect(sample(await e.metrics(), 'mesh_trust_bundle_roots', { trust_domain: 'mesh.test' })).toEqual([2]);

    await stopProcess(agent.child);
    expect((await ca('switch-root')).code).toBe(0);
    agent = await e.startAgent(flags);
    const step2 = await valid();
    expect(step2.ca.rotationPhase).toBe('issuing-from-new-root');
    expect(step2.bundle).toHaveLength(2);
    expect(step2.workloads[0]!.issuer).not.toBe(oldIssuer);
    await stopProcess(agent.child);
    // The old root's SVIDs (1 h) are still valid: it stays.
    const early = await ca('remove-old-root');
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/old root signed leaves valid until/);
  }, 120_000);
});
