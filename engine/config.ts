// Reads a pipeline config (YAML), keeping every node's position, and checks it against the element
// declarations. Every mistake in a file is collected and reported at once as FILE:LINE:COL.

import { availableParallelism } from 'node:os';
import { readFileSync, existsSync, statSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseDocument, LineCounter, isAlias, isMap, isSeq, isScalar, isPair, visit, parse as parseYamlValue, Parser, CST } from 'yaml';
import type { Document, Node, YAMLMap, Scalar } from 'yaml';
import { ConfigError, ConfigErrors, ConfigWarning, didYouMean, type SourcePosition } from './errors.ts';
import { ParamTypeError, parseSize, type ValueLocation, type FileUse } from './params.ts';
import { loadRegistry, stateSizeProblems, checkProcessFile, ElementFolderError, DECLARATION_HINT, type Registry } from './registry.ts';
import type { ElementType, ParamWarning } from './element.ts';
import { parseConnections, type Connection } from './connections.ts';
import { buildGraph } from './graph.ts';
import { slotRoom } from './layout.ts';

export interface ElementInstance {
  name: string;
  type: ElementType;
  params: Record<string, unknown>;
  position: SourcePosition;
}

export interface PipelineConfig {
  file: string;
  /** Most packets a shard takes from its ring per step. */
  batch: number;
  /** Bytes per packet slot: metadata, headroom and the frame. */
  slotSize: number;
  /** Packet slots in the pool shared by the I/O side and the shards. */
  poolSlots: number;
  /** Shard workers to start with: `shards:` or, by default, one per core beyond the I/O thread. */
  shards: number;
  /** Where shards run: `threads:` worker, inline (on the I/O thread) or auto (the default; see Pipeline). */
  threads: ThreadMode;
  elements: Map<string, ElementInstance>;
  connections: Connection[];
  registry: Registry;
  /** Valid but probably unintended settings (elements' `warnings`), in file order. */
  warnings: ConfigWarning[];
  /** The parameters set on the command line (`--set`), as NAME.PARAM. */
  overridden: string[];
}

export interface LoadOptions {
  /** `--set name.param=value` overrides, applied before validation. */
  overrides?: string[];
  /**
   * For a reloaded config: the type of each element of the config the overrides were given for. An override applies
   * only where the new config has an element of that name and type; the others are left out, not errors.
   */
  overridesFor?: Record<string, string>;
  /** `--elements DIR` folders of user elements. */
  elementDirs?: string[];
  /** Config text to use instead of reading `file` (tests, `check -`). */
  text?: string;
  /**
   * What error positions name instead of `file`, when the text is not that file's (a config posted to the control API
   * without its path: its relative paths are still `file`'s).
   */
  label?: string;
}

export type ThreadMode = 'auto' | 'worker' | 'inline';
export const THREAD_MODES: ThreadMode[] = ['auto', 'worker', 'inline'];

/** Most bytes of packet slots (pool_slots × slot_size): WebAssembly's 4 GiB less room for everything else. */
const MOST_POOL_BYTES = 3 * 2 ** 30;
/** Largest packet slot, in bytes (slot_size). */
export const MAX_SLOT_SIZE = 65536;

/** Most shards a pipeline runs (bucket table entries are one byte; 0xff marks a moving bucket). */
export const MAX_SHARDS = 64;

const TOP_LEVEL = ['elements', 'connections', 'element_dirs', 'batch', 'slot_size', 'pool_slots', 'shards', 'threads'];
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LINE_FOLD = /[ \t]*\r?\n\s*/y;

/** Positions of YAML nodes as FILE:LINE:COL. */
export class Positions {
  private readonly counter = new LineCounter();
  constructor(readonly file: string, readonly text: string) {}
  get lineCounter(): LineCounter { return this.counter; }

  at(offset: number): SourcePosition {
    const { line, col } = this.counter.linePos(offset);
    // Columns count characters, as editors do: a character outside the BMP (an emoji) is two UTF-16 units of the offset.
    const before = this.text.slice(offset - col + 1, offset);
    return { file: this.file, line, col: [...before].length + 1 };
  }

  of(node: Node | null | undefined, fallback?: SourcePosition): SourcePosition {
    return node?.range ? this.at(node.range[0]) : fallback ?? { file: this.file, line: 1, col: 1 };
  }

