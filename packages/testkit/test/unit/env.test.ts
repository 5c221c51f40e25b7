import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bpfRequired, privileges, run } from '../../src/index.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/gating/', import.meta.url));
const VITEST = join(dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs');

interface JsonReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { assertionResults: { title: string; status: string; failureMessages: string[] }[] }[];
}

// A child vitest over the fixture, with this worker's VITEST_* variables removed so it starts as a fresh run.
async function runFixture(env: NodeJS.ProcessEnv): Promise<JsonReport> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST') && k !== 'TEST'));
  delete clean.MESH_REQUIRE_BPF;
  const r = await run(process.execPath, [VITEST, 'run', '--root', FIXTURES, '--config', join(FIXTURES, 'vitest.config.ts'), '--reporter=json'], {
    cwd: FIXTURES,
    env: { ...clean, ...env },
    timeoutMs: 60_000,
  });
  return JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as JsonReport;
}

describe('describePrivileged', () => {
  it('skips a suite whose requirements are missing', async () => {
    const report = await runFixture({});
    expect(report).toMatchObject({ numPassedTests: 0, numFailedTests: 0, numPendingTests: 1 });
  }, 60_000);

  it('turns the skip into a failure that names what is missing when MESH_REQUIRE_BPF=1', async () => {
    const report = await runFixture({ MESH_REQUIRE_BPF: '1' });
    expect(report).toMatchObject({ numFailedTests: 1, numPendingTests: 0 });
    const [result] = report.testResults[0]!.assertionResults;
    expect(result!.title).toBe('has the privileges it needs');
    expect(result!.failureMessages.join('\n')).toContain('the testkit-no-such-tool tool');
  }, 60_000);
});

describe('privileges', () => {
  it('reports what is missing in words, and nothing else', () => {
    const p = privileges();
    expect(p.missing.length === 0).toBe(p.root && p.bpffs && p.cgroup2 !== undefined);
    expect(bpfRequired()).toBe(process.env.MESH_REQUIRE_BPF === '1');
  });
});
