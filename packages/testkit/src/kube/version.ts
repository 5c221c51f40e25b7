/** What GET /version answers: a Kubernetes 1.32 server, named as the test one. */
export const VERSION = {
  major: '1', minor: '32', gitVersion: 'v1.32.0-mesh-test', gitCommit: '6d3c5ba7e1a0f2d9c8b4e3a2f1d0c9b8a7e6f5d4',
  gitTreeState: 'clean', buildDate: '2026-01-01T00:00:00Z', goVersion: 'go1.23.0', compiler: 'gc', platform: 'linux/amd64',
};
