// The Kubernetes config source and the pieces it is made of.
export { findPodCgroup, podCgroupCandidates, type CgroupDriver, type ContainerRuntime, type PodCgroup, type QosClass } from './cgroups.js';
export { ApiError, inClusterConfig, KubeClient, kubeconfigFile, type KubeClientConfig, type WatchEvent } from './client.js';
export { errorText, SupervisedInformer, type InformerHealth, type InformerOptions } from './informer.js';
export { inMesh, ISTIO_DATAPLANE_MODE_LABEL, MESH_ENABLED_LABEL, podToWorkload } from './pods.js';
export { loadKubeConfig, nodeSelector, SERVICE_ACCOUNT_DIR, WATCHED, type ResourceName, type WatchedResource } from './resources.js';
export { KubernetesSource, type KubernetesHealth, type KubernetesSourceOptions } from './source.js';
export { kubepodsRoot, nodeName } from './setup.js';
