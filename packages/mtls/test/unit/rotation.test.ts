// The rotation schedule on a fake clock, with the issue's numbers: TTL 30 s for 3 minutes, then the CA (an
// external issuer whose files disappear) unavailable for two lifetimes, then back.
import { afterEach, describe, expect, it } from 'vitest';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { BuiltinCa, createRoot, createIntermediate, ExternalCa, SvidRotator, workloadSpiffeId, type CertificateAuthority, type RotationEvent } from '../../src/index.js';
import { FakeClock, tempDir, writeIssuerDir, TD } from '../support.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

const TTL = 30_000;

async function setup(start: number) {
  const t = tempDir('rotu');
  cleanups.push(t.remove);
  const dir = join(t.dir, 'issuer');
  // The issuer lives for a day from `start` in fake time, so it outlasts every step of the test.
  const root = await createRoot({ trustDomain: TD, now: start - 60_000 });
  await writeIssuerDir(dir, await createIntermediate(root, { trustDomain: TD, now: start - 60_000, ttlMs: 86_400_000 }), root);
  const clock = new FakeClock(start);
  const events: RotationEvent[] = [];
  const ca = new ExternalCa({ dir, trustDomain: TD, now: () => clock.now() });
  const rotator = new SvidRotator({ ca, clock, ttlMs: TTL, onEvent: (e) => events.push(e) });
  cleanups.push(() => void rotator.close());
  return { dir, clock, events, rotator, settle: () => rotator.idle() };
}

