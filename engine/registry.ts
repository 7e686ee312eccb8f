// Finds element folders (each with element.ts and process.ts) and loads their declarations.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { register } from 'node:module';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MERGE_RULES, declarationLine, type ElementDefinition, type ElementType, type PortSpec } from './element.ts';
import { didYouMean } from './errors.ts';
import { elementLayout } from './layout.ts';
import { FAST_TYPES, param, ParamTypeError } from './params.ts';

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

/** A mistake in an element folder (its element.ts, or what its process.ts lacks): names the file, with what to do. */
export class ElementFolderError extends Error {
  /** The folder of element folders (as given: element_dirs, --elements) the mistake is in. */
  base?: string;

  constructor(message: string, readonly hint: string) {
    super(message);
    this.name = 'ElementFolderError';
  }
}

export const DECLARATION_HINT = 'fix the element\'s declaration; the README\'s "Writing an element" shows what element.ts holds';

/** Where in `file` an error thrown while importing it comes from (file:line:col from its stack), or the file alone. */
function whereIn(e: Error, file: string): string {
  const frame = e.stack?.split('\n').find((line) => line.includes(file));
  const at = frame && /:(\d+):(\d+)\)?$/.exec(frame);
  return at ? `${file}:${at[1]}:${at[2]}` : file;
}

