// A config file is applied only once its writer is done. Under load through a VIP, the file is emptied in place
// (`: > mesh.yaml`), rewritten through one open descriptor in 4 KiB chunks 300 ms apart, appended chunk by chunk
// (open, append, close, 300 ms), and written through a shell redirect by a command that stalls after a valid
// prefix (`kubectl … > mesh.yaml`). The content is laid out so that its first 8 KiB are a valid config without the
// service under load: a reader that takes a half-written file deletes it. No generation applied may lack a
// service, and no connection may fail.
import { appendFileSync, closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describePrivileged } from '@mesh/testkit';
import { expect, it } from 'vitest';

import { type MeshEnv, meshEnvPerTest, runLoad, splitConfig, startBackends, testNet } from './harness.js';

const NET = testNet();
const CHUNK = 4096;
const GAP_MS = 300;
const PADDING = 40;

/** PADDING services without backends, then a comment up to exactly 2 chunks, then the demo's split: a prefix of
 *  two chunks is a valid config that lacks web, web-a and web-b. */
function fullConfig(weights: [number, number]): string {
  let pad = '';
  for (let i = 1; i <= PADDING; i++) {
    pad += `apiVersion: v1\nkind: Service\nmetadata: { name: pad-${i} }\nspec: { clusterIP: ${NET}.2.${i}, ports: [{ port: 8080 }] }\n---\n`;
  }
  const fill = 2 * CHUNK - pad.length - '#\n---\n'.length;
  if (fill < 0) throw new Error('padding longer than two chunks');
  const text = pad + '#' + 'x'.repeat(fill) + '\n---\n' + splitConfig(NET, weights);
  if (text.length <= 2 * CHUNK) throw new Error('config shorter than three chunks');
  return text;
}
const SERVICES = PADDING + 3;

const chunksOf = (text: string) => Array.from({ length: Math.ceil(text.length / CHUNK) }, (_, i) => text.slice(i * CHUNK, (i + 1) * CHUNK));

interface Status {
  config: { generation: number };
  lastError?: { problems: string[] };
}

async function waitFor(e: MeshEnv, what: string, ok: (s: Status) => boolean): Promise<Status> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await e.api<Status>('/v1/status');
    if (ok(s)) return s;
    if (Date.now() > deadline) throw new Error(`${what}: not seen within 15 s: ${JSON.stringify(s)}`);
    await sleep(50);
  }
}

describePrivileged('config files mid-write', () => {
  const newEnv = meshEnvPerTest();

  it('an emptied file, a slow writer, a chunked appender and a shell redirect: no service removed, no connect fails', async () => {
    const e = await newEnv();
    const path = e.configPath;
    e.writeConfig(fullConfig([50, 50]));
    const agent = await e.startAgent();
    await startBackends(e);

    let started!: () => void;
    const loadStarted = new Promise<void>((r) => (started = r));
    const load = runLoad(e, NET, 50, 12, started);
    await loadStarted;

    // `: > mesh.yaml`: refused, the previous config stays.
    writeFileSync(path, '');
    const empty = await waitFor(e, 'the empty file refused', (s) => (s.lastError?.problems ?? []).some((p) => /holds no objects/.test(p)));
    expect(empty.config.generation).toBe(1);
    expect(empty.lastError!.problems.join('\n')).toContain(`${path}: the file holds no objects`);

    // One descriptor, 4 KiB every 300 ms (a slow `tee`, a config tool streaming its output).
    const fd = openSync(path, 'w');
    for (const c of chunksOf(fullConfig([60, 40]))) {
      writeSync(fd, c);
      await sleep(GAP_MS);
    }
    closeSync(fd);
    await waitFor(e, 'the slow writer applied', (s) => s.config.generation === 2);

    // Open, append, close per chunk: between chunks no one holds the file open.
    const [first, ...rest] = chunksOf(fullConfig([70, 30]));
    writeFileSync(path, first!);
    for (const c of rest) {
      await sleep(GAP_MS);
      appendFileSync(path, c);
    }
    await waitFor(e, 'the appender applied', (s) => s.config.generation === 3);

    // `kubectl get … > mesh.yaml`: the shell truncates, its command writes a valid prefix, then stalls for a
    // second (longer than any settle time) before the rest: only the open descriptor says it is not done.
    const src = join(e.configDir, 'source.txt');
    writeFileSync(src, fullConfig([80, 20]));
    const script = `exec > "$1"; head -c ${2 * CHUNK} "$2"; sleep 1.5; tail -c +${2 * CHUNK + 1} "$2"`;
    const shell = await e.procs.run('/bin/sh', ['-c', script, 'sh', path, src], { timeoutMs: 10_000 });
    expect(shell.code).toBe(0);
    await waitFor(e, 'the redirect applied', (s) => s.config.generation === 4);
    const stepsDone = Date.now();

    const r = await load;
    expect(Date.now()).toBeGreaterThan(stepsDone); // every step ran while the load did
    expect(r.errors).toEqual([]);
    expect(r.failed).toBe(0);
    expect(r.ok).toBe(50 * 12);
    const applied = agent.logs().filter((l) => l.msg === 'config applied');
    expect(applied.map((l) => [l.generation, l.serviceAddresses])).toEqual([1, 2, 3, 4].map((g) => [g, SERVICES]));
    const services = await e.api<{ services: { service: string; backends: { weight: number }[] }[] }>('/v1/services');
    expect(services.services.find((s) => s.service === 'default/web')!.backends.map((b) => b.weight)).toEqual([80, 20]);
  });
});
