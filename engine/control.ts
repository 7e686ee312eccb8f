// The control API: a small HTTP server on loopback. Reading is open to local clients; every call
// that changes something, and a read of a private handler, needs the token (printed at start, or given). Bad requests get a clear 4xx
// and change nothing; the pipeline keeps running whatever a client sends.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { makeFolders } from './files.ts';
import type { Pipeline } from './pipeline.ts';
import { handlersOf, takesArgument } from './handlers.ts';
import type { GraphNode } from './graph.ts';
import { toJson } from './report.ts';
import { ConflictError, EnvironmentError } from './errors.ts';

export interface ControlOptions {
  port: number;
  token?: string;
  host?: string;
}

/** What the control API drives: the running pipeline, and (from `wirepath run`) reloading it. */
export interface ControlTarget {
  pipeline(): Pipeline;
  reload?(configText: string, file?: string): Promise<unknown>;
}

export interface ControlServer {
  url: string;
  token: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  /** `allow`: of a 405, the methods the path takes (its Allow header). */
  constructor(readonly status: number, message: string, readonly allow?: string[]) {
    super(message);
  }
}

/** The methods each path takes (HEAD wherever GET is). */
function methodsOf(path: string): string[] | undefined {
  if (path === '/graph' || path === '/stats' || path === '/metrics') return ['GET', 'HEAD'];
  if (path === '/scale' || path === '/reload' || path === '/snapshot') return ['POST'];
  if (/^\/elements\/[^/]+\/[^/]+$/.test(path)) return ['GET', 'HEAD', 'PUT'];
  return undefined;
}

const MAX_BODY = 1 << 20;
/** How long closing the API waits for the answers to requests under way. */
const CLOSE_GRACE_MS = 1000;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > MAX_BODY) reject(new HttpError(413, 'request body larger than 1 MiB'));
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

/** The request's JSON object ({} for an empty body); anything else (null, a list, a number) is a 400. */
function parseJson(body: string): any {
  let value: unknown;
  try {
    value = body.trim() ? JSON.parse(body) : {};
  } catch (e) {
    throw new HttpError(400, `malformed JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new HttpError(400, `send a JSON object, not ${JSON.stringify(value)}`);
  return value;
}

function authorised(req: IncomingMessage, token: string): boolean {
  // The scheme's name is case-insensitive (RFC 9110 §11.1).
  const given = /^Bearer +(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
  const a = Buffer.from(given), b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A label value as the exposition format writes it: backslash, double quote and newline escaped. */
const labelValue = (v: string | number) => String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/**
 * Prometheus text exposition of every element's counters and gauges and the shards' counters. An element's
 * handler NAME is wirepath_NAME_total when it only grows (a counter) and wirepath_NAME otherwise (a gauge: live
 * entries, rates, extremes), labelled by element and type.
 */
export function metrics(pipeline: Pipeline): string {
  const lines: string[] = [];
  const series = new Map<string, string[]>();
  const add = (name: string, help: string, labels: Record<string, string | number>, value: number | bigint, type: 'counter' | 'gauge' = 'counter') => {
    if (!series.has(name)) series.set(name, [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`]);
    const l = Object.entries(labels).map(([k, v]) => `${k}="${labelValue(v)}"`).join(',');
    series.get(name)!.push(`${name}{${l}} ${value}`);
  };
  for (const [element, s] of Object.entries(pipeline.stats())) {
    add('wirepath_element_packets_in_total', 'packets an element received', { element, type: s.type }, s.in);
    s.out.forEach((n, port) => add('wirepath_element_packets_out_total', 'packets an element sent, per output port', { element, type: s.type, port }, n));
    add('wirepath_element_unconnected_drops_total', 'packets sent to an unconnected optional output', { element, type: s.type }, s.unconnected_drops);
    const handlers = handlersOf(pipeline.graph.byName.get(element)!.type);
    for (const [counter, value] of Object.entries(s)) {
      if ((typeof value !== 'number' && typeof value !== 'bigint') || ['in', 'unconnected_drops'].includes(counter)) continue;
      const grows = handlers[counter]?.monotonic ?? false;
      add(`wirepath_${counter}${grows ? '_total' : ''}`, `the ${counter} handler of each element that has one (wirepath elements TYPE says what it is)`,
        { element, type: s.type }, value, grows ? 'counter' : 'gauge');
    }
  }
  const runtime = pipeline.runtimeStats();
  for (const shard of runtime.shards) {
    add('wirepath_shard_packets_total', 'packets a shard processed', { shard: shard.shard }, shard.packets);
    add('wirepath_shard_batches_total', 'batches a shard processed', { shard: shard.shard }, shard.batches);
    add('wirepath_shard_ring_full_drops_total', 'packets dropped because the shard ring was full', { shard: shard.shard }, shard.ring_full_drops);
    add('wirepath_shard_clone_no_buffer_total', 'copies not made for want of a slot', { shard: shard.shard }, shard.no_buffer);
    add('wirepath_shard_overrun_total', 'packets an element pushed to an output whose batch was full (dropped)', { shard: shard.shard }, shard.overrun);
    add('wirepath_shard_misrouted_total', 'packets an element pushed to an output it does not have (dropped)', { shard: shard.shard }, shard.misrouted);
    add('wirepath_shard_resteered_again_total', 'packets an element handed back to the dispatcher a second time (dropped)', { shard: shard.shard }, shard.resteered_again);
  }
  // These families' names are kept from elements' handlers (engine/registry.ts RUNTIME_FAMILIES).
  add('wirepath_pool_exhausted_total', 'packets not read for want of a free slot', {}, runtime.pool_exhausted);
  add('wirepath_crashes_total', 'shards restarted after an element trapped', {}, pipeline.crashReports.length);
  add('wirepath_crash_packets_lost_total', 'packets lost in the batches of crashed shards', {}, pipeline.crashReports.reduce((n, c) => n + c.packets_lost, 0));
  add('wirepath_overlong_total', 'packets for a sink whose length an element made run past their slot (dropped)', {}, runtime.overlong);
  add('wirepath_later_fragments_waited_total', 'later fragments that waited for their datagram\'s first fragment', {}, runtime.later_fragments_waited);
  add('wirepath_later_fragments_without_first_total', 'later fragments that went on without their first fragment', {}, runtime.later_fragments_without_first);
  for (const s of series.values()) lines.push(...s);
  return lines.join('\n') + '\n';
}

