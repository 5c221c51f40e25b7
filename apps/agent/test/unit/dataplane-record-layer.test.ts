// The record layer as the agent reads it from a data plane's stats text: the kTLS probe's reason (a Prometheus
// label value, escapes undone) and the connections by path and role; absent from a data plane without the series.
import { describe, expect, it } from 'vitest';

import { recordLayerOf } from '../../src/dataplane.js';

const series = (reason: string, available: 0 | 1) => `# HELP mesh_dataplane_record_layer_total x
mesh_dataplane_record_layer_total{role="outbound",path="user"} 7
mesh_dataplane_record_layer_total{role="outbound",path="ktls"} 0
mesh_dataplane_record_layer_total{role="inbound",path="user"} 5
mesh_dataplane_record_layer_total{role="inbound",path="ktls"} 2
mesh_dataplane_ktls_available ${available}
mesh_dataplane_ktls_info{reason="${reason}"} 1
`;

describe('recordLayerOf', () => {
  it('reads the reason, undoing the label escapes, and the connections by path and role', () => {
    expect(recordLayerOf(series('setsockopt TCP_ULP \\"tls\\": No such file \\\\ or\\ndirectory', 0))).toEqual({
      ktlsAvailable: false,
      reason: 'setsockopt TCP_ULP "tls": No such file \\ or\ndirectory',
      connections: { outbound: { ktls: 0, user: 7 }, inbound: { ktls: 2, user: 5 } },
    });
    expect(recordLayerOf(series('', 1))).toMatchObject({ ktlsAvailable: true, reason: '' });
  });

  it('is undefined for a data plane that exports no kTLS series', () => {
    expect(recordLayerOf('mesh_dataplane_config_generation 1\n')).toBeUndefined();
  });
});
