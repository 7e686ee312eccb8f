// Builds the AF_PACKET addon during `npm install` (npm 11 runs no dependency's install scripts, so
// the project's own postinstall does it). Offline: the headers come from the installed Node
// (--nodedir) when they are there. A failed build does not fail the install: only FromDevice and
// ToDevice need the addon, and they say how to build it.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodedir = dirname(dirname(process.execPath));
const args = ['rebuild', ...(existsSync(join(nodedir, 'include/node/node_api.h')) ? [`--nodedir=${nodedir}`] : [])];
let gyp;
try {
  gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
} catch {
  gyp = undefined;
}
const r = gyp ? spawnSync(process.execPath, [gyp, ...args], { cwd: here, encoding: 'utf8' }) : undefined;
if (r && r.status === 0) {
  console.log('wirepath: built the AF_PACKET addon (native/build/Release/afpacket.node) for FromDevice and ToDevice, and huge pages for the memory');
} else {
  const why = !r ? 'node-gyp is not installed' : (r.error?.message ?? (r.stderr + r.stdout).trim().split('\n').filter((l) => /error|not found/i.test(l)).slice(-3).join('\n  '));
  console.warn(`wirepath: could not build the AF_PACKET addon; everything works except FromDevice and ToDevice (and the memory comes in 4 KiB pages, not huge pages).\n  ${why}\n`
    + '  To build it: install a C++ compiler, make and python3, then run `npm run build:native`.');
}
