// Finds element folders (each with element.ts and process.ts) and loads their declarations.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { register } from 'node:module';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ElementDefinition, ElementType } from './element.ts';
import { param, ParamTypeError } from './params.ts';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUILTIN_ELEMENTS = join(PROJECT_ROOT, 'elements');

export type Registry = Map<string, ElementType>;

// A user's element folder may be anywhere: its element.ts imports 'wirepath' and loads as an ES module (element-hooks.js).
register(new URL('./element-hooks.js', import.meta.url));

/**
 * The built-in `steer` values of sources, in the order of assembly/io.ts STEER_FLOW, STEER_SOURCE,
 * STEER_DESTINATION; any other value names an element that declares `steer` (assembly/io.ts STEER_ELEMENT).
 */
export const STEERING = ['flow', 'source-address', 'destination-address'] as const;
export const STEER_ELEMENT = STEERING.length;

/** Every source takes `steer`: how the dispatcher picks the shard for its packets. */
const STEER_PARAM = param.custom<string>(
  'how the dispatcher picks the shard of each packet: by its flow (symmetric 5-tuple), by its source or destination address (for state owned by a host), or by an element of the config that declares `steer` (a NAT steers replies to the shard of the subscriber that owns their port block)',
  {
    description: `one of ${STEERING.join(', ')}, or the name of an element that steers`,
    parse: (raw) => {
      if (typeof raw === 'string' && /^[A-Za-z_][A-Za-z0-9_-]*$/.test(raw)) return raw;
      throw new ParamTypeError(`${JSON.stringify(raw)} is not one of ${STEERING.join(', ')} nor an element name`);
    },
    format: String,
  },
  { default: 'flow' });

function isElementDir(dir: string): boolean {
  return existsSync(join(dir, 'element.ts'));
}

/** Element folders in `dir`: the folder itself when it is one, else its subfolders that are. */
export function elementDirs(dir: string): string[] {
  if (isElementDir(dir)) return [dir];
  return readdirSync(dir)
    .map((name) => join(dir, name))
    .filter((d) => statSync(d).isDirectory() && isElementDir(d))
    .sort();
}

async function loadElement(dir: string): Promise<ElementType> {
  const module = await import(pathToFileURL(join(dir, 'element.ts')).href);
  const definition: ElementDefinition = module.default;
  if (!definition || typeof definition.type !== 'string') {
    throw new Error(`${join(dir, 'element.ts')} must export default defineElement({...})`);
  }
  const kind = definition.source ? 'source' : definition.sink ? 'sink' : 'element';
  const params = kind === 'source' ? { ...definition.params, steer: STEER_PARAM } : definition.params;
  return { ...definition, params, dir, kind };
}

/** The built-in elements plus those in `extraDirs` (a user's element folders); a later one may not reuse a type name. */
export async function loadRegistry(extraDirs: string[] = []): Promise<Registry> {
  const registry: Registry = new Map();
  const dirs = [BUILTIN_ELEMENTS, ...extraDirs.map((d) => resolve(d))];
  for (const base of dirs) {
    if (!existsSync(base)) throw new Error(`element folder ${base} does not exist`);
    for (const dir of elementDirs(base)) {
      const element = await loadElement(dir);
      const existing = registry.get(element.type);
      if (existing && existing.dir !== dir) {
        throw new Error(`element type ${element.type} in ${dir} is already defined in ${existing.dir}`);
      }
      registry.set(element.type, element);
    }
  }
  return registry;
}
