// A family list the agent cannot run (two families on one pin directory, or whose map names would collide in
// status) is refused before anything is loaded, naming the family.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, expect, it } from 'vitest';

import { MeshDatapath } from '../../src/datapath.js';
import { FAMILIES, type Family, splitFamily } from '../../src/families.js';
import { createLogger } from '../../src/log.js';

// Roots in a directory of the test's own (a list that were not refused would make its directories there).
const dir = mkdtempSync(join(tmpdir(), 'mesh-families-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const open = (families: readonly Family[]) =>
  () => MeshDatapath.open({ pinRoot: join(dir, 'pins'), cgroupRoot: join(dir, 'cgroup'), log: createLogger({ level: 'error' }), families });

it.each([
  ['a second family named split', [...FAMILIES, { ...splitFamily, mapPrefix: 'other_' }], /families: "split" twice/],
  ['two families with the prefix split_', [...FAMILIES, { ...splitFamily, name: 'other' }], /families "split" and "other" both prefix their map names with "split_"/],
  ['a name that is not a directory name', [...FAMILIES, { ...splitFamily, name: '../x', mapPrefix: 'x_' }], /family name "..\/x"/],
] as const)('%s is refused before anything is loaded', (_what, families, message) => {
  expect(open(families)).toThrow(message);
  expect(readdirSync(dir)).toEqual([]);
});
