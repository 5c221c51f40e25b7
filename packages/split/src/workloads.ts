/** On one machine there is no endpoints controller: EndpointSlices are computed from Service selectors and
 *  the workloads running here, as Kubernetes' controller would compute them from pods. */
import { isIPv4, isIPv6 } from 'node:net';

import { type EndpointSlice, namespaceOf, type ObjectMeta, SERVICE_NAME_LABEL, type Service } from './model.js';

/** The fields of a workload (the project's own kind, or a pod) that endpoint computation reads. */
export interface WorkloadEndpoints {
  metadata: ObjectMeta;
  spec: {
    addresses: string[];
    /** Named ports, for Services whose targetPort is a name. */
    ports?: { name: string; port: number; protocol?: 'TCP' | 'UDP' }[];
    /** A workload that is not ready gets no traffic. */
    ready?: boolean;
  };
}

/** One EndpointSlice per Service and address family, listing the workloads its selector matches. */
export function endpointSlicesFor(services: Service[], workloads: WorkloadEndpoints[]): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  for (const svc of services) {
    const selector = svc.spec.selector;
    if (!selector || Object.keys(selector).length === 0) continue; // no selector: endpoints are managed by hand
    const ns = namespaceOf(svc.metadata);
    const members = workloads.filter(
      (w) => namespaceOf(w.metadata) === ns && Object.entries(selector).every(([k, v]) => w.metadata.labels?.[k] === v),
    );
    for (const [family, addressType, isFamily] of [[4, 'IPv4', isIPv4], [6, 'IPv6', isIPv6]] as const) {
      const endpoints = members.flatMap((w) =>
        w.spec.addresses.filter((a) => isFamily(a)).map((a) => ({ addresses: [a], conditions: { ready: w.spec.ready !== false } })),
      );
      if (endpoints.length === 0) continue;
      const ports = svc.spec.ports.flatMap((p) => {
        const tp = p.targetPort ?? p.port;
        const port = typeof tp === 'number' ? tp : members.flatMap((w) => w.spec.ports ?? []).find((wp) => wp.name === tp)?.port;
        return port === undefined ? [] : [{ name: p.name ?? '', port, protocol: p.protocol ?? 'TCP' }];
      });
      out.push({
        kind: 'EndpointSlice',
        apiVersion: 'discovery.k8s.io/v1',
        metadata: { name: `${svc.metadata.name}-${family === 4 ? 'v4' : 'v6'}`, namespace: ns, labels: { [SERVICE_NAME_LABEL]: svc.metadata.name } },
        addressType,
        endpoints,
        ports,
      });
    }
  }
  return out;
}
