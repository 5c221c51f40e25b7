// Done-when 3 of issue 22: `meshctl top` in a real terminal (tmux) shows rows that agree with `meshctl stat`,
// redraws to the terminal's new size when it is resized, and quits with status 0 on `q`. And `meshctl edges`
// lists who talks to whom with each side's identity.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { demoConfig, productpageLoad, startReviews } from './demo-topology.js';
import { MESHCTL_BIN, meshEnvPerTest, type MeshEnv, testNet } from './harness.js';

const NET = testNet();
const RATE = 40;
const SECONDS = 45;

interface StatRow {
  direction: string;
  source: string;
  destination: string;
  service: string;
  protocol: string;
  rpc: string;
  rps: number;
}

/** A tmux server of the test's own (-L), killed at the end. */
function tmux(e: MeshEnv) {
  const sock = e.name;
  const cmd = (...args: string[]) => e.procs.run('tmux', ['-L', sock, ...args], { timeoutMs: 10_000 });
  return {
    cmd,
    capture: async () => {
      const r = await cmd('capture-pane', '-p', '-t', 'top');
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.split('\n');
    },
    kill: () => cmd('kill-server'),
  };
}

/** Polls `capture` until `ok` holds (at most `ms`); returns the last capture. */
async function until(capture: () => Promise<string[]>, ok: (lines: string[]) => boolean, ms = 15_000): Promise<string[]> {
  const end = Date.now() + ms;
  let lines = await capture();
  while (!ok(lines) && Date.now() < end) {
    await sleep(200);
    lines = await capture();
  }
  return lines;
}

/** The table of a frame: header cells and rows, split on runs of two or more blanks. */
function parseFrame(lines: string[]): { head: string[]; rows: Record<string, string>[] } {
  const at = lines.findIndex((l) => /^\s*(SIDE|SOURCE)\s/.test(l));
  if (at < 0) return { head: [], rows: [] };
  const head = lines[at]!.trim().split(/\s{2,}/);
  const rows = lines
    .slice(at + 1)
    .filter((l) => l.trim())
    .map((l) => Object.fromEntries(l.trim().split(/\s{2,}/).map((c, i) => [head[i]!, c])));
  return { head, rows };
}

