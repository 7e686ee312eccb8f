// Module hooks (node:module register) for elements kept outside this package: their element.ts
// imports 'wirepath', which resolves to this package's API wherever the folder is, and the TypeScript
// of an element folder loads as an ES module without a package.json saying so.

import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const API = new URL('./api.ts', import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier === 'wirepath') return next(API, context);
  const result = await next(specifier, context);
  // An element.ts is imported with a query (registry.ts names it by its modification time).
  const url = result.url.split('?')[0];
  if (url.startsWith('file:') && url.endsWith('.ts') && result.format !== 'module'
      && existsSync(`${dirname(fileURLToPath(url))}/element.ts`)) {
    return { ...result, format: 'module' };
  }
  return result;
}
