// The control API and `wirepath ctl` against a running pipeline: reads are open, changes need the
// token, bad requests get a 4xx and the pipeline keeps running.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tempDir, removeDir, cliAsync } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { startControl, type ControlServer } from '../engine/control.ts';
import { handlersOf } from '../engine/handlers.ts';
import { state, type ElementType, type ElementView } from '../engine/element.ts';
import { toJson } from '../engine/report.ts';

const dir = tempDir();
let pipeline: Pipeline;
let control: ControlServer;
let running: Promise<unknown>;

test.before(async () => {
  const file = join(dir, 'live.yaml');
  writeFileSync(file, `
elements:
  gen: { type: Generator, count: 0, flows: 200, timing: original, rate: 50000 }
  stats: { type: FlowStats }
  count: { type: Counter }
  drop: { type: Discard }
connections:
  - gen -> stats -> count -> drop
`);
  pipeline = await Pipeline.create(await loadConfig(file), { shards: 1 });
  running = pipeline.run();
  control = await startControl({ pipeline: () => pipeline }, { port: 0, token: 'secret-token' });
  while (pipeline.packetsIn() < 1000) await new Promise((r) => setTimeout(r, 20));
});

test.after(async () => {
  pipeline.stop();
  await running;
  await control.close();
  removeDir(dir);
});