describe('SvidRotator (fake clock)', () => {
  it('TTL 30 s for 3 minutes: renewals between 40 % and 60 % of the lifetime, never an expired SVID', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const { clock, events, rotator, settle } = await setup(start);
    rotator.add('web', workloadSpiffeId(TD, 'default', 'web'));
    await settle();
    expect(rotator.current('web')).toBeDefined();
    for (let t = start; t <= start + 180_000; t += 100) {
      await clock.advanceTo(t, settle);
      const s = rotator.current('web');
      expect(s, `no SVID at +${t - start} ms`).toBeDefined();
      expect(t).toBeGreaterThanOrEqual(s!.notBefore.getTime());
      expect(t).toBeLessThan(s!.notAfter.getTime());
    }
    const renewals = events.filter((e): e is Extract<RotationEvent, { type: 'issued' }> => e.type === 'issued' && e.previous !== undefined);
    // 180 s at 12–18 s per renewal.
    expect(renewals.length).toBeGreaterThanOrEqual(10);
    expect(renewals.length).toBeLessThanOrEqual(15);
    const fractions = renewals.map((e) => (e.at - e.previous!.notBefore.getTime()) / (e.previous!.notAfter.getTime() - e.previous!.notBefore.getTime()));
    for (const f of fractions) {
      expect(f).toBeGreaterThanOrEqual(0.4);
      expect(f).toBeLessThanOrEqual(0.6);
    }
    // The jitter spreads them: not all at one point.
    expect(Math.max(...fractions) - Math.min(...fractions)).toBeGreaterThan(0.02);
    expect(events.filter((e) => e.type !== 'issued')).toEqual([]);
    expect(rotator.renewals).toEqual({ success: renewals.length + 1, failure: 0 });
  });

  it('CA unavailable for two lifetimes: keeps the last good SVID until it expires, then no identity; recovers when the CA returns', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const { dir, clock, events, rotator, settle } = await setup(start);
    rotator.add('web', workloadSpiffeId(TD, 'default', 'web'));
    await settle();
    const last = rotator.current('web')!;
    renameSync(dir, `${dir}.away`);
    const outageEnd = start + 2 * TTL;
    let expiredSeenAt: number | undefined;
    for (let t = start; t <= outageEnd; t += 100) {
      await clock.advanceTo(t, settle);
      const s = rotator.current('web');
      if (t < last.notAfter.getTime()) {
        expect(s?.serial, `the last good SVID is kept at +${t - start} ms`).toBe(last.serial);
      } else {
        expect(s, `no expired SVID handed out at +${t - start} ms`).toBeUndefined();
        expiredSeenAt ??= t;
        const st = rotator.status()[0]!;
        expect(st).toMatchObject({ workload: 'web', state: 'expired' });
        expect(st.lastError).toMatch(/tls\.crt: cannot read \(ENOENT\)/);
      }
    }
    expect(expiredSeenAt).toBe(last.notAfter.getTime());
    const expired = events.filter((e) => e.type === 'expired');
    expect(expired).toEqual([{ type: 'expired', workload: 'web', at: last.notAfter.getTime(), notAfter: last.notAfter.getTime() }]);
    const failures = events.filter((e) => e.type === 'failed');
    expect(failures.length).toBeGreaterThan(5);
    // Retries back off to at most TTL/10.
    const gaps = failures.slice(1).map((f, i) => f.at - failures[i]!.at);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(TTL / 10);
    expect(rotator.renewals.failure).toBe(failures.length);

    renameSync(`${dir}.away`, dir);
    for (let t = outageEnd; t <= outageEnd + TTL / 10 + 100 && !rotator.current('web'); t += 100) await clock.advanceTo(t, settle);
    const back = rotator.current('web');
    expect(back).toBeDefined();
    expect(back!.serial).not.toBe(last.serial);
    expect(rotator.status()[0]).toMatchObject({ state: 'valid', consecutiveFailures: 0, serial: back!.serial });
  });

  it('sorts its status without localeCompare (ICU collation data would cost the agent ~2.7 MiB of RSS)', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const { rotator, settle } = await setup(start);
    rotator.setWorkloads(new Map([['b', workloadSpiffeId(TD, 'ns', 'b')], ['a', workloadSpiffeId(TD, 'ns', 'a')]]));
    await settle();
    const localeCompare = String.prototype.localeCompare;
    String.prototype.localeCompare = () => {
      throw new Error('localeCompare called');
    };
    try {
      expect(rotator.status().map((s) => s.workload)).toEqual(['a', 'b']);
    } finally {
      String.prototype.localeCompare = localeCompare;
    }
  });

  it('issues only for the workloads it is given, and drops removed ones', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const { rotator, settle } = await setup(start);
    rotator.setWorkloads(new Map([['a', workloadSpiffeId(TD, 'ns', 'a')], ['b', workloadSpiffeId(TD, 'ns', 'b')]]));
    await settle();
    expect(rotator.status().map((s) => [s.workload, s.state])).toEqual([['a', 'valid'], ['b', 'valid']]);
    rotator.setWorkloads(new Map([['b', workloadSpiffeId(TD, 'ns', 'b')]]));
    expect(rotator.status().map((s) => s.workload)).toEqual(['b']);
    expect(rotator.current('a')).toBeUndefined();
    expect(() => new SvidRotator({ ca: undefined as never, ttlMs: 10 })).toThrow(/ttlMs must be an integer ≥ 1000/);
  });

  it('issues at most `concurrency` SVIDs at once: 200 due together are queued, each issued once; a renewal already due is not doubled', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const t = tempDir('rotc');
    cleanups.push(t.remove);
    const inner = await BuiltinCa.open({ stateDir: t.dir, trustDomain: TD });
    let inFlight = 0;
    let most = 0;
    let issued = 0;
    const ca: CertificateAuthority = {
      kind: 'builtin',
      trustDomain: TD,
      bundle: () => inner.bundle(),
      async issue(id, o) {
        most = Math.max(most, ++inFlight);
        try {
          return await inner.issue(id, o);
        } finally {
          inFlight--;
          issued++;
        }
      },
    };
    const clock = new FakeClock(start);
    const rotator = new SvidRotator({ ca, clock, ttlMs: TTL, concurrency: 3 });
    cleanups.push(() => void rotator.close());
    rotator.setWorkloads(new Map(Array.from({ length: 200 }, (_, i) => [`w${i}`, workloadSpiffeId(TD, 'ns', `sa-${i}`)])));
    const due = rotator.pending;
    await rotator.idle();
    expect(most).toBe(3);
    expect(issued).toBe(200);
    expect(rotator.renewals).toEqual({ success: 200, failure: 0 });
    expect([due, rotator.pending]).toEqual([200, 0]);
    // Two root switches in a row: one renewal each, not two.
    rotator.renewAll();
    rotator.renewAll();
    await rotator.idle();
    expect(issued).toBe(400);
    expect(() => new SvidRotator({ ca, ttlMs: TTL, concurrency: 0 })).toThrow(/concurrency must be an integer ≥ 1, got 0/);
  });
});
