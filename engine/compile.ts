// Compiles a generated graph with the AssemblyScript compiler API, cached by content hash so that a
// known graph starts without loading the compiler at all.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { TraceMap, originalPositionFor } from '@jridgewell/trace-mapping';
import { PROJECT_ROOT, engineSignature } from './registry.ts';
import { ENTRY_PATH, type GeneratedGraph } from './codegen.ts';
import { MAX_PAGES } from './memory.ts';
import { EnvironmentError } from './errors.ts';
import { makeFolders } from './files.ts';

const ASC_VERSION = JSON.parse(readFileSync(join(PROJECT_ROOT, 'node_modules/assemblyscript/package.json'), 'utf8')).version as string;

/** Flags measured in ../shared/research/spike-node-wasm.md §1: stub runtime, imported shared memory. */
export const ASC_FLAGS = [
  '-O3', '--debug', '--noAssert', '--runtime', 'stub', '--enable', 'threads', '--enable', 'simd', '--importMemory', '--sharedMemory',
  '--initialMemory', '16', '--maximumMemory', String(MAX_PAGES), '--sourceMap',
];

export const CACHE_DIR = resolve(process.env.WIREPATH_CACHE ?? join(PROJECT_ROOT, 'node_modules/.cache/wirepath'));

export class CompileError extends Error {
  /** `files`: the source files the error is about, where its diagnostics do not name them (`└─ in FILE(line,col)`). */
  constructor(readonly diagnostics: string, readonly files: string[] = []) {
    super(`the fast path did not compile:\n${diagnostics}`);
    this.name = 'CompileError';
  }
}

export interface CompiledGraph {
  module: WebAssembly.Module;
  hash: string;
  cached: boolean;
}

function sourcesOf(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('element.ts') && !f.endsWith('layout.ts') && !f.includes('node_modules'))
    .sort()
    .map((f) => join(dir, f));
}

/** The runtime's and the element collections' sources: what the cache key covers of the files the compiler reads. */
function hashedSources(elementDirs: string[]): string[] {
  // Whole element collections, not just the folders used: an element may import a sibling's files.
  const collections = [...new Set(elementDirs.map((d) => dirname(d)))].sort();
  return [...sourcesOf(join(PROJECT_ROOT, 'assembly')), ...collections.flatMap(sourcesOf)];
}

/** Everything the compiled module depends on: compiler, flags, generated files, runtime and element sources. */
function contentHash(generated: GeneratedGraph, sources: string[]): string {
  const h = createHash('sha256');
  h.update(ASC_VERSION + '\0' + ASC_FLAGS.join(' ') + '\0');
  // The compile itself, with its checks of the code (a module that passed older checks is not taken on trust).
  h.update(readFileSync(new URL('./compile-worker.js', import.meta.url)));
  for (const [path, text] of [...generated.files].sort()) h.update(path + '\0' + text + '\0');
  for (const file of sources) {
    h.update(file + '\0');
    h.update(readFileSync(file));
  }
  return h.digest('hex').slice(0, 32);
}

const fileHash = (file: string) => (existsSync(file) ? createHash('sha256').update(readFileSync(file)).digest('hex') : 'missing');

/**
 * Files outside the element collections that the module was compiled from (a process.ts may import a library of the
 * user's anywhere), with their hashes: written beside the cached module, and checked before it is used again.
 */
const depsFile = (cached: string) => cached.replace(/\.wasm$/, '.deps.json');

/** Whether a file the cached module was compiled from has changed since; a manifest missing or damaged counts as changed. */
function depsChanged(cached: string): boolean {
  try {
    const deps = JSON.parse(readFileSync(depsFile(cached), 'utf8')) as [string, string][];
    return deps.some(([file, hash]) => fileHash(file) !== hash);
  } catch {
    return true;
  }
}

/** The compiler's source map, beside the cached module: its positions are byte offsets in the module. */
const sourceMapFile = (cached: string) => cached.replace(/\.wasm$/, '.wasm.map');

const WIREPATH_LIBRARY = '~lib/wirepath/';
const sourceMaps = new Map<string, TraceMap | undefined>();

/**
 * Where in the sources a module's code threw: its first frame in `stack` (wasm-function[N]:0xOFFSET) looked up in the
 * module's source map, as FILE:LINE:COLUMN; undefined without a map or such a frame.
 */
