// Compiles a generated graph with the AssemblyScript compiler API, cached by content hash so that a
// known graph starts without loading the compiler at all.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { PROJECT_ROOT } from './registry.ts';
import { ENTRY_PATH, type GeneratedGraph } from './codegen.ts';
import { MAX_PAGES } from './memory.ts';

const ASC_VERSION = JSON.parse(readFileSync(join(PROJECT_ROOT, 'node_modules/assemblyscript/package.json'), 'utf8')).version as string;

/** Flags measured in ../shared/research/spike-node-wasm.md §1: stub runtime, imported shared memory. */
export const ASC_FLAGS = [
  '-O3', '--debug', '--noAssert', '--runtime', 'stub', '--enable', 'threads', '--enable', 'simd', '--importMemory', '--sharedMemory',
  '--initialMemory', '16', '--maximumMemory', String(MAX_PAGES),
];

export const CACHE_DIR = resolve(process.env.WIREPATH_CACHE ?? join(PROJECT_ROOT, 'node_modules/.cache/wirepath'));

export class CompileError extends Error {
  constructor(readonly diagnostics: string) {
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

/** Everything the compiled module depends on: compiler, flags, generated files, runtime and element sources. */
function contentHash(generated: GeneratedGraph, elementDirs: string[]): string {
  const h = createHash('sha256');
  h.update(ASC_VERSION + '\0' + ASC_FLAGS.join(' ') + '\0');
  // The compile itself, with its checks of the code (a module that passed older checks is not taken on trust).
  h.update(readFileSync(new URL('./compile-worker.js', import.meta.url)));
  for (const [path, text] of [...generated.files].sort()) h.update(path + '\0' + text + '\0');
  // Whole element collections, not just the folders used: an element may import a sibling's files.
  const collections = [...new Set(elementDirs.map((d) => dirname(d)))].sort();
  for (const file of [...sourcesOf(join(PROJECT_ROOT, 'assembly')), ...collections.flatMap(sourcesOf)]) {
    h.update(file + '\0');
    h.update(readFileSync(file));
  }
  return h.digest('hex').slice(0, 32);
}

function runCompiler(generated: GeneratedGraph): Promise<{ binary: Uint8Array } | { error: string }> {
  return new Promise((resolvePromise, reject) => {
    const worker = new Worker(new URL('./compile-worker.js', import.meta.url), {
      workerData: { entry: ENTRY_PATH, flags: ASC_FLAGS, files: [...generated.files], projectRoot: PROJECT_ROOT },
    });
    worker.once('message', (m) => { resolvePromise(m); void worker.terminate(); });
    worker.once('error', reject);
  });
}

export async function compileGraph(generated: GeneratedGraph, elementDirs: string[]): Promise<CompiledGraph> {
  const hash = contentHash(generated, elementDirs);
  const cached = join(CACHE_DIR, `${hash}.wasm`);
  if (existsSync(cached)) {
    return { module: await WebAssembly.compile(readFileSync(cached)), hash, cached: true };
  }
  const result = await runCompiler(generated);
  if ('error' in result) throw new CompileError(result.error);
  const binary: Uint8Array = result.binary;
  mkdirSync(CACHE_DIR, { recursive: true });
  const temp = `${cached}.${process.pid}.tmp`;
  writeFileSync(temp, binary);
  renameSync(temp, cached);
  return { module: await WebAssembly.compile(binary as Uint8Array<ArrayBuffer>), hash, cached: false };
}