describePrivileged(
  'meshctl top and meshctl edges',
  () => {
    const newEnv = meshEnvPerTest();

    it('top under tmux: rows agree with meshctl stat; a resize redraws to the new width; q quits with 0', async () => {
      const e = await newEnv();
      e.writeConfig(demoConfig(NET, [3, 1]));
      await e.startAgent();
      await startReviews(e);
      const load = await productpageLoad(e, NET, RATE, SECONDS);
      await sleep(Math.max(0, load.started + 12_000 - Date.now()));

      const t = tmux(e);
      const exitFile = join(e.tempDir('top'), 'exit');
      try {
        // A long interval: after the first frame, only a resize redraws.
        const started = await t.cmd('new-session', '-d', '-s', 'top', '-x', '140', '-y', '30', `${process.execPath} ${MESHCTL_BIN} --api-socket ${e.apiSocket} top --interval 600; echo $? > ${exitFile}`);
        expect(started.code, started.stderr).toBe(0);
        const wide = parseFrame(await until(t.capture, (l) => parseFrame(l).rows.length >= 4));
        const stat = await e.meshctl(['stat', '--json']);
        expect(stat.code, stat.stderr).toBe(0);
        const want = (JSON.parse(stat.stdout) as { pairs: StatRow[] }).pairs;

        expect(wide.head).toEqual(['SIDE', 'SOURCE', 'DESTINATION', 'SERVICE', 'PROTOCOL', 'RPC', 'REQS', 'RPS', 'SUCCESS', 'P50', 'P95', 'P99']);
        type Key = { side: string; source: string; destination: string; service: string; protocol: string; rpc: string };
        const key = (r: Key) => `${r.side} ${r.source} ${r.destination} ${r.service} ${r.protocol} ${r.rpc}`;
        const statKey = (p: StatRow) => key({ side: p.direction, source: p.source, destination: p.destination, service: p.service || '-', protocol: p.protocol, rpc: p.rpc || '-' });
        const got = wide.rows.map((r) => ({ side: r.SIDE!, source: r.SOURCE!, destination: r.DESTINATION!, service: r.SERVICE!, protocol: r.PROTOCOL!, rpc: r.RPC!, rps: Number(r.RPS) }));
        expect(got.map(key).sort()).toEqual(want.map(statKey).sort());
        expect(got.some((r) => r.source === 'default/productpage' && r.destination === 'default/reviews-v1')).toBe(true);
        for (const p of want) {
          const r = got.find((x) => key(x) === statKey(p))!;
          // Two windows a moment apart: the same rate within 40 % (or 3 requests/s) — a wrong row or a rate off by a
          // factor is far outside it. 20 % failed once in CI beside another run and five builds (top 8, stat 12.06
          // requests/s on the quarter of the split): the load's client stalls on such a machine.
          expect(Math.abs(r.rps - p.rps), `${key(r)}: top ${r.rps}, stat ${p.rps}`).toBeLessThanOrEqual(Math.max(3, 0.4 * p.rps));
        }
        // Busiest first.
        expect(got.map((r) => r.rps)).toEqual([...got.map((r) => r.rps)].sort((a, b) => b - a));

        // Narrower: a frame made for 60 columns (the columns that matter, names shortened), not the old one cut.
        expect((await t.cmd('resize-window', '-t', 'top', '-x', '60', '-y', '20')).code).toBe(0);
        const narrow = await until(t.capture, (l) => parseFrame(l).head[0] === 'SOURCE');
        const head = parseFrame(narrow).head;
        expect(head.slice(0, 2)).toEqual(['SOURCE', 'DESTINATION']);
        expect(head).toEqual(expect.arrayContaining(['RPS', 'SUCCESS', 'P99']));
        expect(head).not.toContain('P50');
        expect(narrow.every((l) => l.length <= 60)).toBe(true);
        expect(parseFrame(narrow).rows.length).toBe(want.length);
        // Wider again: every column back.
        expect((await t.cmd('resize-window', '-t', 'top', '-x', '150', '-y', '30')).code).toBe(0);
        const back = await until(t.capture, (l) => parseFrame(l).head[0] === 'SIDE');
        expect(parseFrame(back).head).toHaveLength(12);

        expect((await t.cmd('send-keys', '-t', 'top', 'q')).code).toBe(0);
        for (let i = 0; i < 100 && !existsSync(exitFile); i++) await sleep(100);
        expect(readFileSync(exitFile, 'utf8').trim()).toBe('0');
      } finally {
        await t.kill();
      }
      const result = await load.done;
      expect(result.failed, result.errors.join(', ')).toBe(0);
    }, 120_000);

    it('edges: productpage → reviews-v1 and → reviews-v2 through reviews, with both SPIFFE IDs', async () => {
      const e = await newEnv();
      e.writeConfig(demoConfig(NET, [1, 1]));
      await e.startAgent();
      await startReviews(e);
      const load = await productpageLoad(e, NET, 20, 3);
      const result = await load.done;
      expect(result.failed, result.errors.join(', ')).toBe(0);
      const r = await e.meshctl(['edges', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const edges = (JSON.parse(r.stdout) as { edges: Record<string, string>[] }).edges;
      const pp = edges.filter((x) => x.source === 'default/productpage');
      expect(pp.map((x) => [x.destination, x.service, x.protocols])).toEqual([
        ['default/reviews-v1', 'reviews', 'HTTP/1.1'],
        ['default/reviews-v2', 'reviews', 'HTTP/1.1'],
      ]);
      expect(pp.reduce((a, x) => a + Number(x.reqs), 0)).toBe(60);
      for (const x of pp) {
        expect(x.source_identity).toMatch(/^spiffe:\/\/[^/]+\/ns\/default\/sa\/productpage$/);
        expect(x.destination_identity).toMatch(/^spiffe:\/\/[^/]+\/ns\/default\/sa\/reviews$/);
      }
      const text = await e.meshctl(['edges']);
      expect(text.stdout).toMatch(/default\/productpage\s+default\/reviews-v1\s+reviews\s+HTTP\/1.1\s+spiffe:\/\//);
    }, 60_000);
  },
  { tools: ['tmux'] },
);
