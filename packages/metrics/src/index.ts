export { MetricsDatapath } from './datapath.js';
export type { Direction, HttpSample, TcpSample, MetricsSnapshot, MetricsOptions } from './datapath.js';
export { KernelMetrics, defaultResolver } from './exporter.js';
export type { Identity, IdentityResolver, MetricsSource, ExporterOptions } from './exporter.js';
export { BUCKET_BOUNDS_S, METHODS, counterNames } from './maps.js';
export type { CounterName } from './maps.js';
