import { describe, expect, it } from 'vitest';
import { jsonPatch, mergePatch, strategicMergePatch } from '../../src/kube/patch.js';
import { RESOURCES } from '../../src/kube/resources.js';

const services = RESOURCES.find((r) => r.plural === 'services')!;
const pods = RESOURCES.find((r) => r.plural === 'pods')!;

describe('JSON merge patch (RFC 7386)', () => {
  const rows: [unknown, unknown, unknown][] = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  it.each(rows)('%j + %j = %j', (target, patch, expected) => {
    expect(mergePatch(target, patch)).toEqual(expected);
  });
});

describe('JSON patch (RFC 6902)', () => {
  const doc = { a: { b: [1, 2, 3], 'c/d': 'x', 'e~f': 'y' } };
  const rows: [string, unknown[], unknown][] = [
    ['add to a map', [{ op: 'add', path: '/a/n', value: 1 }], { a: { ...doc.a, n: 1 } }],
    ['add into a list', [{ op: 'add', path: '/a/b/1', value: 9 }], { a: { ...doc.a, b: [1, 9, 2, 3] } }],
    ['append with -', [{ op: 'add', path: '/a/b/-', value: 4 }], { a: { ...doc.a, b: [1, 2, 3, 4] } }],
    ['replace in a list', [{ op: 'replace', path: '/a/b/0', value: 0 }], { a: { ...doc.a, b: [0, 2, 3] } }],
    ['remove, escaped keys', [{ op: 'remove', path: '/a/c~1d' }, { op: 'remove', path: '/a/e~0f' }], { a: { b: [1, 2, 3] } }],
    ['move', [{ op: 'move', from: '/a/b', path: '/b' }], { a: { 'c/d': 'x', 'e~f': 'y' }, b: [1, 2, 3] }],
    ['copy', [{ op: 'copy', from: '/a/b/2', path: '/z' }], { ...doc, z: 3 }],
    ['test then replace', [{ op: 'test', path: '/a/b', value: [1, 2, 3] }, { op: 'replace', path: '/a/b', value: [] }], { a: { ...doc.a, b: [] } }],
  ];
  it.each(rows)('%s', (_, ops, expected) => {
    expect(jsonPatch(doc, ops)).toEqual(expected);
  });

  it.each([
    ['a failed test', [{ op: 'add', path: '/n', value: 1 }, { op: 'test', path: '/a/b/0', value: 5 }], 'operation 1'],
    ['a missing path', [{ op: 'replace', path: '/a/nope', value: 1 }], 'no value at "nope" to replace'],
    ['an index out of range', [{ op: 'add', path: '/a/b/4', value: 1 }], 'index 4 is out of range'],
    ['an unknown op', [{ op: 'frob', path: '/a' }], 'unknown op "frob"'],
  ])('%s fails the whole patch and leaves the document alone', (_, ops, message) => {
    const before = structuredClone(doc);
    expect(() => jsonPatch(doc, ops)).toThrow(message);
    expect(doc).toEqual(before);
  });
});

describe('strategic merge patch', () => {
  const svc = { spec: { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81 }], selector: { app: 'x' } }, metadata: { finalizers: ['f1'] } };

  it('merges lists with a merge key element by element', () => {
    expect(strategicMergePatch(svc, { spec: { ports: [{ port: 81, targetPort: 8081 }, { port: 82 }] } }, services)).toEqual({
      spec: { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81, targetPort: 8081 }, { port: 82 }], selector: { app: 'x' } },
      metadata: { finalizers: ['f1'] },
    });
  });

  it('what kubectl apply sends: $setElementOrder and $patch: delete', () => {
    const patch = { spec: { '$setElementOrder/ports': [{ port: 82 }, { port: 80 }], ports: [{ name: 'c', port: 82 }, { $patch: 'delete', port: 81 }] } };
    const out = strategicMergePatch(svc, patch, services) as typeof svc;
    expect(out.spec.ports).toEqual([{ name: 'c', port: 82 }, { name: 'a', port: 80 }]);
  });

  it('$patch: replace on a map and a list, $retainKeys, $deleteFromPrimitiveList, scalar lists as sets', () => {
    expect(strategicMergePatch(svc, { spec: { $patch: 'replace', type: 'ClusterIP' } }, services)).toMatchObject({ spec: { type: 'ClusterIP' } });
    expect((strategicMergePatch(svc, { spec: { ports: [{ $patch: 'replace' }, { port: 9 }] } }, services) as typeof svc).spec.ports).toEqual([{ port: 9 }]);
    expect((strategicMergePatch(svc, { spec: { $retainKeys: ['ports'], ports: [] } }, services) as typeof svc).spec).toEqual({ ports: [{ name: 'a', port: 80 }, { name: 'b', port: 81 }] });
    expect(strategicMergePatch(svc, { metadata: { finalizers: ['f2', 'f1'] } }, services)).toMatchObject({ metadata: { finalizers: ['f1', 'f2'] } });
    expect(strategicMergePatch(svc, { metadata: { '$deleteFromPrimitiveList/finalizers': ['f1'] } }, services)).toMatchObject({ metadata: { finalizers: [] } });
    expect(strategicMergePatch(svc, { spec: { selector: { $patch: 'delete' } } }, services)).not.toHaveProperty('spec.selector');
  });

  it('nested merge keys (a container\'s env by name) and plain lists replaced', () => {
    const p = { spec: { containers: [{ name: 'c', env: [{ name: 'A', value: '1' }], args: ['x'] }] } };
    const out = strategicMergePatch(p, { spec: { containers: [{ name: 'c', env: [{ name: 'B', value: '2' }], args: ['y'] }] } }, pods);
    expect(out).toEqual({ spec: { containers: [{ name: 'c', env: [{ name: 'A', value: '1' }, { name: 'B', value: '2' }], args: ['y'] }] } });
  });

  it('an element without its merge key, or an unknown $patch, is a 400', () => {
    expect(() => strategicMergePatch(svc, { spec: { ports: [{ name: 'x' }] } }, services)).toThrow('needs its merge key "port"');
    expect(() => strategicMergePatch(svc, { spec: { $patch: 'frobnicate' } }, services)).toThrow('unknown $patch');
  });
});
