// Where the agent's memory goes with the bench:agent 1k config, stage by stage, in this process: run with
//   node --expose-gc bench/agent/profile.mjs
// Every figure is V8 heap in MiB after a full GC with the stage's result held (retained), or, for "peak",
// the heap V8 had to grow to while the stage ran (no GC in between). Prints JSON.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getHeapStatistics } from 'node:v8';

import { root } from '../lib.mjs';
import { bigConfig } from './config.mjs';

if (typeof gc !== 'function') throw new Error('run with node --expose-gc');
const dist = (p) => import(join(root, 'apps/agent/dist', p));
const { loadConfig } = await dist('config/file.js');
const { resolveConfig } = await dist('config/objects.js');
const { ConfigResolver } = await dist('identity.js');
const { compile } = await import(join(root, 'packages/split/dist/index.js'));
const yaml = createRequire(join(root, 'apps/agent/package.json'))('yaml');

const MiB = (b) => Math.round((b / 2 ** 20) * 10) / 10;
const heap = () => (gc(), gc(), process.memoryUsage().heapUsed);
const out = { rss_at_start: MiB(process.memoryUsage().rss), stages: {} };
let held; // keeps each stage's result alive across the GC that measures it
function stage(name, fn) {
  const before = heap();
  const total0 = getHeapStatistics().total_heap_size;
  const t = performance.now();
  held = fn();
  const ms = Math.round(performance.now() - t);
  const peakGrowth = getHeapStatistics().total_heap_size - total0;
  out.stages[name] = { retained_mb: MiB(heap() - before), heap_growth_mb: MiB(Math.max(0, peakGrowth)), ms };
  return held;
}

const dir = mkdtempSync(join(tmpdir(), 'mesh-agent-profile-'));
try {
  const path = join(dir, 'mesh.yaml');
  writeFileSync(path, bigConfig());
  const text = readFileSync(path, 'utf8');
  out.config_bytes = text.length;
  const base = heap();

  // What the yaml package builds for parseAllDocuments (what config/file.ts calls): every Document at once.
  const docs = stage('yaml_documents', () => yaml.parseAllDocuments(text, { lineCounter: new yaml.LineCounter(), uniqueKeys: true }));
  const objs = stage('plain_objects_from_documents', () => docs.map((d) => d.toJS({ maxAliasCount: 100 })));
  held = undefined;
  docs.length = 0;
  // The same objects from JSON text, for scale.
  const json = JSON.stringify(objs);
  stage('json_parse_same_objects', () => JSON.parse(json));
  held = undefined;

  // The agent's path: loadConfig (read + parse + objects) → resolveConfig (validate, compile) → ConfigResolver.
  const snap = stage('loadConfig', () => loadConfig(path));
  const resolved = stage('resolveConfig', () => resolveConfig(snap));
  const compiled = stage('compile_again', () => compile(resolved.routing));
  stage('ConfigResolver', () => new ConfigResolver('/nonexistent', resolved.workloads, compiled.services));
  out.retained_after_apply_mb = MiB(heap() - base);
  held = [snap, resolved, compiled, objs];

  // Streaming alternative: compose one document at a time and drop its AST once converted.
  held = undefined;
  stage('yaml_streaming_composer', () => {
    const lc = new yaml.LineCounter();
    const parser = new yaml.Parser(lc.addNewLine);
    const composer = new yaml.Composer();
    const res = [];
    for (const doc of composer.compose(parser.parse(text))) res.push(doc.toJS());
    return res;
  });
  out.rss_at_end = MiB(process.memoryUsage().rss);
  out.heap_total_at_end = MiB(getHeapStatistics().total_heap_size);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out, null, 2));
