export * from './spiffe-id.js';
export * from './svid.js';
export * from './bundle.js';
export * from './validate.js';
export * from './ca.js';
export { x509, generateKeyPair, exportKeyPem, importKeyPem, parseCertificatesPem, toPem } from './x509.js';
export * from './tls.js';
export * from './clock.js';
export * from './rotation.js';
