// Compiles a generated graph with the AssemblyScript compiler API, cached by content hash so that a
// known graph starts without loading the compiler at all.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync, renameSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { PROJECT_ROOT } from './registry.ts';
import { ENTRY_PATH, type GeneratedGraph } from './codegen.ts';
import { MAX_PAGES } from './memory.ts';

const ASC_VERSION = JSON.parse(readFileSync(join(PROJECT_ROOT, 'node_modules/assemblyscript/package.json'), 'utf8')).version as string;

/** Flags measured in ../shared/research/spike-node-wasm.md §1: stub runtime, imported shared memory. */
export const ASC_FLAGS = [
  '-O3', '--noAssert', '--runtime', 'stub', '--enable', 'threads', '--importMemory', '--sharedMemory',
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
  for (const [path, text] of [...generated.files].sort()) h.update(path + '\0' + text + '\0');
  for (const file of [...sourcesOf(join(PROJECT_ROOT, 'assembly')), ...elementDirs.flatMap(sourcesOf)]) {
    h.update(file + '\0');
    h.update(readFileSync(file));
  }
  return h.digest('hex').slice(0, 32);
}

const WIREPATH_PACKAGE = `${sep}node_modules${sep}wirepath${sep}`;

export async function compileGraph(generated: GeneratedGraph, elementDirs: string[]): Promise<CompiledGraph> {
  const hash = contentHash(generated, elementDirs);
  const cached = join(CACHE_DIR, `${hash}.wasm`);
  if (existsSync(cached)) {
    return { module: await WebAssembly.compile(readFileSync(cached)), hash, cached: true };
  }
  const { default: asc } = await import('assemblyscript/asc');
  let binary: Uint8Array | undefined;
  let diagnostics = '';
  const result = await asc.main([ENTRY_PATH.slice(1), '--baseDir', '/', '-o', 'graph.wasm', ...ASC_FLAGS], {
    readFile: (name: string, baseDir: string) => {
      const path = resolve(baseDir, name);
      const packaged = path.indexOf(WIREPATH_PACKAGE);
      // `import ... from "wirepath"` in an element resolves to this project's assembly/ runtime.
      const real = packaged >= 0 ? join(PROJECT_ROOT, 'assembly', path.slice(packaged + WIREPATH_PACKAGE.length).replace(/^index\.ts$/, 'index.ts')) : path;
      const virtual = generated.files.get(real);
      if (virtual !== undefined) return virtual;
      return existsSync(real) ? readFileSync(real, 'utf8') : null;
    },
    writeFile: (name: string, contents: Uint8Array | string) => {
      if (name.endsWith('.wasm')) binary = contents as Uint8Array;
    },
    listFiles: () => [],
    stdout: { write: (s: string) => { diagnostics += s; return true; } } as any,
    stderr: { write: (s: string) => { diagnostics += s; return true; } } as any,
  } as any);
  if (result.error || !binary) throw new CompileError(diagnostics || String(result.error));
  mkdirSync(CACHE_DIR, { recursive: true });
  const temp = `${cached}.${process.pid}.tmp`;
  writeFileSync(temp, binary);
  renameSync(temp, cached);
  return { module: await WebAssembly.compile(binary as Uint8Array<ArrayBuffer>), hash, cached: false };
}
