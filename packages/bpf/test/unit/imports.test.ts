// The modules of src/ form a layered graph: no module imports (even for types only) a module that imports it
// back, so each can be read, and tree-shaken, from the bottom up (program ← link, as cilium/ebpf's link package
// sits above ebpf.Program).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  for (const f of files) {
    const text = readFileSync(join(src, f), 'utf8');
    const deps = [...text.matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)\.js';/gms)].map((m) => join(f, '..', m[1]!) + '.ts');
    graph.set(f, deps);
  }
  return graph;
}

function cycles(graph: Map<string, string[]>): string[] {
  const found: string[] = [];
  const state = new Map<string, 'active' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, 'active');
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      if (state.get(d) === 'active') found.push([...stack.slice(stack.indexOf(d)), d].join(' → '));
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  return found;
}

describe('@mesh/bpf module graph', () => {
  it('has no import circle', () => {
    const graph = importGraph();
    expect(graph.get('program.ts')?.length).toBeGreaterThan(0);
    expect(cycles(graph)).toEqual([]);
  });
});
