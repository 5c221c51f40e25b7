import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, pidAlive, processes, waitForExit, waitForLine } from '../../src/index.js';

// A separate Node process that makes a namespace, a veth, a cgroup and processes in each, then dies without
// closing any of them — the way a test worker dies when a test throws past its cleanup or vitest stops it.
const SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const LEAKER = `
import { createNetns, vethPair } from './netns.js';
import { createCgroup } from './cgroup.js';
const ns = await createNetns('tkleak');
const peer = await createNetns('tkleak');
const veth = await vethPair(ns, null, { addrA: '198.18.9.1' });
const cg = await createCgroup('tkleak');
const inNs = ns.spawn('sleep', ['60']);
const inCg = cg.spawn('sleep', ['60']);
await new Promise((r) => setTimeout(r, 100));
console.log(JSON.stringify({ netns: [ns.name, peer.name], hostVeth: veth.nameB, cgroup: cg.path, pids: [inNs.pid, inCg.pid] }));
const how = process.argv[2];
if (how === 'throw') throw new Error('a test blew up');
if (how === 'exit') process.exit(1);
setInterval(() => {}, 1000); // 'signal': wait to be stopped
`;

// Transpiled copy of src/ plus the leaker script, made once per run of this file.
let dir: string;

interface Leaked {
  netns: string[];
  hostVeth: string;
  cgroup: string;
  pids: number[];
}

async function leak(how: 'throw' | 'exit' | 'signal'): Promise<Leaked> {
  const child = processes.spawn(process.execPath, [join(dir, 'leaker.mjs'), how]);
  const [line] = await waitForLine(child, /^\{.*\}$/, 20_000);
  const leaked = JSON.parse(line) as Leaked;
  if (how === 'signal') child.kill('SIGTERM'); // what vitest does to a fork worker it is done with
  await waitForExit(child, 20_000);
  return leaked;
}

function expectNothingLeft(leaked: Leaked): void {
  const netnsList = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const name of leaked.netns) expect(netnsList).not.toMatch(new RegExp(`^${name}\\b`, 'm'));
  expect(execFileSync('ip', ['-br', 'link'], { encoding: 'utf8' })).not.toContain(leaked.hostVeth);
  expect(existsSync(leaked.cgroup)).toBe(false);
  for (const pid of leaked.pids) expect(pidAlive(pid)).toBe(false);
}

describePrivileged('cleanup of what a dying process left open', () => {
  beforeAll(() => {
    // Node 20 cannot run TypeScript; transpile the modules the leaker needs (all but the vitest-bound env.ts).
    dir = mkdtempSync(join(tmpdir(), 'testkit-leak-'));
    for (const file of readdirSync(SRC).filter((f) => f.endsWith('.ts') && f !== 'env.ts' && f !== 'index.ts')) {
      const { outputText } = ts.transpileModule(readFileSync(join(SRC, file), 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      });
      writeFileSync(join(dir, file.replace(/\.ts$/, '.js')), outputText);
    }
    writeFileSync(join(dir, 'leaker.mjs'), LEAKER);
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    // The modules import the testkit's dependencies (@mesh/bpf's codec among them): resolved from its node_modules.
    symlinkSync(join(SRC, '..', 'node_modules'), join(dir, 'node_modules'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each(['throw', 'exit', 'signal'] as const)('removes it all when the process ends by %s', async (how) => {
    expectNothingLeft(await leak(how));
  });
}, { tools: ['ip'] });
