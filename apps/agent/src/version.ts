/** The agent's version: its package.json's, read where it ships (dist/ and src/ both sit one level below it). */
import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