export function sourceLocation(compiled: CompiledGraph, stack: string | undefined): string | undefined {
  const offset = /wasm-function\[\d+\]:0x([0-9a-f]+)\)?$/m.exec(stack ?? '');
  if (!offset) return undefined;
  if (!sourceMaps.has(compiled.hash)) {
    let map: TraceMap | undefined;
    try {
      // Its sources are named from the root, under the output's name as sourceRoot.
      map = new TraceMap({ ...JSON.parse(readFileSync(sourceMapFile(join(CACHE_DIR, `${compiled.hash}.wasm`)), 'utf8')), sourceRoot: undefined });
    } catch { /* none: removed from the cache */ }
    sourceMaps.set(compiled.hash, map);
  }
  const map = sourceMaps.get(compiled.hash);
  const at = map && originalPositionFor(map, { line: 1, column: parseInt(offset[1], 16) });
  if (!at?.source) return undefined;
  // "wirepath" is the project's assembly/; other ~lib/ files are AssemblyScript's own library.
  const file = at.source.startsWith(WIREPATH_LIBRARY) ? join(PROJECT_ROOT, 'assembly', at.source.slice(WIREPATH_LIBRARY.length))
    : at.source.startsWith('~lib/') ? at.source : `/${at.source}`;
  return `${file}:${at.line}:${at.column + 1}`;
}

function runCompiler(generated: GeneratedGraph): Promise<{ binary: Uint8Array; sourceMap?: string; read: [string, string][] } | { error: string; files?: string[] }> {
  return new Promise((resolvePromise, reject) => {
    const worker = new Worker(new URL('./compile-worker.js', import.meta.url), {
      workerData: { entry: ENTRY_PATH, flags: ASC_FLAGS, files: [...generated.files], projectRoot: PROJECT_ROOT },
    });
    worker.once('message', (m) => { resolvePromise(m); void worker.terminate(); });
    worker.once('error', reject);
  });
}

export async function compileGraph(generated: GeneratedGraph, elementDirs: string[]): Promise<CompiledGraph> {
  const sources = hashedSources(elementDirs);
  const hash = contentHash(generated, sources);
  const cached = join(CACHE_DIR, `${hash}.wasm`);
  if (existsSync(cached) && !depsChanged(cached)) {
    return { module: await WebAssembly.compile(readFileSync(cached)), hash, cached: true };
  }
  const result = await runCompiler(generated);
  if ('error' in result) throw engineCallError(generated, result.error, result.files);
  const binary: Uint8Array = result.binary;
  try {
    // makeFolders, not a recursive mkdirSync: Node 20's spins forever on a path under /proc.
    makeFolders(CACHE_DIR);
  } catch (e) {
    throw cacheUnwritable(e as NodeJS.ErrnoException);
  }
  if (result.sourceMap) writeAtomically(sourceMapFile(cached), result.sourceMap);
  // Compiled again under the same hash (a file outside its key changed): a map read before is no longer this module's.
  sourceMaps.delete(hash);
  const covered = new Set(sources);
  const deps = result.read.filter(([file]) => !covered.has(file) && !file.startsWith(join(PROJECT_ROOT, 'node_modules', 'assemblyscript'))).sort();
  // The module before its manifest: a module found without one is compiled again.
  writeAtomically(cached, binary);
  writeAtomically(depsFile(cached), JSON.stringify(deps));
  return { module: await WebAssembly.compile(binary as Uint8Array<ArrayBuffer>), hash, cached: false };
}

function writeAtomically(file: string, data: string | Uint8Array): void {
  const temp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, data);
  } catch (e) {
    throw cacheUnwritable(e as NodeJS.ErrnoException);
  }
  renameSync(temp, file);
}

/** The cache is another user's (an install by root, run by a user) or in a place that takes no files. */
function cacheUnwritable(e: NodeJS.ErrnoException): Error {
  if (!e.code) return e;
  return new EnvironmentError(`cannot write the compile cache ${CACHE_DIR}: ${e.code}`,
    'set WIREPATH_CACHE to a folder this user can write (the cache of an install is the installing user\'s)');
}

/**
 * A compile error in the generated entry where it calls an element's process, tick or steer: the element's function
 * does not take what the engine passes. Named in the element's process.ts, with the signature the engine calls.
 */
function engineCallError(generated: GeneratedGraph, diagnostics: string, files: string[] = []): CompileError {
  const entry = generated.files.get(ENTRY_PATH)?.split('\n') ?? [];
  const notes = new Set<string>();
  for (const [, line] of diagnostics.matchAll(new RegExp(`└─ in ${escapeRegExp(ENTRY_PATH)}\\((\\d+),\\d+\\)`, 'g'))) {
    const call = /\b(?:T_(\w+)|S_(\w+)_[0-9a-f]{12})\.(\w+)\(/.exec(entry[Number(line) - 1] ?? '');
    const type = call && generated.types.get(call[1] ?? call[2]);
    if (!type) continue;
    const file = join(type.dir, 'process.ts');
    files.push(file);
    notes.add(`${file}: the engine calls it as: export function ${engineSignature(type, call[3])}; its ${call[3]} does not take that`);
  }
  return new CompileError(notes.size ? `${[...notes].join('\n')}\n${diagnostics}` : diagnostics, files);
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
