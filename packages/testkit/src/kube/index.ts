// What tests use: the server, its objects and switches, and the certificates and kubeconfig it writes.
// The modules behind it (selectors, patches, tables) are imported directly by their own unit tests.
export { makePki, type CertPair, type PkiOptions, type TestPki } from './certs.js';
export { kubeconfig, writeKubeconfig, type KubeconfigOptions } from './kubeconfig.js';
export { RESOURCES, type KubeObject, type ObjectMeta, type ResourceType } from './resources.js';
export { KubeApiServer, type KubeApiServerOptions, type RequestRecord } from './server.js';
export { ApiError, type Status } from './status.js';
export { ObjectStore, type ChangeEvent, type StoreOptions } from './store.js';
export type { ExpiredForm, Watch, WatchEventType } from './watch.js';
