// Reads a pipeline config (YAML), keeping every node's position, and checks it against the element
// declarations. Every mistake in a file is collected and reported at once as FILE:LINE:COL.

import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument, LineCounter, isMap, isSeq, isScalar, isPair, parse as parseYamlValue } from 'yaml';
import type { Document, Node, YAMLMap, Scalar } from 'yaml';
import { ConfigError, ConfigErrors, didYouMean, type SourcePosition } from './errors.ts';
import { ParamTypeError } from './params.ts';
import { loadRegistry, type Registry } from './registry.ts';
import type { ElementType } from './element.ts';
import { parseConnections, type Connection } from './connections.ts';

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
  elements: Map<string, ElementInstance>;
  connections: Connection[];
  registry: Registry;
}

export interface LoadOptions {
  /** `--set name.param=value` overrides, applied before validation. */
  overrides?: string[];
  /** `--elements DIR` folders of user elements. */
  elementDirs?: string[];
  /** Config text to use instead of reading `file` (tests, `check -`). */
  text?: string;
}

const TOP_LEVEL = ['elements', 'connections', 'element_dirs', 'batch', 'slot_size', 'pool_slots'];
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Positions of YAML nodes as FILE:LINE:COL. */
export class Positions {
  private readonly counter = new LineCounter();
  constructor(readonly file: string, readonly text: string) {}
  get lineCounter(): LineCounter { return this.counter; }

  at(offset: number): SourcePosition {
    const { line, col } = this.counter.linePos(offset);
    return { file: this.file, line, col };
  }

  of(node: Node | null | undefined, fallback?: SourcePosition): SourcePosition {
    return node?.range ? this.at(node.range[0]) : fallback ?? { file: this.file, line: 1, col: 1 };
  }

  /** Position of the `index`th character of a scalar's value (skipping an opening quote). */
  inside(node: Scalar, index: number): SourcePosition {
    const start = node.range![0];
    const quoted = this.text[start] === '"' || this.text[start] === "'";
    return this.at(start + (quoted ? 1 : 0) + index);
  }
}

export async function loadConfig(file: string, options: LoadOptions = {}): Promise<PipelineConfig> {
  const errors: ConfigError[] = [];
  if (options.text === undefined && !existsSync(file)) {
    throw new ConfigErrors([new ConfigError(`config file ${file} does not exist`, undefined, 'give the path of a YAML config, e.g. configs/default.yaml')]);
  }
  const text = options.text ?? readFileSync(file, 'utf8');
  const pos = new Positions(file, text);
  const doc = parseDocument(text, { lineCounter: pos.lineCounter, prettyErrors: false, uniqueKeys: true });
  for (const e of doc.errors) {
    errors.push(new ConfigError(`YAML syntax: ${e.message.split('\n')[0]}`, pos.at(e.pos[0]), 'fix the YAML syntax; indentation and unclosed brackets or quotes are the usual causes'));
  }
  const overridden = applyOverrides(doc, options.overrides ?? [], errors);

  const root = doc.contents;
  if (!isMap(root)) {
    if (!errors.length) errors.push(new ConfigError('a config is a mapping with `elements:` and `connections:`', pos.of(root), 'see configs/default.yaml for an example'));
    throw new ConfigErrors(errors);
  }
  for (const pair of root.items) {
    const key = String((pair.key as Scalar).value);
    if (!TOP_LEVEL.includes(key)) {
      const guess = didYouMean(key, TOP_LEVEL);
      errors.push(new ConfigError(`unknown top-level key '${key}'`, pos.of(pair.key as Node), guess ? `did you mean '${guess}'?` : `the keys are ${TOP_LEVEL.join(', ')}`));
    }
  }

  const baseDir = dirname(resolve(file));
  const elementDirs = [...(options.elementDirs ?? [])];
  const dirsNode = root.get('element_dirs', true) as Node | undefined;
  if (dirsNode) {
    if (isSeq(dirsNode)) for (const item of dirsNode.items) elementDirs.push(resolve(baseDir, String((item as Scalar).value)));
    else errors.push(new ConfigError('element_dirs must be a list of folders', pos.of(dirsNode), 'write element_dirs: [./my-elements]'));
  }
  let registry: Registry;
  try {
    registry = await loadRegistry(elementDirs);
  } catch (e) {
    errors.push(new ConfigError((e as Error).message, pos.of(dirsNode), 'each folder must hold element folders, each with element.ts and process.ts'));
    throw new ConfigErrors(errors);
  }

  const number = (key: string, min: number, max: number, fallback: number, powerOfTwo = false): number => {
    const node = root.get(key, true) as Scalar | undefined;
    if (!node) return fallback;
    const v = node.value;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max || (powerOfTwo && (v & (v - 1)) !== 0)) {
      errors.push(new ConfigError(`${key} must be a whole number from ${min} to ${max}${powerOfTwo ? ' and a power of two' : ''}`, pos.of(node)));
      return fallback;
    }
    return v;
  };
  const batch = number('batch', 1, 4096, 256);
  const slotSize = number('slot_size', 256, 65536, 2048, true);
  const poolSlots = number('pool_slots', 64, 1 << 20, 16384, true);

  const elements = readElements(root, registry, pos, overridden, errors);
  const connectionsNode = root.get('connections', true) as Node | undefined;
  let connections: Connection[] = [];
  if (!connectionsNode) {
    errors.push(new ConfigError('the config has no connections', pos.of(root), "add `connections:` with lines like 'src -> count -> drop'"));
  } else if (!isSeq(connectionsNode)) {
    errors.push(new ConfigError('connections must be a list of strings', pos.of(connectionsNode), "write each chain as a list item: - src -> count -> drop"));
  } else {
    connections = parseConnections(connectionsNode.items as Node[], pos, errors);
  }

  if (errors.length) throw new ConfigErrors(errors);
  return { file, batch, slotSize, poolSlots, elements, connections, registry };
}

