export * from './datapath.js';
export { counterNames, type CounterName } from './maps.js';