const call = async (method: string, path: string, body?: unknown, token?: string) => {
  const r = await fetch(control.url + path, {
    method, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const text = await r.text();
  return { status: r.status, text, json: r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : undefined };
};

test('GET /graph, /stats, /metrics and handlers need no token', async () => {
  const graph = await call('GET', '/graph');
  assert.is(graph.status, 200);
  assert.equal(graph.json.elements.map((e: any) => e.name), ['gen', 'stats', 'count', 'drop']);
  assert.equal(graph.json.connections[0], { from: 'gen', port: 0, to: 'stats', input: 0 });
  // Parameters as a config writes them (it showed addresses as numbers and durations in ns).
  assert.equal(graph.json.elements.find((e: any) => e.name === 'stats').params, { capacity: '65536', timeout: '5m', sources_capacity: '65536' });
  const stats = await call('GET', '/stats');
  assert.ok(stats.json.elements.count.packets > 0);
  assert.is(stats.json.runtime.shards.length, 1);
  const metrics = await call('GET', '/metrics');
  assert.match(metrics.text, /# TYPE wirepath_element_packets_in_total counter/);
  assert.match(metrics.text, /# TYPE wirepath_packets_total counter\n(.*\n)*wirepath_packets_total\{element="count",type="Counter"\} \d+/);
  // Live entries and rates go up and down: gauges, without the _total of counters.
  assert.match(metrics.text, /# TYPE wirepath_flows gauge\n(.*\n)*wirepath_flows\{element="stats",type="FlowStats"\} \d+/);
  assert.match(metrics.text, /# TYPE wirepath_rate gauge\n/);
  for (const line of metrics.text.trimEnd().split('\n')) {
    assert.match(line, /^(# (HELP|TYPE) wirepath_\w+ .+|wirepath_\w+\{(\w+="([^"\\\n]|\\["\\n])*",?)*\} \d+(\.\d+)?(e[+-]?\d+)?)$/, line);
  }
  const handler = await call('GET', '/elements/count/packets');
  assert.ok(handler.json.value > 0);
});

test('changes need the token', async () => {
  for (const token of [undefined, 'wrong']) {
    const refused = await call('POST', '/scale', { shards: 2 }, token);
    assert.is(refused.status, 401);
    assert.match(refused.json.error, token ? /the token sent is not the pipeline's/ : /send the token as "Authorization: Bearer TOKEN"/);
    assert.is((await call('PUT', '/elements/count/reset', {}, token)).status, 401);
  }
  assert.is(pipeline.runtimeStats().shards.length, 1, 'nothing changed');
});

test('bad requests get clear 4xx answers and the pipeline keeps running', async () => {
  const before = pipeline.packetsIn();
  const cases: [string, string, unknown, number, RegExp][] = [
    ['POST', '/scale', '{"shards": ', 400, /malformed JSON/],
    ['POST', '/scale', { shards: 0 }, 400, /whole number from 1 to 64/],
    ['POST', '/scale', { shards: 'two' }, 400, /whole number/],
    ['POST', '/scale', 'null', 400, /send a JSON object, not null/],
    ['PUT', '/elements/count/reset', '[1]', 400, /send a JSON object, not \[1\]/],
    // A folder that cannot be made, even by root (a missing one is made).
    ['POST', '/snapshot', { file: '/proc/nonexistent/s.json' }, 400, /cannot write the snapshot to \/proc\/nonexistent\/s\.json/],
    ['GET', '/elements/nope/packets', undefined, 404, /no element 'nope'/],
    ['GET', '/elements/count/nope', undefined, 404, /has no handler 'nope'/],
    ['PUT', '/elements/count/packets', { value: 1 }, 405, /read-only/],
    // Parameters the element was set up by: its table's size and timeout, the generator's templates and pacing.
    ['PUT', '/elements/stats/capacity', { value: 2 }, 400, /stats\.capacity: capacity is read when stats is set up .*: change it in the config and reload/],
    ['PUT', '/elements/stats/timeout', { value: '1ms' }, 400, /timeout is read when stats is set up/],
    ['PUT', '/elements/gen/flows', { value: 100000 }, 400, /flows is read when gen is set up/],
    ['PUT', '/elements/gen/rate', { value: 100 }, 400, /rate is read when gen is set up/],
    ['GET', '/nowhere', undefined, 404, /no \/nowhere/],
    // A path the API has, asked with a method it does not take (it said 404, no such path).
    ['GET', '/scale', undefined, 405, /\/scale takes POST, not GET/],
    ['POST', '/stats', {}, 405, /\/stats takes GET, HEAD, not POST/],
    ['DELETE', '/elements/count/packets', undefined, 405, /takes GET, HEAD, PUT, not DELETE/],
    // Before: the argument was ignored, and the answer was for everything; a list was written as its text.
    ['GET', '/elements/count/packets?arg=5', undefined, 400, /count\.packets takes no argument \(given '5'\)/],
    ['PUT', '/elements/count/reset', { value: ['x'] }, 400, /count\.reset: send \{"value": \.\.\.\} with a string .*, not \["x"\]/],
    ['PUT', '/elements/count/reset', { value: null }, 400, /not null/],
    // Before: answered as written, the value ignored; a misspelt key wrote '' ("'' is not a whole number"); a second arg was ignored.
    ['PUT', '/elements/count/reset', { value: 'now' }, 400, /count\.reset: reset takes no value \(given 'now'\)/],
    ['PUT', '/elements/gen/count', { valeu: 5 }, 400, /gen\.count: send \{"value": \.\.\.\}; 'valeu' is no key of it/],
    // Before: a 500 (URI malformed), and a snapshot in the answer instead of the file asked for.
    ['GET', '/elements/count/%ZZ', undefined, 400, /a %-escape that is no UTF-8 text/],
    ['POST', '/snapshot', { file: 5 }, 400, /send \{"file": "a path"\}/],
  ];
  for (const [method, path, body, status, message] of cases) {
    const r = await call(method, path, body, 'secret-token');
    assert.is(r.status, status, `${method} ${path}`);
    assert.match(r.json.error, message);
  }
  // A 405 says what the path takes; HEAD is GET without the body; the scheme's name is case-insensitive.
  const wrong = await fetch(`${control.url}/scale`);
  assert.is(wrong.headers.get('allow'), 'POST');
  const readOnly = await fetch(`${control.url}/elements/count/packets`, { method: 'PUT', headers: { authorization: 'Bearer secret-token' }, body: '{"value": 1}' });
  assert.is(readOnly.headers.get('allow'), 'GET, HEAD', 'a read-only handler says what it takes');
  const head = await fetch(`${control.url}/stats`, { method: 'HEAD' });
  assert.is(head.status, 200);
  assert.is(await head.text(), '');
  assert.is((await fetch(`${control.url}/elements/count/reset`, { method: 'PUT', headers: { authorization: 'bearer secret-token' }, body: '{}' })).status, 200);
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(pipeline.packetsIn() > before, 'still running');
});

test('a reset zeroes the generator\'s counters but not its pace: its timestamps go on', async () => {
  const clock = () => pipeline.clockNow();
  const before = clock();
  assert.is((await call('PUT', '/elements/gen/reset', {}, 'secret-token')).status, 200);
  const packets = pipeline.packetsIn();
  while (pipeline.packetsIn() < packets + 1000) await new Promise((r) => setTimeout(r, 20));
  assert.ok(clock() > before, `the clock went on (${before} -> ${clock()})`);
  // 50000 packets/s of timestamps: a packet 20 us after the one before, never back at the start.
  assert.ok(Number(clock() - before) < 1e9, 'no jump either');
});

test('POST /scale changes the shard count while traffic flows, losing nothing', async () => {
  const out = await call('POST', '/scale', { shards: 2 }, 'secret-token');
  assert.is(out.status, 200);
  assert.is(out.json.from, 1);
  assert.is(out.json.to, 2);
  assert.is(out.json.packets_lost, 0);
  assert.is(pipeline.runtimeStats().shards.length, 2);
  const back = await call('POST', '/scale', { shards: 1 }, 'secret-token');
  assert.is(back.json.packets_lost, 0);
});

test('wirepath ctl reads, writes and snapshots', async () => {
  const env = ['--control', control.url, '--token', 'secret-token'];
  const read = await cliAsync(['ctl', 'read', 'count.packets', ...env]);
  assert.is(read.status, 0, read.stderr);
  assert.ok(JSON.parse(read.stdout).value > 0);
  assert.is((await cliAsync(['ctl', 'write', 'count.reset', '', ...env])).status, 0);
  // Into a folder not made yet, as run --save writes one (it was ENOENT).
  const file = join(dir, 'snapshots', 'snap.json');
  assert.is((await cliAsync(['ctl', 'snapshot', file, ...env])).status, 0);
  const snapshot = JSON.parse(readFileSync(file, 'utf8'));
  assert.is(snapshot.format, 'wirepath-snapshot/2');
  assert.ok(Number(snapshot.elements.stats.scalars.total_packets) > 0);
  const refused = await cliAsync(['ctl', 'scale', '2', '--control', control.url]);
  assert.is(refused.status, 1);
  assert.match(refused.stderr, /401 .*token/);
  const negative = await cliAsync(['ctl', 'read', 'count.packets', '-1', ...env]);
  assert.is(negative.status, 2);
  assert.ok(negative.stderr.includes(`hint: a value that starts with -, put -- before it: wirepath ctl read count.packets ${env.join(' ')} -- -1`), negative.stderr);
  // Words a command would ignore (before: scaled to 1, and answered the stats).
  for (const words of [['scale', '1', '2'], ['stats', 'extra']]) {
    const extra = await cliAsync(['ctl', ...words, ...env]);
    assert.is(extra.status, 2, words.join(' '));
    assert.match(extra.stderr, `ctl ${words[0]} takes`);
  }
  // Said in the command's words (the API's answer speaks of its JSON body); a --control that is no URL is said so.
  // A write without its value (before: sent as '' and answered by the handler: "'' is not a ..."); '' written out is one.
  const valueless = await cliAsync(['ctl', 'write', 'count.packets', ...env]);
  assert.is(valueless.status, 2);
  assert.is(valueless.stderr.split('\n')[0], "wirepath: ctl write count.packets needs the VALUE to write (an empty one as '')");
  const zero = await cliAsync(['ctl', 'scale', '0', ...env]);
  assert.is(zero.stderr.split('\n')[0], "wirepath: ctl scale N: N is a whole number of shards from 1 to 64, not '0'");
  const broken = await cliAsync(['ctl', 'stats', '--control', 'http://[::1']);
  assert.is(broken.stderr.split('\n')[0], 'wirepath: --control http://[::1 is neither a port nor a URL (e.g. 7400 or http://127.0.0.1:7400)');
  assert.equal([zero.status, broken.status], [2, 2]);
  assert.is(pipeline.runtimeStats().shards.length, 1);
  const nobody = await cliAsync(['ctl', 'stats', '--control', '1']);
  assert.is(nobody.status, 3);
  assert.match(nobody.stderr, /no control API answers at http:\/\/127.0.0.1:1/);
  // Another HTTP server on the port: said so, not a stack trace of its page parsed as JSON.
  const other = createServer((_, res) => { res.writeHead(404, { 'content-type': 'text/html' }); res.end('<!DOCTYPE html><p>not here</p>'); });
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  try {
    const port = (other.address() as AddressInfo).port;
    const wrong = await cliAsync(['ctl', 'stats', '--control', String(port)]);
    assert.is(wrong.status, 3);
    assert.is(wrong.stderr, `wirepath: the server at http://127.0.0.1:${port} is no wirepath control API: it answered 404 Not Found to GET /stats\n`
      + '  hint: give the port that `wirepath run CONFIG --control PORT` printed\n');
  } finally {
    other.close();
  }
});

test('the run command refuses an empty token (it let every call through) and says when the control port is taken, exit 2 and 3', async () => {
  const empty = await cliAsync(['run', join(dir, 'live.yaml'), '--set', 'gen.count=10', '--control', '0', '--token', '']);
  assert.is(empty.status, 2, empty.stderr);
  assert.match(empty.stderr, '--token is empty');
  assert.throws(() => startControl({ pipeline: () => pipeline }, { port: 0, token: '' }), /token is empty/);
  const port = new URL(control.url).port;
  const taken = await cliAsync(['run', join(dir, 'live.yaml'), '--set', 'gen.count=10', '--control', port]);
  assert.is(taken.status, 3, taken.stderr);
  assert.match(taken.stderr, `wirepath: --control ${port}: the port is in use (another wirepath run?)\n  hint: give another port, or --control 0`);
});

test('a gauge that holds a time in ns reads exactly (a number would round it), shown as its digits in JSON', () => {
  const type = { type: 'Clocked', params: {}, state: { last_seen: state.gauge('when the latest packet came', 'max'), small: state.counter('a count') } } as unknown as ElementType;
  const handlers = handlersOf(type);
  const view = { read: (field: string) => (field === 'last_seen' ? 1_767_225_607_750_000_001n : 42n) } as unknown as ElementView;
  assert.is(handlers.last_seen.read!(view), 1_767_225_607_750_000_001n);
  assert.is(handlers.small.read!(view), 42);
  assert.is(toJson({ last_seen: handlers.last_seen.read!(view), small: handlers.small.read!(view) }), '{"last_seen":"1767225607750000001","small":42}');
});

test('closing the API closes a connection whose request never ends (a stop waited for it for minutes)', async () => {
  const api = await startControl({ pipeline: () => pipeline }, { port: 0, token: 'other-token' });
  const socket = connect(Number(new URL(api.url).port), '127.0.0.1');
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  socket.write('POST /snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer other-token\r\nContent-Length: 100\r\n\r\n{');
  await new Promise((r) => setTimeout(r, 100));
  const closed = await Promise.race([api.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open after 5 s'), 5000).unref())]);
  assert.is(closed, 'closed');
  socket.destroy();
});

test.run();
