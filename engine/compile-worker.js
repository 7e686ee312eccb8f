// Runs the AssemblyScript compiler in a worker thread: plain JavaScript, so that the compiler's
// large modules load without passing through the TypeScript loader (10x faster).

import { workerData, parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import asc from 'assemblyscript/asc';

const { entry, flags, files, projectRoot } = workerData;
const virtual = new Map(files);
const WIREPATH_PACKAGE = `${sep}node_modules${sep}wirepath${sep}`;
let binary;
let sourceMap;
let diagnostics = '';
const output = { write: (s) => { diagnostics += s; return true; } };

/**
 * The functions of the project's and the elements' code that allocate on AssemblyScript's heap (`new`, an array, a
 * string): the stub runtime's heap starts where the engine's shared memory lies and is the same for every shard, so an
 * allocation would overwrite packets and state. Found in the compiled module's call graph, before optimisation inlines
 * the allocator away: a function that calls the allocator, or a function of the library or a constructor that does.
 */
function allocatingFunctions(text) {
  // Names with commas or spaces (generics: Map<u32,u32>) come quoted.
  const NAME = String.raw`\$("(?:[^"\\]|\\.)*"|[^\s()]+)`;
  const unquote = (name) => (name.startsWith('"') ? name.slice(1, -1) : name);
  const calls = new Map();
  for (const m of text.matchAll(new RegExp(String.raw`^ \(func ${NAME}([\s\S]*?)(?=^ \(func |^\)$)`, 'gm'))) {
    calls.set(unquote(m[1]), new Set([...m[2].matchAll(new RegExp(String.raw`\(call ${NAME}`, 'g'))].map((c) => unquote(c[1]))));
  }
  const allocating = new Set(['~lib/rt/stub/__alloc']);
  for (let grew = true; grew;) {
    grew = false;
    for (const [name, callees] of calls) {
      if (!allocating.has(name) && [...callees].some((c) => allocating.has(c))) { allocating.add(name); grew = true; }
    }
  }
  const own = (name) => !name.startsWith('~lib/');
  return [...calls.keys()].filter((name) => allocating.has(name) && own(name)
    && [...calls.get(name)].some((c) => allocating.has(c) && (!own(c) || c.endsWith('#constructor'))));
}

/** ' (line N)' where `file` declares the function (a name, or Class#method: the class), or ''. */
function lineOf(file, fn) {
  const [owner, method] = fn.split('#');
  if (!/^\w+$/.test(owner) || !existsSync(file)) return '';
  const declaration = new RegExp(method ? String.raw`^\s*(?:export\s+)?class\s+${owner}\b` : String.raw`^\s*(?:export\s+)?function\s+${owner}\b`);
  const at = readFileSync(file, 'utf8').split('\n').findIndex((line) => declaration.test(line));
  return at < 0 ? '' : ` (line ${at + 1})`;
}

let allocations = [];
/**
 * The files the compiler read from disk, with the hashes of the texts it read: compile.ts checks those outside what
 * its cache key covers before it reuses a module (a file saved during the compile must not look compiled).
 */
const read = new Map();

const result = await asc.main([entry.slice(1), '--baseDir', '/', '-o', 'graph.wasm', ...flags], {
  readFile: (name, baseDir) => {
    const path = resolve(baseDir, name);
    const packaged = path.indexOf(WIREPATH_PACKAGE);
    // `import ... from "wirepath"` (in elements and the generated entry) resolves to this project's assembly/.
    const real = packaged >= 0 ? join(projectRoot, 'assembly', path.slice(packaged + WIREPATH_PACKAGE.length)) : path;
    if (virtual.has(real)) return virtual.get(real);
    if (!existsSync(real)) return null;
    const text = readFileSync(real, 'utf8');
    read.set(real, createHash('sha256').update(text).digest('hex'));
    return text;
  },
  writeFile: (name, contents) => {
    if (name.endsWith('.wasm')) binary = contents;
    else if (name.endsWith('.wasm.map')) sourceMap = contents;
  },
  listFiles: () => [],
  stdout: output,
  stderr: output,
  transforms: [{ afterCompile: (module) => { allocations = allocatingFunctions(module.emitText()); } }],
});
// The compiler colours its diagnostics whenever CI is set; they end up in logs and error messages, so plain text.
// It also names files relative to its base directory, the root: give them back their leading slash.
const located = stripVTControlCharacters(diagnostics).replace(/(└─ in )(?!~lib\/)(?=[^\s/])/g, '$1/');
if (!result.error && allocations.length) {
  // Internal names are the file's path from the root without .ts, then the function (Class#method, start:FILE for top-level code).
  const where = allocations.map((name) => {
    const file = name.replace(/^start:/, '').replace(/<.*$/, '');
    const at = name.startsWith('start:') ? file.length : file.lastIndexOf('/');
    const fn = name.slice(at + 1).replace(/~anonymous\|\d+$/, ' (a function written inside it)');
    return { file: `/${file.slice(0, at)}.ts`, fn: name.startsWith('start:') ? 'its top-level code' : fn };
  });
  const files = [...new Set(where.map((w) => w.file))];
  const lines = files.map((file) => `  ${file}: ${where.filter((w) => w.file === file).map((w) => w.fn + lineOf(file, w.fn)).join(', ')}`);
  parentPort.postMessage({ error: `these functions allocate memory (new, an array, a string), which the fast path cannot: AssemblyScript's stub runtime has no heap of its own, so every shard would allocate at the same addresses and soon over the packets and state\n${lines.join('\n')}\n`
    + 'keep what lasts beyond a packet in the element\'s state (element.ts: counters, flow tables, data), and per-batch arrays in batchScratch()', files });
} else {
  parentPort.postMessage(result.error || !binary ? { error: located || String(result.error) } : { binary, sourceMap, read: [...read] });
}
