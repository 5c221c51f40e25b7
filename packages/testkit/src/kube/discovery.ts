// The discovery documents clients read to map a kind to a URL (kubectl's RESTMapper, client-go's discovery),
// shaped as the apiserver serves them: /api (APIVersions), /apis (APIGroupList), /apis/<group> (APIGroup),
// /api/v1 and /apis/<group>/<version> (APIResourceList).
import { groupVersion, RESOURCES, VERBS } from './resources.js';

function groupVersions(): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const r of RESOURCES) {
    if (r.group === '') continue;
    const versions = groups.get(r.group) ?? [];
    if (!versions.includes(r.version)) versions.push(r.version);
    groups.set(r.group, versions);
  }
  return groups;
}

export function apiVersions(serverAddress: string): object {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function apiGroup(name: string, versions: string[]): object {
  const gvs = versions.map((version) => ({ groupVersion: `${name}/${version}`, version }));
  return { name, versions: gvs, preferredVersion: gvs[0] };
}

export function apiGroupList(): object {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...groupVersions()].map(([name, versions]) => apiGroup(name, versions)) };
}

export function apiGroupDoc(group: string): object | undefined {
  const versions = groupVersions().get(group);
  return versions && { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(group, versions) };
}

export function apiResourceList(group: string, version: string): object | undefined {
  const served = RESOURCES.filter((r) => r.group === group && r.version === version);
  if (served.length === 0) return undefined;
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: groupVersion({ group, version }),
    resources: served.flatMap((r) => [
      {
        name: r.plural,
        singularName: r.singular,
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: [...VERBS],
        ...(r.shortNames && { shortNames: r.shortNames }),
      },
      ...(r.status ? [{ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : []),
    ]),
  };
}