function readElements(root: YAMLMap, registry: Registry, pos: Positions, overridden: Set<string>, errors: ConfigError[]): Map<string, ElementInstance> {
  const elements = new Map<string, ElementInstance>();
  const node = root.get('elements', true) as Node | undefined;
  if (!node || !isMap(node)) {
    errors.push(new ConfigError('the config has no elements', pos.of(node ?? root), 'add `elements:` mapping names to { type: ..., params }'));
    return elements;
  }
  for (const pair of node.items) {
    const name = String((pair.key as Scalar).value);
    const at = pos.of(pair.key as Node);
    if (!NAME.test(name)) {
      errors.push(new ConfigError(`element name '${name}' is not a valid name`, at, 'use letters, digits and _ , starting with a letter'));
      continue;
    }
    const body = pair.value as Node;
    if (!isMap(body)) {
      errors.push(new ConfigError(`element '${name}' must be a mapping with a type`, pos.of(body, at), `write ${name}: { type: Counter }`));
      continue;
    }
    const typeNode = body.get('type', true) as Scalar | undefined;
    if (!typeNode) {
      errors.push(new ConfigError(`element '${name}' has no type`, at, `add type:, one of ${[...registry.keys()].sort().join(', ')}`));
      continue;
    }
    const typeName = String(typeNode.value);
    const type = registry.get(typeName);
    if (!type) {
      const guess = didYouMean(typeName, registry.keys());
      errors.push(new ConfigError(`unknown element type '${typeName}'`, pos.of(typeNode), guess ? `did you mean '${guess}'?` : `known types: ${[...registry.keys()].sort().join(', ')}`));
      continue;
    }
    const params: Record<string, unknown> = {};
    for (const item of body.items) {
      if (!isPair(item)) continue;
      const key = String((item.key as Scalar).value);
      if (key === 'type') continue;
      const keyAt = pos.of(item.key as Node, at);
      const spec = type.params[key];
      if (!spec) {
        const guess = didYouMean(key, Object.keys(type.params));
        const known = Object.keys(type.params);
        errors.push(new ConfigError(`${typeName} has no parameter '${key}'`, keyAt,
          guess ? `did you mean '${guess}'?` : known.length ? `its parameters are ${known.join(', ')}` : `${typeName} takes no parameters`));
        continue;
      }
      const valueNode = item.value as Node;
      const raw = isScalar(valueNode) ? valueNode.value : valueNode?.toJSON();
      try {
        params[key] = spec.type.parse(raw);
      } catch (e) {
        if (!(e instanceof ParamTypeError)) throw e;
        const from = overridden.has(`${name}.${key}`) ? ' (set on the command line)' : '';
        errors.push(new ConfigError(`${name}.${key}: ${e.message}${from}`, pos.of(valueNode, keyAt), e.hint));
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
    elements.set(name, { name, type, params, position: at });
  }
  return elements;
}

/** Applies `name.param=value` overrides to the document; returns the paths it set. */
function applyOverrides(doc: Document, overrides: string[], errors: ConfigError[]): Set<string> {
  const set = new Set<string>();
  for (const o of overrides) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(o);
    if (!m) {
      errors.push(new ConfigError(`--set ${o}: expected NAME.PARAM=VALUE`, undefined, 'for example --set src.file=trace.pcap'));
      continue;
    }
    const [, name, key, value] = m;
    if (!doc.hasIn(['elements', name])) {
      errors.push(new ConfigError(`--set ${o}: the config has no element '${name}'`));
      continue;
    }
    let parsed: unknown;
    try { parsed = parseYamlValue(value); } catch { parsed = value; }
    doc.setIn(['elements', name, key], parsed ?? value);
    set.add(`${name}.${key}`);
  }
  return set;
}