async function loadElement(dir: string): Promise<ElementType> {
  const file = join(dir, 'element.ts');
  let module: { default?: ElementDefinition };
  try {
    // Named by its modification time: a reload imports an element.ts edited since, not the one first imported.
    module = await import(`${pathToFileURL(file).href}?mtime=${statSync(file).mtimeMs}`);
  } catch (e) {
    const error = e as Error;
    throw new ElementFolderError(error.message.includes(file) ? error.message : `${whereIn(error, file)}: ${error.message}`, DECLARATION_HINT);
  }
  const definition = module.default;
  if (!definition || typeof definition.type !== 'string') {
    throw new ElementFolderError(`${file} must export default defineElement({...})`, DECLARATION_HINT);
  }
  const kind = definition.source ? 'source' : definition.sink ? 'sink' : 'element';
  // An element without parameters may leave `params` out.
  const params = kind === 'source' ? { ...definition.params, steer: STEER_PARAM } : definition.params ?? {};
  const element: ElementType = { ...definition, params, dir, kind };
  checkDeclaration(element, Object.keys(definition));
  return element;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A state field in a declaration check's message, with the line of element.ts that declares it when known. */
const stateAt = (name: string, spec: object) => `state '${name}'${declarationLine(spec) ? ` (line ${declarationLine(spec)})` : ''}`;
/** What the engine counts of every element (ElementStats), under names no state field or handler may take. */
const ENGINE_COUNTS = ['type', 'in', 'out', 'unconnected_drops'];
/** The engine's own /metrics families beside wirepath_element_* and wirepath_shard_* (engine/control.ts metrics), without _total. */
const RUNTIME_FAMILIES = ['pool_exhausted', 'crashes', 'crash_packets_lost', 'overlong', 'later_fragments_waited', 'later_fragments_without_first'];
/** The keys of ElementDefinition: a declaration's other keys are typos (element.ts is loaded without type checks). */
const DEFINITION_KEYS = ['type', 'summary', 'description', 'inputs', 'outputs', 'params', 'state', 'handlers', 'warnings', 'invalid', 'holding',
  'example', 'varies', 'expands', 'clones', 'source', 'sink', 'check', 'live', 'ioExports', 'periodic', 'steer', 'tick', 'firstFragmentFirst', 'specialize'];

/**
 * What the compiler would otherwise report in files the author never sees (the generated layout and graph): names
 * that are no identifiers or that two fields share (checkProcessFile: a process.ts missing, or a function the engine calls).
 */
function checkDeclaration(element: ElementType, keys: string[]): void {
  const file = join(element.dir, 'element.ts');
  const problems: string[] = [];
  for (const key of keys.filter((k) => !DEFINITION_KEYS.includes(k))) {
    const guess = didYouMean(key, DEFINITION_KEYS);
    problems.push(`'${key}' is not a key of an element's declaration${guess ? ` (did you mean '${guess}'?)` : ''}`);
  }
  problems.push(...shapeProblems(element));
  if (!IDENTIFIER.test(element.type)) problems.push(`type '${element.type}' is not a name the generated code can use: letters, digits and _, not first a digit`);
  for (const [what, names] of [['parameter', Object.keys(element.params)], ['state field', Object.keys(element.state ?? {})]] as const) {
    for (const name of names) if (!IDENTIFIER.test(name)) problems.push(`${what} '${name}' is not a name process.ts can use: letters, digits and _, not first a digit`);
  }
  // A handler's name is a /metrics series name too, and a scraper refuses the whole page for one it cannot read.
  for (const name of Object.keys(element.handlers ?? {})) {
    if (!IDENTIFIER.test(name)) problems.push(`handler '${name}' is not a name /metrics can use (wirepath_${name}): letters, digits and _, not first a digit`);
  }
  // Parameters and state fields each have a handler of their name, and state a `reset`: one name, one handler.
  const reset = 'reset' in element.params ? 'a parameter' : element.state && 'reset' in element.state ? 'a state field' : undefined;
  if (element.state && reset) problems.push(`${reset} named 'reset' would hide the handler that zeroes the counters; rename it`);
  // `--set NAME.type=...` and a config's `type:` key name the element's type.
  if ('type' in element.params) problems.push(`a parameter named 'type' could never be set: \`type:\` in a config names the element's type; rename it`);
  // The engine's own counts of every element sit beside its counters in stats and /metrics: one name, one value.
  for (const name of [...Object.keys(element.state ?? {}), ...Object.keys(element.handlers ?? {})]) {
    if (ENGINE_COUNTS.includes(name)) problems.push(`'${name}' is the engine's own count of the element's packets (${ENGINE_COUNTS.join(', ')}): name your state field or handler otherwise`);
    // In /metrics a handler NAME is wirepath_NAME(_total): it must not be one of the engine's own families.
    const family = name.replace(/_total$/, '');
    if (/^(element|shard)_/.test(family) || RUNTIME_FAMILIES.includes(family)) {
      problems.push(`'${name}' would be /metrics' wirepath_${family}_total, one of the engine's own series: name your state field or handler otherwise`);
    }
  }
  for (const [name, s] of Object.entries(element.state ?? {})) {
    const functions = s.kind === 'flow-table' ? ['capacity', 'timeout'] : s.kind === 'data' ? ['size', 'init'] : [];
    const missing = functions.filter((f) => typeof (s as unknown as Record<string, unknown>)[f] !== 'function');
    if (missing.length) problems.push(`${stateAt(name, s)} needs ${functions.join(' and ')}, functions of the parameters: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not`);
  }
  if (!problems.length) {
    const seen = new Map<string, string>();
    const { fields, tables } = elementLayout(element);
    for (const f of fields) {
      const from = 'param' in f.from ? `parameter '${f.from.param}'` : 'has' in f.from ? `optional parameter '${f.from.has}' (its has_ flag)` : `state field '${f.from.state}'`;
      const other = seen.get(f.name);
      if (other) problems.push(`${from} and ${other} both make the layout field '${f.name}'; rename one`);
      else seen.set(f.name, from);
    }
    for (const t of tables) for (const f of t.entry.fields) if (!IDENTIFIER.test(f.name)) problems.push(`table '${t.state}': value field '${f.name}' is not a name process.ts can use`);
  }
  if (problems.length) throw new ElementFolderError(`${file}: ${problems.join('; ')}`, DECLARATION_HINT);
}

/** Ports, parameter defaults and value types as the engine needs them, each mistake named (a whole declaration's at once). */
function shapeProblems(element: ElementType): string[] {
  const problems: string[] = [];
  if (!Number.isInteger(element.inputs) || element.inputs < 0) problems.push(`inputs: ${JSON.stringify(element.inputs)} is not a number of input ports (0 or more)`);
  const port = (p: unknown) => typeof p === 'object' && p !== null && typeof (p as PortSpec).name === 'string' && typeof (p as PortSpec).doc === 'string';
  if (typeof element.outputs !== 'function' && !(Array.isArray(element.outputs) && element.outputs.every(port))) {
    problems.push(`outputs: ${JSON.stringify(element.outputs)} is not a list of ports ({ name, doc } each) nor a function of the parameters giving one`);
  }
  if (typeof element.summary !== 'string' || !element.summary.trim()) problems.push('summary: the line `wirepath elements` lists, as a string, is missing');
  if (element.example !== undefined && typeof element.example !== 'string') problems.push('example: a config snippet that uses the element, as a string');
  for (const [name, spec] of Object.entries(element.params)) if (spec.badDefault) problems.push(`parameter '${name}'${spec.badDefault}`);
  for (const [name, h] of Object.entries(element.handlers ?? {})) {
    if (typeof h?.read !== 'function' && typeof h?.write !== 'function') problems.push(`handler '${name}' has neither read nor write: give it one of them, or both`);
    if (typeof h?.doc !== 'string' || !h.doc.trim()) problems.push(`handler '${name}': doc, the line that documents it, is missing`);
  }
  for (const [name, s] of Object.entries(element.state ?? {})) {
    if (typeof s?.doc !== 'string' || !s.doc.trim()) problems.push(`${stateAt(name, s)}: its first argument, the line that documents it, is missing`);
    // /metrics names a counter NAME_total; a gauge so named reads as a counter that went down.
    if (s?.kind === 'scalar' && !s.monotonic && !s.internal && name.endsWith('_total')) problems.push(`${stateAt(name, s)}: a gauge's name ends in _total, which /metrics keeps for counters: name it otherwise`);
  }
  const fastType = (type: unknown) => (FAST_TYPES as readonly unknown[]).includes(type);
  // A rule the engine does not know would merge the shards' values by none of them (min, as it fell through).
  const mergeRule = (rule: unknown) => (MERGE_RULES as readonly unknown[]).includes(rule);
  for (const [name, s] of Object.entries(element.state ?? {})) {
    if (s.kind === 'scalar' && !fastType(s.type)) problems.push(`${stateAt(name, s)}: type ${JSON.stringify(s.type)} is not one of ${FAST_TYPES.join(', ')}`);
    if (s.kind === 'scalar' && !mergeRule(s.merge)) {
      problems.push(`${stateAt(name, s)}: merge rule ${JSON.stringify(s.merge)} is not one of ${MERGE_RULES.join(', ')}: how the shards' values make one (state.gauge(doc, 'max'))`);
    }
    if (s.kind !== 'flow-table') continue;
    if (typeof s.value !== 'object' || s.value === null || Array.isArray(s.value)) {
      problems.push(`${stateAt(name, s)}: value must name each field of an entry with its type ({ packets: 'u64' }), not ${JSON.stringify(s.value)}`);
      continue;
    }
    for (const [field, type] of Object.entries(s.value)) {
      if (!fastType(type)) problems.push(`${stateAt(name, s)}: value field '${field}' has type ${JSON.stringify(type)}, not one of ${FAST_TYPES.join(', ')}`);
    }
    for (const [field, rule] of Object.entries(s.merge ?? {})) {
      if (!(field in s.value)) problems.push(`${stateAt(name, s)}: merge names '${field}', which is no value field`);
      else if (!mergeRule(rule)) problems.push(`${stateAt(name, s)}: merge rule ${JSON.stringify(rule)} of '${field}' is not one of ${MERGE_RULES.join(', ')}`);
    }
  }
  return problems;
}

/**
 * What an element's `init` of a data field throws for these parameters, said where in its element.ts (it runs
 * when a pipeline lays its memory out; `check` runs it on bytes of its own, so that it does not wait for a run).
 */
export function dataInitProblem(type: ElementType, field: string, e: unknown): string {
  return elementCodeProblem(type, `state '${field}': init(params, bytes, address)`, e);
}

/** What a function of an element's declaration (`what`) threw, said at its line in the element's element.ts. */
export function elementCodeProblem(type: ElementType, what: string, e: unknown): string {
  return `${whereIn(e as Error, join(type.dir, 'element.ts'))}: ${what} threw ${(e as Error)?.message ?? e}`;
}

/** The problems of every data field's `init` for one instance's parameters, run on bytes of its own. */
export function dataInitProblems(type: ElementType, params: Record<string, unknown>): string[] {
  return Object.entries(type.state ?? {}).flatMap(([field, s]) => {
    if (s.kind !== 'data') return [];
    try {
      const size = s.size(params);
      s.init(params, new DataView(new ArrayBuffer(size)), 0);
      return [];
    } catch (e) {
      return [dataInitProblem(type, field, e)];
    }
  });
}

/**
 * What a declaration's state sizes give for one instance's parameters, where they are no sizes (a typo in
 * `capacity: (p) => p.capcity` gives undefined, and the tables would be laid out from NaN): one problem each.
 */
export function stateSizeProblems(type: ElementType, params: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const expect = (field: string, what: string, size: (p: any) => unknown, valid: (v: number) => boolean, wanted: string) => {
    const named = stateAt(field, type.state![field]);
    let value: unknown;
    try {
      value = size(params);
    } catch (e) {
      problems.push(`${named}: ${what}(params) threw ${(e as Error).message}`);
      return;
    }
    if (typeof value !== 'number' || !valid(value)) problems.push(`${named}: ${what}(params) gave ${typeof value === 'number' ? value : String(value)}, not ${wanted}`);
  };
  for (const [field, s] of Object.entries(type.state ?? {})) {
    if (s.kind === 'flow-table') {
      expect(field, 'capacity', s.capacity, (v) => Number.isSafeInteger(v) && v >= 1, 'a whole number of entries, at least 1');
      expect(field, 'timeout', s.timeout, (v) => Number.isInteger(v) && v >= 0, 'a whole number of nanoseconds');
    } else if (s.kind === 'data') {
      expect(field, 'size', s.size, (v) => Number.isSafeInteger(v) && v >= 0, 'a whole number of bytes');
    }
  }
  return problems;
}

/** process.ts exists and exports each function the engine calls: process (not for sources and sinks), ioExports, steer. */
/** How the engine calls an element's `process`, `tick` or `steer` (the function's name, or the name alone for another). */
export function engineSignature(element: ElementType, fn: string): string {
  const self = `self: ${element.type}State`;
  if (fn === 'process') return `process(${self}, batch: Batch, out: Outputs${element.inputs > 1 ? ', port: i32' : ''}): void`;
  if (fn === 'steer') return `steer(${self}, p: Packet): u32`;
  if (fn === 'tick') return `tick(${self}, out: Outputs): void`;
  return fn;
}

/**
 * What process.ts lacks of the functions the engine calls, checked for the elements a config uses (not when the
 * registry loads: `wirepath elements TYPE --layout` shows the layout that a process.ts still to be written needs).
 */
export function checkProcessFile(element: ElementType): void {
  const file = join(element.dir, 'process.ts');
  const hint = 'the README\'s "Writing an element" shows the functions process.ts exports';
  if (!existsSync(file)) throw new ElementFolderError(`${file} is missing: the element's batch loop (AssemblyScript) goes there`, hint);
  const text = readFileSync(file, 'utf8');
  // `export *` from another file may hold it: the compiler has the last word then.
  const exported = (fn: string) => /export\s*\*/.test(text) || new RegExp(`export\\s+function\\s+${fn}\\b|export\\s*\\{[^}]*\\b${fn}\\b[^}]*\\}`).test(text);
  const why: Record<string, string> = { steer: ' (element.ts declares steer)', tick: ' (element.ts declares tick)' };
  const wanted = [...(element.kind === 'element' ? ['process'] : []), ...(element.ioExports ?? []), ...(element.steer ? ['steer'] : []),
    ...(element.tick && element.kind === 'element' ? ['tick'] : [])];
  const missing = wanted.filter((fn) => !exported(fn))
    .map((fn) => `function ${element.ioExports?.includes(fn) ? `${fn} (element.ts names it in ioExports)` : engineSignature(element, fn) + (why[fn] ?? '')}`);
  if (missing.length) throw new ElementFolderError(`${file} must export ${missing.join(' and ')}`, hint);
}

/** The built-in elements plus those in `extraDirs` (a user's element folders); a later one may not reuse a type name. */
export async function loadRegistry(extraDirs: string[] = []): Promise<Registry> {
  const registry: Registry = new Map();
  const dirs = [BUILTIN_ELEMENTS, ...extraDirs.map((d) => resolve(d))];
  for (const base of dirs) {
    try {
      if (!existsSync(base)) throw new ElementFolderError(`element folder ${base} does not exist`, 'give a folder that holds element folders');
      if (!statSync(base).isDirectory()) throw new ElementFolderError(`element folder ${base} is a file`, 'give the folder that holds element folders (each with element.ts and process.ts)');
      for (const dir of elementDirs(base)) {
        const element = await loadElement(dir);
        const existing = registry.get(element.type);
        if (existing && existing.dir !== dir) {
          throw new ElementFolderError(`element type ${element.type} in ${dir} is already defined in ${existing.dir}`, 'give your element another type name');
        }
        registry.set(element.type, element);
      }
    } catch (e) {
      if (e instanceof ElementFolderError) e.base = base;
      throw e;
    }
  }
  return registry;
}
