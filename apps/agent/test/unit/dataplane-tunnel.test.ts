// The tunnel choice as the agent reads it from a data plane's stats text: which tunnel new outbound connections
// take and why (a label value, escapes undone), and the outbound streams by tunnel; absent from a data plane
// without the series.
import { describe, expect, it } from 'vitest';

import { tunnelOf } from '../../src/dataplane.js';

const series = (tunnel: string, choice: string) => `# HELP mesh_dataplane_tunnel_streams_total x
mesh_dataplane_tunnel_streams_total{role="outbound",tunnel="dedicated",handshake="new"} 3
mesh_dataplane_tunnel_streams_total{role="outbound",tunnel="pooled",handshake="new"} 2
mesh_dataplane_tunnel_streams_total{role="outbound",tunnel="pooled",handshake="reused"} 40
mesh_dataplane_tunnel_streams_total{role="inbound",tunnel="dedicated"} 9
mesh_dataplane_outbound_tunnel_info{tunnel="${tunnel}",choice="${choice}"} 1
`;

describe('tunnelOf', () => {
  it('reads the tunnel, the reason with the label escapes undone, and the outbound streams', () => {
    expect(tunnelOf(series('pooled', 'auto: \\"ktls\\": false'))).toEqual({
      tunnel: 'pooled',
      choice: 'auto: "ktls": false',
      outbound: { dedicated: 3, pooledNew: 2, pooledReused: 40 },
    });
    expect(tunnelOf(series('dedicated', 'config'))).toMatchObject({ tunnel: 'dedicated', choice: 'config' });
  });

  it('is undefined for a data plane that exports no tunnel series', () => {
    expect(tunnelOf('mesh_dataplane_config_generation 1\n')).toBeUndefined();
  });
});