  /** Position of a place inside a parameter's value node: an item of a list, a character of a string. */
  within(node: Node | null | undefined, at: ValueLocation, fallback: SourcePosition): SourcePosition {
    let target = node;
    if (at.item !== undefined && isSeq(node)) target = (node.items[at.item] as Node | undefined) ?? node;
    if (at.offset !== undefined && isScalar(target)) return this.inside(target, at.offset);
    return this.of(target, fallback);
  }

  /** Position of the `index`th character of a scalar's value (skipping an opening quote, or a block scalar's header line). */
  inside(node: Scalar, index: number): SourcePosition {
    if (!node.range) return this.of(node);
    const [start, end] = node.range;
    const quoted = this.text[start] === '"' || this.text[start] === "'";
    let at = start + (quoted ? 1 : 0);
    if (node.type === 'BLOCK_FOLDED' || node.type === 'BLOCK_LITERAL') {
      at = this.text.indexOf('\n', start) + 1;
      while (this.text[at] === ' ') at++;
    }
    for (let i = 0; i < index && at < end; i++) {
      // A line break of a scalar wrapped over lines, with the blanks around it, is one space of the value.
      LINE_FOLD.lastIndex = at;
      at += LINE_FOLD.exec(this.text)?.[0].length ?? 1;
    }
    return this.at(at);
  }
}

/** Where the quoted scalar starts that has no closing quote (it runs to the end of the file), and its quote mark. */
function unclosedQuote(text: string): { offset: number; mark: string } | undefined {
  const end = text.trimEnd().length;
  let found: { offset: number; mark: string } | undefined;
  for (const token of new Parser().parse(text)) {
    if (token.type !== 'document') continue;
    CST.visit(token, (item) => {
      for (const t of [item.key, item.value]) {
        if (t && (t.type === 'double-quoted-scalar' || t.type === 'single-quoted-scalar') && t.offset + t.source.trimEnd().length >= end) {
          found = { offset: t.offset, mark: t.source[0] };
        }
      }
    });
  }
  return found;
}

/**
 * An element's mapping with its merge keys (<<: *defaults, or a list of them) taken in: the keys of the mappings they
 * name that it does not write itself, each with the position where it is written.
 */
function withMerges(doc: Document, node: Node): Node {
  if (!isMap(node) || !node.items.some((item) => isMergeKey(item.key))) return node;
  const merged = node.clone() as YAMLMap;
  merged.items = node.items.filter((item) => !isMergeKey(item.key));
  const has = (key: unknown) => merged.items.some((item) => valueOf(item.key) === key);
  for (const item of node.items.filter((i) => isMergeKey(i.key))) {
    const sources = isSeq(item.value) ? item.value.items : [item.value];
    for (const source of sources) {
      const map = isAlias(source) ? source.resolve(doc) : source;
      if (isMap(map)) for (const inherited of map.items) if (!has(valueOf(inherited.key))) merged.items.push(inherited);
    }
  }
  return merged;
}

const isMergeKey = (key: unknown) => isScalar(key) && key.source === '<<';

