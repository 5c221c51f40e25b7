// The OpenAPI documents kubectl reads before create/replace/apply. No schemas: each group version's v3
// document declares a PATCH operation per kind that takes `fieldValidation`, which tells kubectl to leave
// validation to the server (it sends fieldValidation=Strict) instead of validating against schemas itself.
// The v2 document is valid and empty, so kubectl apply computes strategic merge patches from its built-in types.
import { VERSION } from './version.js';
import { collectionPath, groupVersion, RESOURCES } from './resources.js';

const QUERY_PARAMS = ['dryRun', 'fieldManager', 'fieldValidation', 'force', 'pretty'];

/** GET /openapi/v3: where each group version's document is. */
export function openapiV3Root(): object {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const gv of new Set(RESOURCES.map(groupVersion))) {
    const p = gvPath(gv);
    paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${VERSION.gitCommit.slice(0, 16)}` };
  }
  return { paths };
}

/** GET /openapi/v3/api/v1 or /openapi/v3/apis/<group>/<version>; undefined for a group version not served. */
export function openapiV3Doc(path: string): object | undefined {
  const served = RESOURCES.filter((r) => gvPath(groupVersion(r)) === path);
  if (served.length === 0) return undefined;
  const paths: Record<string, object> = {};
  for (const r of served) {
    const item = `${collectionPath(r, r.namespaced ? '{namespace}' : undefined)}/{name}`;
    paths[item] = {
      patch: {
        operationId: `patch${r.kind}`,
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': { group: r.group, version: r.version, kind: r.kind },
        parameters: QUERY_PARAMS.map((name) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } })),
        responses: { 200: { description: 'OK' } },
      },
    };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: VERSION.gitVersion }, paths, components: { schemas: {} } };
}

/** GET /openapi/v2: valid, with no definitions. */
export function openapiV2(): object {
  return { swagger: '2.0', info: { title: 'Kubernetes', version: VERSION.gitVersion }, paths: {}, definitions: {} };
}

function gvPath(gv: string): string {
  return gv.includes('/') ? `apis/${gv}` : `api/${gv}`;
}
