// The apiserver's error replies: a metav1.Status with the HTTP code, a machine-readable reason and a message
// that names what is wrong, the way clients (kubectl, client-go, client-node) parse them.

export type StatusReason =
  | 'BadRequest'
  | 'Unauthorized'
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Invalid'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType'
  | 'NotAcceptable'
  | 'Expired'
  | 'Gone'
  | 'Timeout'
  | 'RequestEntityTooLarge'
  | 'InternalError';

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: { reason?: string; message: string; field?: string }[];
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: StatusReason;
  details?: StatusDetails;
  code: number;
}

export function failure(code: number, reason: StatusReason, message: string, details?: StatusDetails): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details && { details }), code };
}

export function success(details?: StatusDetails): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', ...(details && { details }), code: 200 };
}

/** Thrown by the store and the handlers; the router turns it into the Status reply. */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(readonly status: Status) {
    super(status.message);
  }

  static badRequest(message: string): ApiError {
    return new ApiError(failure(400, 'BadRequest', message));
  }

  static notFound(resource: string, name: string, group = ''): ApiError {
    return new ApiError(failure(404, 'NotFound', `${qualified(resource, group)} "${name}" not found`, { name, group, kind: resource }));
  }

  static alreadyExists(resource: string, name: string, group = ''): ApiError {
    return new ApiError(failure(409, 'AlreadyExists', `${qualified(resource, group)} "${name}" already exists`, { name, group, kind: resource }));
  }

  static conflict(resource: string, name: string, group: string, why: string): ApiError {
    const message = `Operation cannot be fulfilled on ${qualified(resource, group)} "${name}": ${why}`;
    return new ApiError(failure(409, 'Conflict', message, { name, group, kind: resource }));
  }

  static invalid(kind: string, name: string, group: string, field: string, why: string): ApiError {
    const message = `${kind} "${name}" is invalid: ${field}: ${why}`;
    return new ApiError(failure(422, 'Invalid', message, { name, group, kind, causes: [{ reason: 'FieldValueInvalid', message: why, field }] }));
  }

  static expired(message: string): ApiError {
    return new ApiError(failure(410, 'Expired', message));
  }
}

function qualified(resource: string, group: string): string {
  return group === '' ? resource : `${resource}.${group}`;
}
