import { describe, expect, it } from 'vitest';
import { age, wantsTable } from '../../src/kube/table.js';

describe('server-side printing', () => {
  const now = Date.parse('2026-01-10T00:00:00Z');
  const ago = (seconds: number): string => new Date(now - seconds * 1000).toISOString();
  it.each([
    [45, '45s'], [119, '119s'], [303, '5m3s'], [300, '5m'], [42 * 60, '42m'], [3 * 3600 + 5 * 60, '3h5m'],
    [20 * 3600, '20h'], [(3 * 24 + 4) * 3600, '3d4h'], [60 * 86400, '60d'], [3 * 365 * 86400, '3y'],
  ])('%i seconds old is %s, as kubectl prints AGE', (seconds, expected) => {
    expect(age(ago(seconds), now)).toBe(expected);
  });

  it.each([
    ['application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json', true],
    ['application/json', false],
    ['application/json;as=Table;v=v1beta1;g=meta.k8s.io', false],
    ['application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io', false],
  ])('Accept %s asks for a Table: %s', (accept, expected) => {
    expect(wantsTable(accept)).toBe(expected);
  });
});
