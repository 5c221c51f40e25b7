// The configs bench:agent feeds the agent (also used by bench/agent/profile.mjs): YAML text as a user or a
// tool would write it.

export const SHAPE = { services: 1_000, endpointsPerService: 10, routes: 100 };

const quad = (a, i) => `127.${a}.${(i >> 8) & 0xff}.${i & 0xff}`;
const svcName = (i) => `svc-${String(i).padStart(4, '0')}`;
const client = `apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata:
  name: bench-client
  labels: { app: bench-client }
spec:
  addresses: [127.30.0.1]
`;

/** One Service selecting one Workload (its one endpoint is computed from the workload's address). */
export function idleConfig() {
  return `${client}---
apiVersion: v1
kind: Service
metadata:
  name: bench
spec:
  clusterIP: 127.20.0.1
  selector: { app: bench-client }
  ports: [{ port: 8080, targetPort: 8080 }]
`;
}

/**
 * SHAPE.services Services svc-0000… on 127.20.x.y:8080, each with one EndpointSlice of
 * SHAPE.endpointsPerService endpoints on 127.40.x.y:8080 (all distinct); SHAPE.routes HTTPRoutes route-NNN,
 * route i splitting svc-i across svc-(100+2i) (weight 90) and svc-(101+2i) (weight `w(i)`, 10 unless changed);
 * and the client Workload.
 */
export function bigConfig(w = () => 10, shape = SHAPE) {
  const docs = [client];
  for (let i = 0; i < shape.services; i++) {
    const n = svcName(i);
    docs.push(`apiVersion: v1
kind: Service
metadata:
  name: ${n}
spec:
  clusterIP: ${quad(20, i)}
  ports:
    - port: 8080
      targetPort: 8080
`);
    const eps = Array.from({ length: shape.endpointsPerService }, (_, j) => `    - addresses: [${quad(40, i * shape.endpointsPerService + j)}]\n      conditions: { ready: true }\n`).join('');
    docs.push(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${n}-1
  labels:
    kubernetes.io/service-name: ${n}
addressType: IPv4
endpoints:
${eps}ports:
  - port: 8080
`);
  }
  for (let i = 0; i < shape.routes; i++) {
    docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: route-${String(i).padStart(3, '0')}
spec:
  parentRefs:
    - { kind: Service, name: ${svcName(i)}, port: 8080 }
  rules:
    - backendRefs:
        - { name: ${svcName(100 + 2 * i)}, port: 8080, weight: 90 }
        - { name: ${svcName(101 + 2 * i)}, port: 8080, weight: ${w(i)} }
`);
  }
  return docs.join('---\n');
}

/** The scale config: as many Workloads and Services as a big node's agent may be given. */
export const SCALE = { services: 50_000, workloads: 20_000, namespaces: 10, routes: 1_000 };

const quad16 = (a, i) => `127.${a + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`;

/**
 * SCALE.workloads Workloads w-NNNNN (namespaces ns-0…, label app: app-NNNNN, one address on 127.50.x.y, port
 * "http" 8080) and SCALE.services Services s-NNNNN on 127.20.x.y:80, Service i selecting workload i mod
 * SCALE.workloads by its label (targetPort "http"), in that workload's namespace; SCALE.routes HTTPRoutes,
 * route i splitting Service i 90/10 across Services i + SCALE.workloads and i + 2·SCALE.workloads (the same
 * namespace). Flow-style YAML, one document per object.
 */
export function scaleConfig(shape = SCALE) {
  const wl = (i) => `w-${String(i).padStart(5, '0')}`;
  const svc = (i) => `s-${String(i).padStart(5, '0')}`;
  const ns = (i) => `ns-${(i % shape.workloads) % shape.namespaces}`;
  const docs = [];
  for (let i = 0; i < shape.workloads; i++) {
    docs.push(`apiVersion: mesh.dev/v1alpha1
kind: Workload
metadata: { name: ${wl(i)}, namespace: ${ns(i)}, labels: { app: app-${wl(i)} } }
spec: { addresses: [${quad16(50, i)}], ports: [{ name: http, port: 8080 }] }
`);
  }
  for (let i = 0; i < shape.services; i++) {
    docs.push(`apiVersion: v1
kind: Service
metadata: { name: ${svc(i)}, namespace: ${ns(i)} }
spec: { clusterIP: ${quad16(20, i)}, selector: { app: app-${wl(i % shape.workloads)} }, ports: [{ port: 80, targetPort: http }] }
`);
  }
  for (let i = 0; i < shape.routes; i++) {
    docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r-${svc(i)}, namespace: ${ns(i)} }
spec:
  parentRefs: [{ kind: Service, name: ${svc(i)}, port: 80 }]
  rules: [{ backendRefs: [{ name: ${svc(i + shape.workloads)}, port: 80, weight: 90 }, { name: ${svc(i + 2 * shape.workloads)}, port: 80, weight: 10 }] }]
`);
  }
  return docs.join('---\n');
}
