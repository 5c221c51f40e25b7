export { compile, Compiler } from './compile.js';
export { runSteps, runStepsAsync, every } from './steps.js';
export type { Steps } from './steps.js';
export type { Compiled, CompiledService, CompiledBackend, Endpoint, Condition, RouteStatus, RouteParentStatus } from './compile.js';
export { MIN_ENDPOINTS, MIN_SERVICES, SplitDatapath, tableSizesFor } from './datapath.js';
export type { SplitOptions, ApplyResult } from './datapath.js';
export { SnapshotError, serviceIPs, SERVICE_NAME_LABEL, MAX_WEIGHT, MAX_BACKEND_REFS } from './model.js';
export { validate, validateSnapshot, validateSteps, Validator } from './validate.js';
export type { ValidatedSnapshot } from './validate.js';
export {
  DEFAULT_NAMESPACE,
  namespaceOf,
  qualifiedName,
  objectName,
  isDnsLabel,
  isDnsSubdomain,
  isInt,
  isPort,
  portExpected,
  isIP,
  ipExpected,
} from './names.js';
export type { Snapshot, Kind, Service, ServicePort, EndpointSlice, HTTPRoute, ParentRef, BackendRef, ObjectMeta, Protocol } from './model.js';
export { ServiceTable } from './table.js';
export { registerSplitMetrics, registerSplitWeights } from './metrics.js';
export type { SplitMetricsSource } from './metrics.js';
export type { ApplyStats } from './table.js';
export { counterNames, epKey, epValue, svcKey, svcValue } from './maps.js';
export type { CounterName, EpKey, EpValue, SvcKey, SvcValue } from './maps.js';
export { syntheticSnapshot } from './synthetic.js';
export { endpointSlicesFor, endpointSliceSteps } from './workloads.js';
export type { WorkloadEndpoints, SliceCache } from './workloads.js';
