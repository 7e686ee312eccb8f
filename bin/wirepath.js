#!/usr/bin/env node
// The wirepath command. The engine is TypeScript, loaded through tsx.
import { register } from 'tsx/esm/api';

register();
// Output piped into a command that stops reading (wirepath filter -v ... | head) ends the command quietly.
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(0); throw e; });
const { main } = await import('../engine/cli.ts');
process.exitCode = await main(process.argv.slice(2));
