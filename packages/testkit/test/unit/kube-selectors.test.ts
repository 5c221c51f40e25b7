import { describe, expect, it } from 'vitest';
import { RESOURCES, type KubeObject } from '../../src/kube/resources.js';
import { parseFieldSelector, parseLabelSelector } from '../../src/kube/selectors.js';
import { ApiError } from '../../src/kube/status.js';

const pods = RESOURCES.find((r) => r.plural === 'pods')!;
const services = RESOURCES.find((r) => r.plural === 'services')!;
const obj = (labels: Record<string, string>, nodeName?: string): KubeObject => ({
  metadata: { name: 'p', namespace: 'ns', labels }, spec: nodeName === undefined ? {} : { nodeName },
});

describe('label selectors', () => {
  const a = obj({ app: 'web', tier: 'front', 'mesh.dev/enabled': 'true' });
  const rows: [string, boolean][] = [
    ['', true],
    ['app=web', true],
    ['app==web', true],
    ['app!=web', false],
    ['app!=db', true],
    ['missing!=x', true],
    ['app in (db, web)', true],
    ['app notin (db,web)', false],
    ['tier', true],
    ['!tier', false],
    ['!missing', true],
    ['app=web,tier in (front),mesh.dev/enabled=true', true],
    ['app=web,tier=back', false],
    ['app=', false],
  ];
  it.each(rows)('%j matches: %s', (selector, expected) => {
    expect(parseLabelSelector(selector)(a)).toBe(expected);
  });

  it.each(['app>1', 'a b', 'in (x)', '-bad=x'])('%j is refused with a 400 naming the selector', (selector) => {
    const e = (() => { try { parseLabelSelector(selector); } catch (err) { return err; } })();
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).status.code).toBe(400);
    expect((e as ApiError).message).toContain(JSON.stringify(selector));
  });
});

describe('field selectors', () => {
  it('spec.nodeName for pods; an unset one is the empty string', () => {
    expect(parseFieldSelector('spec.nodeName=n1', pods)(obj({}, 'n1'))).toBe(true);
    expect(parseFieldSelector('spec.nodeName!=n1', pods)(obj({}, 'n1'))).toBe(false);
    expect(parseFieldSelector('spec.nodeName=', pods)(obj({}))).toBe(true);
    expect(parseFieldSelector('metadata.name=p,metadata.namespace==ns', services)(obj({}))).toBe(true);
  });

  it('a field the resource does not index is a 400 listing the ones it does', () => {
    expect(() => parseFieldSelector('spec.nodeName=n1', services)).toThrow('field label not supported: spec.nodeName (for services: metadata.name, metadata.namespace)');
    expect(() => parseFieldSelector('nonsense', services)).toThrow('invalid field selector');
  });
});
