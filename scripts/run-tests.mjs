// Runs vitest (all tiers, or what the arguments select) and ends with one line "N passed, N failed[, N skipped]",
// the line CI reads. The exit status is vitest's, and non-zero whenever a test failed.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const report = join(tmpdir(), `mesh-vitest-${process.pid}.json`);
const args = ['--no-install', 'vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)];
const r = spawnSync('npx', args, { stdio: 'inherit' });

let passed = 0, failed = 0, skipped = 0;
if (existsSync(report)) {
  const j = JSON.parse(readFileSync(report, 'utf8'));
  passed = j.numPassedTests;
  failed = j.numFailedTests;
  skipped = j.numPendingTests + j.numTodoTests;
  // A file that fails to load (syntax error, failing hook) has no test results but must count as a failure.
  failed += j.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0).length;
  rmSync(report, { force: true });
} else {
  failed = 1;
}
const status = r.status ?? 1;
if (status !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : status);
