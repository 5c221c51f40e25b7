/** Where another node's data plane listens for tunnels (docs/mtls.md, "Other nodes"): apart from mtls.ts so
 *  that it can be used and tested without the datapath's native addon. */
import type { ResolvedConfig } from './config/objects.js';
import { parseHostPort } from './paths.js';

/**
 * The tunnel of node `node`: `--mtls-node` (peers) when it names one, else the node's address from the config
 * source (Kubernetes: its pods' status.hostIP) with this node's tunnel port — every node's agent runs with the
 * same flags. Undefined when neither knows the node.
 */
export function nodeTunnel(node: string, config: Pick<ResolvedConfig, 'nodeAddresses'>, opts: { tunnel: string; peers?: Record<string, string> }): string | undefined {
  const given = opts.peers?.[node];
  if (given !== undefined) return given;
  const ip = config.nodeAddresses?.get(node);
  if (ip === undefined) return undefined;
  const { port } = parseHostPort(opts.tunnel);
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
