// Runs the AssemblyScript compiler in a worker thread: plain JavaScript, so that the compiler's
// large modules load without passing through the TypeScript loader (10x faster).

import { workerData, parentPort } from 'node:worker_threads';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import asc from 'assemblyscript/asc';

const { entry, flags, files, projectRoot } = workerData;
const virtual = new Map(files);
const WIREPATH_PACKAGE = `${sep}node_modules${sep}wirepath${sep}`;
let binary;
let diagnostics = '';
const output = { write: (s) => { diagnostics += s; return true; } };

const result = await asc.main([entry.slice(1), '--baseDir', '/', '-o', 'graph.wasm', ...flags], {
  readFile: (name, baseDir) => {
    const path = resolve(baseDir, name);
    const packaged = path.indexOf(WIREPATH_PACKAGE);
    // `import ... from "wirepath"` (in elements and the generated entry) resolves to this project's assembly/.
    const real = packaged >= 0 ? join(projectRoot, 'assembly', path.slice(packaged + WIREPATH_PACKAGE.length)) : path;
    if (virtual.has(real)) return virtual.get(real);
    return existsSync(real) ? readFileSync(real, 'utf8') : null;
  },
  writeFile: (name, contents) => { if (name.endsWith('.wasm')) binary = contents; },
  listFiles: () => [],
  stdout: output,
  stderr: output,
});
// The compiler colours its diagnostics whenever CI is set; they end up in logs and error messages, so plain text.
// It also names files relative to its base directory, the root: give them back their leading slash.
const located = stripVTControlCharacters(diagnostics).replace(/(└─ in )(?!~lib\/)(?=[^\s/])/g, '$1/');
parentPort.postMessage(result.error || !binary ? { error: located || String(result.error) } : { binary });
