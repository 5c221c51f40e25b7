// The rotation in real time, with a short TTL (6 s, for 5 lifetimes, then the CA gone for two lifetimes, then
// back): the fake-clock unit test runs the 30 s × 3 min; this one checks the same with real timers, real
// WebCrypto latency and a real CA outage (the issuer's files renamed away). MESH_MTLS_REALTIME_TTL_MS=30000 runs
// it with the TTL (about 3.5 minutes).
import { afterAll, describe, expect, it } from 'vitest';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRoot, createIntermediate, ExternalCa, SvidRotator, workloadSpiffeId, validateSvid, TrustBundleSet, type RotationEvent } from '../../src/index.js';
import { tempDir, writeIssuerDir, TD } from '../support.js';

const TTL = Number(process.env.MESH_MTLS_REALTIME_TTL_MS ?? 6_000);
const t = tempDir('rotrt');
afterAll(() => t.remove());

describe('SvidRotator (real time)', () => {
  it(`TTL ${TTL / 1000} s: renews at 40–60 % of the lifetime, never hands out an expired SVID, survives a CA outage of two lifetimes`, async () => {
    const dir = join(t.dir, 'issuer');
    const root = await createRoot({ trustDomain: TD });
    await writeIssuerDir(dir, await createIntermediate(root, { trustDomain: TD }), root);
    const ca = new ExternalCa({ dir, trustDomain: TD });
    const bundles = new TrustBundleSet([await ca.bundle()]);
    const events: RotationEvent[] = [];
    const rotator = new SvidRotator({ ca, ttlMs: TTL, onEvent: (e) => events.push(e) });
    try {
      rotator.add('web', workloadSpiffeId(TD, 'default', 'web'));
      await rotator.idle();
      // Every 50 ms: the SVID handed out is inside its validity and validates.
      const watch = async (untilMs: number, check: (now: number) => Promise<void>) => {
        for (let i = 0; i < 10_000 && Date.now() < untilMs; i++) {
          await check(Date.now());
          await sleep(50);
        }
      };
      const validNow = async (now: number) => {
        const s = rotator.current('web');
        expect(s, `an SVID at ${new Date(now).toISOString()}`).toBeDefined();
        expect(now).toBeLessThan(s!.notAfter.getTime());
        const v = await validateSvid([s!.certificate, ...s!.intermediates], bundles, { now });
        expect(v.ok ? 'ok' : v.reason).toBe('ok');
      };
      await watch(Date.now() + 5 * TTL, validNow);
      const renewals = events.filter((e): e is Extract<RotationEvent, { type: 'issued' }> => e.type === 'issued' && e.previous !== undefined);
      // 5 lifetimes at 40–60 % each: at least 8 renewals.
      expect(renewals.length).toBeGreaterThanOrEqual(8);
      for (const e of renewals) {
        const nb = e.previous!.notBefore.getTime();
        const life = e.previous!.notAfter.getTime() - nb;
        // Scheduled inside the window; started at most 300 ms late (timer lateness on a loaded machine).
        expect((e.scheduledAt! - nb) / life).toBeGreaterThanOrEqual(0.4);
        expect((e.scheduledAt! - nb) / life).toBeLessThanOrEqual(0.6);
        expect(e.at - e.scheduledAt!).toBeLessThan(300);
      }

      // The CA goes away for two lifetimes.
      renameSync(dir, `${dir}.away`);
      const last = rotator.current('web')!;
      const outageEnd = Date.now() + 2 * TTL;
      await watch(outageEnd, async (now) => {
        const s = rotator.current('web');
        if (now < last.notAfter.getTime() - 20) expect(s?.serial).toBe(last.serial);
        if (s) expect(Date.now()).toBeLessThan(s.notAfter.getTime());
        if (now > last.notAfter.getTime() + 20) expect(rotator.status()[0]!.state).toBe('expired');
      });
      expect(rotator.current('web')).toBeUndefined();
      expect(events.filter((e) => e.type === 'expired')).toHaveLength(1);
      expect(events.some((e) => e.type === 'failed')).toBe(true);

      // Back: a new SVID within the retry cap (TTL/10) plus issuance time.
      renameSync(`${dir}.away`, dir);
      const back = Date.now();
      for (let i = 0; i < 200 && !rotator.current('web'); i++) await sleep(20);
      expect(rotator.current('web')).toBeDefined();
      expect(Date.now() - back).toBeLessThan(TTL / 10 + 1000);
      expect(rotator.status()[0]).toMatchObject({ state: 'valid', consecutiveFailures: 0 });
    } finally {
      await rotator.close();
    }
  }, 8 * TTL + 50_000);
});
