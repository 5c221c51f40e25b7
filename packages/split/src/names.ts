/** Names and field checks shared by every config kind: the routing kinds here and the agent's own (Workload,
 *  pods from the API server), so each check and its message is written once. */
import { isIPv4, isIPv6 } from 'node:net';

export const DEFAULT_NAMESPACE = 'default';

/** The namespace of an object's metadata; Kubernetes' default when it names none. */
export function namespaceOf(m: { namespace?: string }): string {
  return m.namespace ?? DEFAULT_NAMESPACE;
}

/** "namespace/name" */
export function qualifiedName(m: { name: string; namespace?: string }): string {
  return `${namespaceOf(m)}/${m.name}`;
}

/** "Kind namespace/name", how every problem names its object. */
export function objectName(kind: string, m: { name: string; namespace?: string } | undefined): string {
  return `${kind} ${m ? qualifiedName(m) : '(no metadata)'}`;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** Lower-case letters, digits and inner dashes (RFC 1123 label characters; lengths are checked where they apply). */
export function isDnsLabel(v: unknown): v is string {
  return typeof v === 'string' && DNS_LABEL.test(v);
}

/** A DNS subdomain as Kubernetes checks a node's name: labels joined by dots, at most 253 characters. */
export function isDnsSubdomain(v: unknown): v is string {
  return typeof v === 'string' && DNS_SUBDOMAIN.test(v) && v.length <= 253;
}

export function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/** A TCP or UDP port a config may name: an integer in [1, 65535]. */
export function isPort(v: unknown): v is number {
  return isInt(v) && v >= 1 && v <= 65535;
}

/** What a port field must be, for its problem. */
export const portExpected = (got: unknown) => `must be an integer in [1, 65535], got ${JSON.stringify(got)}`;

export function isIP(v: unknown): v is string {
  return typeof v === 'string' && (isIPv4(v) || isIPv6(v));
}

/** What an address field must be, for its problem. */
export const ipExpected = (got: unknown) => `must be an IPv4 or IPv6 address, got ${JSON.stringify(got)}`;
