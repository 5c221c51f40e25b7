// SPIFFE ID rules (SPIFFE-ID.md §2), one row each, both ways.
import { describe, expect, it } from 'vitest';
import { parseSpiffeId, formatSpiffeId, workloadSpiffeId, serviceAccountOf, SpiffeIdError, checkTrustDomain } from '../../src/index.js';

describe('SPIFFE IDs', () => {
  it.each([
    ['spiffe://example.org/ns/default/sa/web', 'example.org', '/ns/default/sa/web'],
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://a-b_c.9/Path.With-Mixed_Case/x', 'a-b_c.9', '/Path.With-Mixed_Case/x'],
  ])('parses %s', (s, td, path) => {
    expect(parseSpiffeId(s)).toEqual({ trustDomain: td, path });
    expect(formatSpiffeId({ trustDomain: td, path })).toBe(s);
  });

  it.each([
    ['', /empty/],
    ['https://example.org/x', /scheme must be "spiffe:\/\/"/],
    ['SPIFFE://example.org/x', /scheme must be lowercase/],
    ['spiffe:///x', /trust domain is empty/],
    ['spiffe://Example.org/x', /trust domain must be lowercase/],
    ['spiffe://example.org:8443/x', /port/],
    ['spiffe://user@example.org/x', /userinfo/],
    ['spiffe://example.org/x?y=1', /query/],
    ['spiffe://example.org/x#f', /fragment/],
    ['spiffe://exa mple.org/x', /character " "/],
    ['spiffe://example.org/', /must not end with "\/"/],
    ['spiffe://example.org/x/', /must not end with "\/"/],
    ['spiffe://example.org//x', /empty segment/],
    ['spiffe://example.org/./x', /"\." segment/],
    ['spiffe://example.org/x/..', /"\.\." segment/],
    ['spiffe://example.org/a%20b', /percent-encoding/],
    ['spiffe://example.org/a*b', /character "\*"/],
    [`spiffe://${'a'.repeat(256)}/x`, /longer than 255/],
    [`spiffe://example.org/${'a'.repeat(2040)}`, /longer than 2048 bytes/],
  ])('rejects %j', (s, msg) => {
    expect(() => parseSpiffeId(s)).toThrow(SpiffeIdError);
    expect(() => parseSpiffeId(s)).toThrow(msg);
  });

  it('maps a service account to its ID and back', () => {
    const id = workloadSpiffeId('cluster.local', 'shop', 'reviews');
    expect(formatSpiffeId(id)).toBe('spiffe://cluster.local/ns/shop/sa/reviews');
    expect(serviceAccountOf(id)).toEqual({ namespace: 'shop', serviceAccount: 'reviews' });
    expect(serviceAccountOf(parseSpiffeId('spiffe://cluster.local/other/shape'))).toBeUndefined();
    expect(() => workloadSpiffeId('cluster.local', 'shop', 're/views')).toThrow(/service account "re\/views" must be one path segment/);
    expect(() => workloadSpiffeId('cluster.local', 'shop', 'a b')).toThrow(/character " "/);
    expect(() => workloadSpiffeId('cluster.local', '', 'x')).toThrow(/namespace must be a non-empty string/);
    expect(() => checkTrustDomain('Cluster.local')).toThrow(/lowercase/);
  });
});