export async function loadConfig(file: string, options: LoadOptions = {}): Promise<PipelineConfig> {
  const errors: ConfigError[] = [];
  const text = options.text ?? readConfigFile(file);
  const pos = new Positions(options.label ?? file, text);
  // Merge keys (<<: *defaults) as YAML 1.1 has them: a config shares parameters between elements with them.
  const doc = parseDocument(text, { lineCounter: pos.lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  const textLines = text.split('\n');
  // A quote never closed takes the rest of the file, and the parser notices at its end: said once, where it opens.
  const quote = doc.errors.some((e) => e.code === 'MISSING_CHAR' && /closing ["']quote/.test(e.message)) ? unclosedQuote(text) : undefined;
  if (quote) {
    throw new ConfigErrors([new ConfigError(`YAML syntax: the ${quote.mark === '"' ? 'double' : 'single'} quote here is never closed`, pos.at(quote.offset),
      `close it with another ${quote.mark} where the value ends`)]);
  }
  for (const e of doc.errors) {
    const at = pos.at(e.pos[0]);
    // YAML reads `- [1]count -> drop` as a list followed by junk.
    if (e.code === 'MULTIPLE_DOCS') {
      errors.push(new ConfigError('a config is one YAML document, and a --- line here starts another', at, 'remove the --- line and what follows it, or merge the two'));
      continue;
    }
    const hint = e.code === 'DUPLICATE_KEY' ? 'each key may appear once in a mapping: give each element its own name, and each parameter once'
      : /^\s*-\s*\[\s*\d+\s*\]\s*[A-Za-z_]/.test(textLines[at.line - 1]) ? 'quote a connection that starts with an input port: - "[1]count -> drop"'
      : 'fix the YAML syntax; indentation and unclosed brackets or quotes are the usual causes';
    errors.push(new ConfigError(`YAML syntax: ${e.message.split('\n')[0]}`, at, hint));
  }
  // The tree of a file with syntax errors is a guess; checking it would report mistakes that are not there.
  if (errors.length) throw new ConfigErrors(errors);
  // An alias (*name) stands for the node its anchor (&name) marks: a copy of that node, with its position, takes its place.
  // Aliases of aliases multiply: the yaml library counts what they would expand to, and refuses too much.
  try {
    doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (e) {
    if (!(e instanceof ReferenceError)) throw e;
    throw new ConfigErrors([new ConfigError(`its aliases expand to more than ${MAX_ALIASES} copies`, pos.at(0), 'write the repeated parts out, or use fewer aliases of aliases')]);
  }
  visit(doc, { Alias: (_, alias) => alias.resolve(doc)?.clone() as Node | undefined });
  const overridden = applyOverrides(doc, options.overrides ?? [], errors, options.overridesFor);

  const root = doc.contents;
  if (!isMap(root)) {
    errors.push(new ConfigError('a config is a mapping with `elements:` and `connections:`', pos.of(root), 'see configs/default.yaml for an example'));
    throw new ConfigErrors(errors);
  }
  // Top-level keys that a misspelt key probably meant: not reported again as missing.
  const meant = new Set<string>();
  for (const pair of root.items) {
    const key = String(valueOf(pair.key));
    if (!TOP_LEVEL.includes(key)) {
      const guess = didYouMean(key, TOP_LEVEL);
      if (guess) meant.add(guess);
      errors.push(new ConfigError(`unknown top-level key '${key}'`, pos.of(pair.key as Node), guess ? `did you mean '${guess}'?` : `the keys are ${TOP_LEVEL.join(', ')}`));
    }
  }

  const baseDir = dirname(resolve(file));
  const elementDirs: string[] = [];
  for (const dir of options.elementDirs ?? []) {
    if (existsSync(dir)) elementDirs.push(resolve(dir));
    else errors.push(new ConfigError(`--elements ${dir}: the folder does not exist`, undefined, 'give a folder that holds element folders'));
  }
  const dirsNode = root.get('element_dirs', true) as Node | undefined;
  /** Where the config names each folder of element folders. */
  const dirItems = new Map<string, Node>();
  if (dirsNode) {
    if (isSeq(dirsNode)) {
      for (const item of dirsNode.items as Node[]) {
        const dir = valueOf(item);
        if (typeof dir !== 'string') errors.push(new ConfigError('element_dirs lists folders, as strings', pos.of(item, pos.of(dirsNode)), 'write element_dirs: [./my-elements]'));
        else if (!existsSync(resolve(baseDir, dir))) errors.push(new ConfigError(`element folder '${dir}' does not exist`, pos.of(item), 'folders are relative to the config file'));
        else {
          elementDirs.push(resolve(baseDir, dir));
          dirItems.set(resolve(baseDir, dir), item);
        }
      }
    } else errors.push(new ConfigError('element_dirs must be a list of folders', pos.of(dirsNode), 'write element_dirs: [./my-elements]'));
  }
  let registry: Registry;
  try {
    registry = await loadRegistry(elementDirs);
  } catch (e) {
    // A folder's mistake is where the config names it; a declaration's is in its element.ts, which the message names.
    const folder = e instanceof ElementFolderError ? e : undefined;
    const inDeclaration = folder?.base !== undefined && folder.message.startsWith(join(folder.base, ''));
    const item = folder?.base === undefined ? undefined : dirItems.get(folder.base);
    // A folder given on the command line (--elements) is nowhere in the config: its mistake has no position there.
    const fromCommandLine = folder?.base !== undefined && !item && options.elementDirs?.some((d) => resolve(d) === folder.base);
    errors.push(new ConfigError((e as Error).message, inDeclaration || fromCommandLine ? undefined : pos.of(item ?? dirsNode),
      folder?.hint ?? 'each folder must hold element folders, each with element.ts and process.ts'));
    throw new ConfigErrors(inFileOrder(errors));
  }

  const number = (key: string, min: number, max: number, fallback: number, powerOfTwo = false, size = false): number => {
    const node = root.get(key, true) as Scalar | undefined;
    if (!node) return fallback;
    let v = node.value;
    if (size) try { v = parseSize(v); } catch { /* said below */ }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max || (powerOfTwo && (v & (v - 1)) !== 0)) {
      errors.push(new ConfigError(`${key} must be ${size ? 'a size' : 'a whole number'} from ${min} to ${max}${size ? ' bytes' : ''}${powerOfTwo ? ' and a power of two' : ''}`, pos.of(node),
        `leave it out for the default, ${fallback}${size ? ` (${fallback / 1024}KiB: a size may have a unit)` : ''}`));
      return fallback;
    }
    return v;
  };
  const batch = number('batch', 1, 4096, 256);
  const slotSize = number('slot_size', 256, MAX_SLOT_SIZE, 2048, true, true);
  const poolSlots = number('pool_slots', 64, 1 << 20, 16384, true);
  // The slots share the 4 GiB of WebAssembly memory with the rings, batches and tables.
  if (slotSize * poolSlots > MOST_POOL_BYTES) {
    errors.push(new ConfigError(`pool_slots × slot_size is ${slotSize * poolSlots / 2 ** 30} GiB: the packet slots may take at most ${MOST_POOL_BYTES / 2 ** 30} GiB of the pipeline's 4 GiB of memory`,
      pos.of(root.get('pool_slots', true) as Node | undefined ?? root.get('slot_size', true) as Node | undefined), `fewer pool_slots (at most ${2 ** Math.floor(Math.log2(MOST_POOL_BYTES / slotSize))}) or a smaller slot_size`));
  }
  // The I/O thread polls, so more shards than cores - 1 only share cores (spike §3: 0.5-0.7x).
  const shards = number('shards', 1, MAX_SHARDS, Math.max(1, availableParallelism() - 1));
  const threadsNode = root.get('threads', true) as Scalar | undefined;
  const threads = (threadsNode?.value ?? 'auto') as ThreadMode;
  if (!THREAD_MODES.includes(threads)) {
    errors.push(new ConfigError(`threads must be one of ${THREAD_MODES.join(', ')}`, pos.of(threadsNode),
      'leave it out for auto: shard workers, or the I/O thread when a device source shares two cores or fewer with the kernel'));
  }

  const warnings: ConfigWarning[] = [];
  const flawed = new Set<string>();
  const elements = readElements(doc, root, registry, pos, overridden, meant, errors, warnings, flawed, slotSize);
  errors.push(...fileClashes(elements, root, pos, file));
  const connectionsNode = root.get('connections', true) as Node | undefined;
  let connections: Connection[] = [];
  let connectionsRead = false;
  if (!connectionsNode) {
    if (!meant.has('connections')) errors.push(new ConfigError('the config has no connections', pos.of(root), "add `connections:` with lines like 'src -> count -> drop'"));
  } else if (!isSeq(connectionsNode)) {
    errors.push(new ConfigError('connections must be a list of strings', pos.of(connectionsNode), "write each chain as a list item: - src -> count -> drop"));
  } else {
    const before = errors.length;
    connections = parseConnections(connectionsNode.items as Node[], pos, errors);
    connectionsRead = errors.length === before;
  }

  const config = { file, batch, slotSize, poolSlots, shards, threads, elements, connections, registry, warnings: inFileOrder(warnings), overridden: [...overridden] };
  if (errors.length) {
    if (connectionsRead) errors.push(...connectionErrors(config, root, flawed));
    throw new ConfigErrors(inFileOrder(errors));
  }
  return config;
}

/**
 * Files that two elements use where one writes (param.file), or an element writes the config itself: a ToPcap into
 * the capture a FromPcap reads emptied it before the first packet, two into one file overwrote each other's records.
 * Readers may share a file, and so may writers that append. A file that exists is known by its inode (links and other
 * spellings of its path too), one that does not yet by its path from its nearest folder that exists, links resolved;
 * FIFOs and devices are left alone.
 */
function fileClashes(elements: Map<string, ElementInstance>, root: YAMLMap, pos: Positions, configFile: string): ConfigError[] {
  const identity = (path: string) => {
    try {
      const stat = statSync(path);
      return stat.isFile() ? `${stat.dev}:${stat.ino}` : undefined;
    } catch {
      return realPathOfNew(path);
    }
  };
  const errors: ConfigError[] = [];
  const users = new Map<string | undefined, { user?: string; use: FileUse }>([[identity(resolve(configFile)), { use: 'reads' }]]);
  for (const { name, type, params, position } of elements.values()) {
    for (const [key, spec] of Object.entries(type.params)) {
      const value = params[key];
      if (!spec.file || typeof value !== 'string' || value === '-') continue;
      const path = resolve(dirname(configFile), value);
      const id = identity(path);
      if (id === undefined) continue;
      const other = users.get(id);
      if (!other) users.set(id, { user: name, use: spec.file });
      else if (spec.file !== other.use || spec.file === 'writes') {
        const clash = !other.user ? `${path} is the config file`
          : spec.file === 'reads' ? `${other.user} writes ${path}, which this reads`
          : other.use === 'reads' ? `${other.user} reads ${path}, which this writes`
          : `${other.user} writes ${path} too: the two would overwrite each other's records`;
        errors.push(new ConfigError(`${name}.${key}: ${clash}`, pos.of(root.getIn(['elements', name, key], true) as Node | undefined, position),
          'give each element a file of its own'));
      }
    }
  }
  return errors;
}

/** The real path of a file that does not exist yet: its nearest existing folder's, links resolved, with the rest after it. */
function realPathOfNew(path: string): string {
  const rest: string[] = [];
  for (let at = path; dirname(at) !== at; at = dirname(at)) {
    try {
      return join(realpathSync(at), ...rest);
    } catch {
      rest.unshift(basename(at));
    }
  }
  return path;
}

/** Most copies a config's aliases may make (the yaml library's count: uses times the aliases inside each anchor). */
const MAX_ALIASES = 10_000;

export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const what = code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a folder' : `cannot be read (${code})`;
    throw new ConfigErrors([new ConfigError(`config file ${file} ${what}`, undefined, 'give the path of a YAML config, e.g. configs/default.yaml')]);
  }
}

/** Errors sorted by where they are, those of the command line (no position) first. */
export function inFileOrder<E extends ConfigError>(errors: E[]): E[] {
  const key = (e: ConfigError) => (e.position ? e.position.line * 1e6 + e.position.col : 0);
  return [...errors].sort((a, b) => key(a) - key(b));
}

/** The value of a scalar node; any other node as it is (a key may be a list, for instance). */
function valueOf(node: unknown): unknown {
  return isScalar(node) ? node.value : node;
}

/**
 * The graph's mistakes (buildGraph) in a config that has others, so that all are reported at once; none when
 * an element is missing (its name would be reported again as unknown); when an element whose parameters failed
 * has ports that its parameters decide (they would be judged from defaults it was not given), only the names
 * that name no element.
 */
function connectionErrors(config: PipelineConfig, root: YAMLMap, flawed: Set<string>): ConfigError[] {
  const declared = root.get('elements', true);
  if (!isMap(declared) || declared.items.length !== config.elements.size) return [];
  const portsUnknown = [...flawed].some((name) => !Array.isArray(config.elements.get(name)!.type.outputs));
  try {
    buildGraph(config);
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.filter((error) => !portsUnknown || error.message.startsWith('connection names unknown element'));
  }
  return [];
}

/** Reads the elements; the names of those with mistakes in their parameters go into `flawed`. */
function readElements(doc: Document, root: YAMLMap, registry: Registry, pos: Positions, overridden: Set<string>, meant: Set<string>, errors: ConfigError[],
  warnings: ConfigWarning[], flawed: Set<string>, slotSize: number): Map<string, ElementInstance> {
  const elements = new Map<string, ElementInstance>();
  const node = root.get('elements', true) as Node | undefined;
  if (isSeq(node)) {
    errors.push(new ConfigError('elements is a list: it must map names to elements', pos.of(node), 'write `name: { type: ..., params }` lines under elements:, without a leading -'));
    return elements;
  }
  if (!node || !isMap(node) || !node.items.length) {
    if (node || !meant.has('elements')) errors.push(new ConfigError('the config has no elements', pos.of(node ?? root), 'add `elements:` mapping names to { type: ..., params }'));
    return elements;
  }
  const processChecked = new Set<ElementType>();
  for (const pair of node.items) {
    const name = String(valueOf(pair.key));
    const at = pos.of(pair.key as Node);
    if (!NAME.test(name)) {
      errors.push(new ConfigError(`element name '${name}' is not a valid name`, at, 'use letters, digits and _, not starting with a digit'));
      continue;
    }
    const body = withMerges(doc, pair.value as Node);
    if (!isMap(body)) {
      const asType = isScalar(body) && typeof body.value === 'string' ? body.value : 'Counter';
      errors.push(new ConfigError(`element '${name}' must be a mapping with a type`, pos.of(body, at), `write ${name}: { type: ${asType} }`));
      continue;
    }
    const typeNode = body.get('type', true) as Scalar | undefined;
    if (!typeNode || typeNode.value === null || typeNode.value === '') {
      // A key that was meant to be type (Type, tpye): said where it is.
      const meantType = body.items.find((item) => {
        const key = String(valueOf(item.key));
        return key !== 'type' && key[0]?.toLowerCase() === 't' && didYouMean(key, ['type']) !== undefined;
      });
      errors.push(meantType ? new ConfigError(`element '${name}' has no type`, pos.of(meantType.key as Node, at), `did you mean 'type'? (keys are lower case)`)
        : new ConfigError(`element '${name}' has no type`, at, `add type:, one of ${[...registry.keys()].sort().join(', ')}`));
      continue;
    }
    const typeFrom = overridden.has(`${name}.type`) ? ' (set on the command line)' : '';
    if (!isScalar(typeNode)) {
      errors.push(new ConfigError(`element '${name}': type is one type's name, not a list or a mapping`, pos.of(typeNode, at), 'write type: Counter'));
      continue;
    }
    const typeName = String(typeNode.value);
    const type = registry.get(typeName);
    if (!type) {
      const guess = didYouMean(typeName, registry.keys());
      errors.push(new ConfigError(`unknown element type '${typeName}'${typeFrom}`, pos.of(typeNode, at), guess ? `did you mean '${guess}'?` : `known types: ${[...registry.keys()].sort().join(', ')}; one of your own needs its folder in element_dirs`));
      continue;
    }
    if (!processChecked.has(type)) {
      processChecked.add(type);
      try {
        checkProcessFile(type);
      } catch (e) {
        if (!(e instanceof ElementFolderError)) throw e;
        errors.push(new ConfigError(e.message, pos.of(typeNode, at), e.hint));
      }
    }
    const params: Record<string, unknown> = {};
    const valueNodes = new Map<string, Node>();
    const errorsBefore = errors.length;
    for (const item of body.items) {
      if (!isPair(item)) continue;
      const key = String(valueOf(item.key));
      if (key === 'type') continue;
      const keyAt = pos.of(item.key as Node, at);
      // Own parameters only: not 'constructor' and the like, which every object has.
      const spec = Object.hasOwn(type.params, key) ? type.params[key] : undefined;
      if (!spec) {
        const guess = didYouMean(key, Object.keys(type.params));
        const known = Object.keys(type.params);
        const from = overridden.has(`${name}.${key}`) ? ' (set on the command line)' : '';
        errors.push(new ConfigError(`${typeName} has no parameter '${key}'${from}`, keyAt,
          guess ? `did you mean '${guess}'?` : known.length ? `its parameters are ${known.join(', ')}` : `${typeName} takes no parameters`));
        continue;
      }
      const valueNode = item.value as Node;
      valueNodes.set(key, valueNode);
      const raw = isScalar(valueNode) ? valueNode.value : valueNode?.toJSON();
      if (raw === null || raw === undefined) {
        errors.push(new ConfigError(`${name}.${key}: no value (YAML reads nothing, ~ and null as none)`, pos.of(valueNode, keyAt),
          spec.required ? `give ${spec.type.description}` : `give ${spec.type.description}, or leave ${key} out for its default`));
        continue;
      }
      try {
        params[key] = spec.type.parse(raw);
      } catch (e) {
        if (!ParamTypeError.is(e)) throw e;
        const from = overridden.has(`${name}.${key}`) ? ' (set on the command line)' : '';
        for (const mistake of [e, ...(e.more ?? [])]) {
          errors.push(new ConfigError(`${name}.${key}: ${mistake.message}${from}`, pos.within(valueNode, mistake.at, keyAt), mistake.hint));
        }
      }
    }
    for (const [key, spec] of Object.entries(type.params)) {
      if (key in params || body.has(key)) continue;
      if (spec.required) {
        errors.push(new ConfigError(`${typeName} '${name}' needs parameter '${key}' (${spec.type.description})`, at, `add ${key}: ... — ${spec.doc}`));
      } else if (spec.default !== undefined) {
        params[key] = spec.default;
      }
    }
    if (errors.length !== errorsBefore) flawed.add(name);
    else {
      for (const problem of stateSizeProblems(type, params)) {
        errors.push(new ConfigError(`${name} (${typeName}): ${join(type.dir, 'element.ts')}: ${problem}`, at, DECLARATION_HINT));
      }
      // What the element's own hooks return is checked as its declaration is: a wrong shape would print undefined.
      const said = (hook: 'invalid' | 'warnings', list: unknown): ParamWarning[] => {
        if (list === undefined || list === null) return [];
        const items = Array.isArray(list) ? list : [list];
        const wrong = items.filter((w) => typeof w?.param !== 'string' || typeof w?.message !== 'string');
        if (wrong.length) {
          errors.push(new ConfigError(`${name} (${typeName}): ${join(type.dir, 'element.ts')}: ${hook}() returned ${JSON.stringify(wrong[0])}, `
            + 'not a list of { param, message, hint?, at? } (ParamWarning)', at, DECLARATION_HINT));
        }
        return items.filter((w) => !wrong.includes(w));
      };
      for (const e of said('invalid', type.invalid?.(params, { slotSize, slotRoom: slotRoom(slotSize) }))) {
        errors.push(new ConfigError(`${name}.${e.param}: ${e.message}`, pos.within(valueNodes.get(e.param), e.at ?? {}, at), e.hint));
      }
      for (const w of said('warnings', type.warnings?.(params))) {
        warnings.push(new ConfigWarning(`${name}.${w.param}: ${w.message}`, pos.within(valueNodes.get(w.param), w.at ?? {}, at), w.hint));
      }
    }
    elements.set(name, { name, type, params, position: at });
  }
  return elements;
}

/** Applies `name.param=value` overrides to the document; returns the paths it set. */
function applyOverrides(doc: Document, overrides: string[], errors: ConfigError[], meantFor?: Record<string, string>): Set<string> {
  const set = new Set<string>();
  const elements = doc.get('elements', true);
  for (const o of overrides) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(o);
    if (!m) {
      errors.push(new ConfigError(`--set ${o}: expected NAME.PARAM=VALUE`, undefined, TOP_LEVEL.includes(o.split('=')[0])
        ? '--set changes an element\'s parameter; settings of the whole config (batch, shards, ...) are set in its file'
        : 'for example --set src.file=trace.pcap'));
      continue;
    }
    const [, name, key, value] = m;
    const body = isMap(elements) ? elements.get(name, true) : undefined;
    if (meantFor && !(isMap(body) && String(body.get('type')) === meantFor[name])) continue;
    if (body === undefined) {
      const guess = didYouMean(name, isMap(elements) ? elements.items.map((p) => String(valueOf(p.key))) : []);
      errors.push(new ConfigError(`--set ${o}: the config has no element '${name}'`, undefined, guess ? `did you mean '${guess}'?` : undefined));
      continue;
    }
    // An element that is not a mapping is reported by readElements.
    if (!isMap(body)) continue;
    // A value is YAML as in the file, except that only [...] and {...} make a list or a mapping: '-' or 'a: b' on a
    // command line are meant as text (a NAT's log: -), not as YAML's block forms.
    let parsed: unknown;
    try { parsed = parseYamlValue(value); } catch { parsed = value; }
    if (parsed !== null && typeof parsed === 'object' && !/^\s*[[{]/.test(value)) parsed = value;
    // Nodes, not plain values, so that readElements reads them like the file's own.
    const pair = body.items.find((p) => valueOf(p.key) === key);
    if (pair) pair.value = doc.createNode(parsed ?? value);
    else body.items.push(doc.createPair(key, parsed ?? value));
    set.add(`${name}.${key}`);
  }
  return set;
}