/** An element's parameters as a config writes them (durations, addresses, lists), not as the fast path holds them. */
function configText(node: GraphNode): Record<string, string> {
  const text: Record<string, string> = {};
  for (const [name, value] of Object.entries(node.instance.params)) {
    const spec = node.type.params[name];
    if (spec && value !== undefined) text[name] = spec.type.format(value);
  }
  return text;
}

export function startControl(target: ControlTarget, options: ControlOptions): Promise<ControlServer> {
  if (options.token !== undefined && !options.token.trim()) throw new Error('the control API\'s token is empty: every call would be let through');
  const token = options.token ?? randomBytes(16).toString('hex');
  const host = options.host ?? '127.0.0.1';

  const route = async (req: IncomingMessage): Promise<unknown> => {
    const pipeline = target.pipeline();
    const url = new URL(req.url ?? '/', 'http://control');
    const allowed = methodsOf(url.pathname);
    if (!allowed) throw new HttpError(404, `no ${url.pathname}; see the README's control API section`);
    if (!allowed.includes(req.method ?? 'GET')) throw new HttpError(405, `${url.pathname} takes ${allowed.join(', ')}, not ${req.method}`, allowed);
    // HEAD is answered as GET is, without the body (Node leaves it out).
    const method = req.method === 'HEAD' ? 'GET' : req.method ?? 'GET';
    const changes = method !== 'GET';
    if (changes && !authorised(req, token)) {
      throw new HttpError(401, req.headers.authorization
        ? 'this call changes the pipeline, and the token sent is not the pipeline\'s: use the one it printed at start (or was given with --token)'
        : 'this call changes the pipeline: send the token as "Authorization: Bearer TOKEN"');
    }
    const handler = /^\/elements\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (method === 'GET' && url.pathname === '/graph') {
      return {
        elements: pipeline.graph.nodes.map((n) => ({ name: n.name, type: n.type.type, params: configText(n), handlers: Object.keys(handlersOf(n.type)) })),
        connections: pipeline.graph.nodes.flatMap((n) => n.targets.flatMap((t, port) => (t ? [{ from: n.name, port, to: t.node, input: t.port }] : []))),
      };
    }
    if (method === 'GET' && url.pathname === '/stats') {
      return { elements: pipeline.stats(), runtime: pipeline.runtimeStats(), scale_events: pipeline.scaleReports, crashes: pipeline.crashReports };
    }
    if (method === 'GET' && url.pathname === '/metrics') return { text: metrics(pipeline) };
    if (handler && (method === 'GET' || method === 'PUT')) {
      let element: string, name: string;
      try {
        [element, name] = handler.slice(1).map(decodeURIComponent);
      } catch {
        throw new HttpError(400, `${url.pathname}: a %-escape that is no UTF-8 text`);
      }
      const node = pipeline.graph.byName.get(element);
      if (!node) throw new HttpError(404, `no element '${element}'`);
      const h = handlersOf(node.type)[name];
      if (!h) throw new HttpError(404, `${element} (${node.type.type}) has no handler '${name}'; its handlers: ${Object.keys(handlersOf(node.type)).join(', ')}`);
      if (method === 'GET') {
        if (!h.read) throw new HttpError(405, `${element}.${name} is write-only`, ['PUT']);
        if (h.private && !authorised(req, token)) {
          throw new HttpError(401, `${element}.${name} shows what users do: ${req.headers.authorization
            ? 'the token sent is not the pipeline\'s: use the one it printed at start (or was given with --token)' : 'send the token as "Authorization: Bearer TOKEN" to read it'}`);
        }
        const args = url.searchParams.getAll('arg');
        const arg = args[0];
        // A handler that declares no argument would ignore one, and answer for everything instead; one that takes one, a second.
        if (arg !== undefined && !takesArgument(h)) throw new HttpError(400, `${element}.${name} takes no argument (given '${arg}')`);
        if (args.length > 1) throw new HttpError(400, `${element}.${name} takes one argument, not ${args.length} (${args.join(', ')})`);
        try {
          return { element, handler: name, value: h.read(pipeline.view(element), arg) };
        } catch (e) {
          throw new HttpError(400, `${element}.${name}: ${(e as Error).message}`);
        }
      }
      if (!h.write) throw new HttpError(405, `${element}.${name} is read-only`, ['GET', 'HEAD']);
      const body = parseJson(await readBody(req));
      const unknown = Object.keys(body).filter((key) => key !== 'value');
      if (unknown.length) throw new HttpError(400, `${element}.${name}: send {"value": ...}; ${unknown.map((k) => `'${k}'`).join(', ')} is no key of it`);
      if (body.value !== undefined && !['string', 'number', 'boolean'].includes(typeof body.value)) {
        throw new HttpError(400, `${element}.${name}: send {"value": ...} with a string (or a number or true/false), not ${JSON.stringify(body.value)}`);
      }
      const value = body.value === undefined ? '' : String(body.value);
      try {
        h.write(pipeline.view(element), value);
      } catch (e) {
        throw new HttpError(400, `${element}.${name}: ${(e as Error).message}`);
      }
      return { element, handler: name, written: value };
    }
    if (method === 'POST' && url.pathname === '/scale') {
      const { shards } = parseJson(await readBody(req));
      if (!Number.isInteger(shards) || shards < 1 || shards > 64) throw new HttpError(400, 'send {"shards": N} with N a whole number from 1 to 64');
      try {
        return await pipeline.scale(shards);
      } catch (e) {
        throw new HttpError(409, (e as Error).message);
      }
    }
    if (method === 'POST' && url.pathname === '/reload') {
      if (!target.reload) throw new HttpError(501, 'this pipeline cannot be reloaded');
      const { config, file } = parseJson(await readBody(req));
      if (typeof config !== 'string' || (file !== undefined && typeof file !== 'string')) {
        throw new HttpError(400, 'send {"config": "...the new YAML config...", "file": "its path (for its relative paths and error positions)"}');
      }
      try {
        return await target.reload(config, file);
      } catch (e) {
        const errors = (e as { errors?: { format(): string }[] }).errors;
        // A file or device it cannot open is said with its element's place in the config and its hint.
        const said = (e instanceof EnvironmentError ? e.format() : (e as Error).message);
        if (e instanceof ConflictError) throw new HttpError(409, said);
        throw new HttpError(400, errors ? `the new config is invalid; nothing changed:\n${errors.map((x) => x.format()).join('\n')}` : said);
      }
    }
    if (method === 'POST' && url.pathname === '/snapshot') {
      const { file } = parseJson(await readBody(req));
      if (file !== undefined && typeof file !== 'string') throw new HttpError(400, 'send {"file": "a path"} to write the snapshot there, or {} to have it in the answer');
      const snapshot = await pipeline.snapshot();
      if (typeof file === 'string') {
        try {
          // Its missing folders made, as run --save makes them.
          makeFolders(dirname(file));
          writeFileSync(file, JSON.stringify(snapshot));
        } catch (e) {
          throw new HttpError(400, `cannot write the snapshot to ${file}: ${(e as Error).message}`);
        }
        return { written: file };
      }
      return snapshot;
    }
    throw new HttpError(404, `no ${method} ${url.pathname}; see the README's control API section`);
  };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    // Answered once the body is made: one that cannot be (a handler's odd value) is a 500, not a stopped pipeline.
    route(req).then((result) => {
      const text = result && typeof result === 'object' && 'text' in result ? (result as { text: string }).text : undefined;
      return { type: text !== undefined ? 'text/plain; version=0.0.4' : 'application/json', body: text ?? toJson(result) + '\n' };
    }).then(({ type, body }) => {
      res.writeHead(200, { 'content-type': type });
      res.end(body);
    }, (e) => {
      const status = e instanceof HttpError ? e.status : 500;
      res.writeHead(status, { 'content-type': 'application/json', ...(e instanceof HttpError && e.allow ? { allow: e.allow.join(', ') } : {}) });
      res.end(JSON.stringify({ error: (e as Error).message }) + '\n');
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : options.port;
      // Requests under way get a second to be answered (a reload refused by the stop says so); one half sent (a body
      // that never comes) would hold the stop for minutes: then its connection is closed.
      const close = () => new Promise<void>((r) => {
        server.close(() => r());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref();
      });
      resolve({ url: `http://${host}:${port}`, token, close });
    });
  });
}
