export * from './object.js';
export * from './peer-authentication.js';
export * from './authorization.js';
export * from './compile.js';
export * from './evaluate.js';
