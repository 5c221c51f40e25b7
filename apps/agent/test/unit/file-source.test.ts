// The file source: the first read at start, a change delivered once, a broken or missing file delivered as an
// error once (not at every poll), and the old content applied again when it comes back.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterEach, expect, it } from 'vitest';

import { FileSource } from '../../src/config/file.js';
import type { ConfigUpdate } from '../../src/config/source.js';

const svc = (ip: string) => `apiVersion: v1\nkind: Service\nmetadata: { name: a }\nspec: { clusterIP: ${ip}, ports: [{ port: 80 }] }\n`;

let dir: string | undefined;
let source: FileSource | undefined;
afterEach(() => {
  source?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function until(updates: ConfigUpdate[], n: number) {
  const deadline = Date.now() + 5000;
  while (updates.length < n && Date.now() < deadline) await sleep(10);
}

it('delivers the first config, each change once, errors once, and old content again after an error', async () => {
  dir = mkdtempSync(join(tmpdir(), 'mesh-src-'));
  const file = join(dir, 'mesh.yaml');
  const write = (text: string) => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  };
  write(svc('127.9.0.1'));
  const updates: ConfigUpdate[] = [];
  source = new FileSource(file, { pollMs: 50, debounceMs: 10 });
  source.start((u) => updates.push(u));
  expect(updates).toHaveLength(1);
  expect(updates[0]!.snapshot?.services[0]!.spec.clusterIP).toBe('127.9.0.1');

  write(svc('127.9.0.2'));
  await until(updates, 2);
  expect(updates[1]!.snapshot?.services[0]!.spec.clusterIP).toBe('127.9.0.2');

  write('kind: [\n');
  await until(updates, 3);
  expect(updates[2]!.error?.message).toMatch(/YAML syntax/);

  rmSync(file);
  await until(updates, 4);
  expect(updates[3]!.error?.message).toMatch(/cannot read the config/);
  await sleep(300); // six polls: the same error is not delivered again
  expect(updates).toHaveLength(4);

  write(svc('127.9.0.2'));
  await until(updates, 5);
  expect(updates[4]!.snapshot?.services[0]!.spec.clusterIP).toBe('127.9.0.2');
  await sleep(200);
  expect(updates).toHaveLength(5);
});
