export * from './cgroup.js';
export * from './checksum.js';
export * from './env.js';
export * from './exit.js';
export * from './ip.js';
export * from './mounts.js';
export * from './names.js';
export * from './netns.js';
export * from './packet.js';
export * from './pcap.js';
export * from './proc.js';
export * from './runtime.js';
export * from './tools.js';
export * from './kube/index.js';
// Not in kube/index.js: the compiled server (build/testkit, for the demo and bench:agent) runs where
// @kubernetes/client-node, which the real-cluster path uses, does not resolve.
export { FAKE_ONLY, type KubeCluster, MESH_TEST_KUBECONFIG, realCluster, startKubeCluster } from './kube/cluster.js';
