import { defineConfig } from 'vitest/config';

// Test tiers (DEVELOPERS.md, Tests): unit needs nothing; kernel loads programs and runs them through
// BPF_PROG_TEST_RUN; integration attaches to cgroups and interfaces and drives real sockets; e2e starts the
// agent and meshctl binaries as a user would.
// Kernel and integration tests need root; under MESH_REQUIRE_BPF=1 a missing privilege fails them.
const tier = (name: string, timeout: number, extra: string[] = []) => ({
  extends: true as const,
  test: {
    name,
    include: [`packages/*/test/${name}/**/*.test.ts`, `apps/*/test/${name}/**/*.test.ts`, ...extra],
    testTimeout: timeout,
    hookTimeout: timeout,
  },
});

export default defineConfig({
  test: {
    pool: 'forks',
    teardownTimeout: 20_000,
    projects: [tier('unit', 10_000), tier('kernel', 30_000), tier('integration', 120_000, ['native/dataplane/test/**/*.test.ts']), tier('e2e', 180_000)],
  },
});
