// `npm run bench`: runs every benchmark in bench/ one after the other (the machine has 2 cores;
// benchmarks never overlap). `npm run bench -- pipeline` runs only the named ones.

const BENCHES: Record<string, () => Promise<unknown>> = {
  pipeline: () => import('./pipeline.ts').then((m) => m.main()),
  shards: () => import('./shards.ts').then((m) => m.main()),
  classifier: () => import('./classifier.ts').then((m) => m.main()),
  nat: () => import('./nat.ts').then((m) => m.main()),
  veth: () => import('./veth.ts').then((m) => m.main()),
  lb: () => import('./lb.ts').then((m) => m.main()),
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const [name, run] of Object.entries(BENCHES)) {
  if (wanted.length && !wanted.includes(name)) continue;
  await run();
}
