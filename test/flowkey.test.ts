// FlowKey.hintHash (assembly/flowtable.ts): the unchecked hash that NAT and Filter use to touch their table slots ahead
// of the lookups. A wrong hint costs nothing but speed, so only a test can say it is right: it must equal the hash of
// the key the lookup makes, and never read past the packet.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileGraph } from '../engine/compile.ts';
import { ENTRY_PATH } from '../engine/codegen.ts';
import { MemoryArena } from '../engine/memory.ts';
import { Meta } from '../engine/layout.ts';
import { ipv4Frame } from './helpers.ts';

const HARNESS = `
import { FlowKey } from "wirepath/flowtable";
import { Packet } from "wirepath/packet";
export function hint(p: usize, ordered: bool): u32 { return FlowKey.hintHash(changetype<Packet>(p), ordered); }
/** FlowKey.fromPacket's key (NAT's session key has its words) hashed, or 0 when the packet has none. */
export function keyHash(p: usize, key: usize): u32 { return FlowKey.fromPacket(changetype<Packet>(p), key) ? FlowKey.hash(key) : 0; }
export function hashAt(key: usize): u32 { return FlowKey.hash(key); }
`;

const SLOT = 2048;

async function harness() {
  const compiled = await compileGraph({ files: new Map([[ENTRY_PATH, HARNESS]]), entry: HARNESS, layouts: new Map(), types: new Map() }, []);
  const arena = new MemoryArena();
  const x = new WebAssembly.Instance(compiled.module, { env: { memory: arena.memory, abort: () => { throw new Error('abort'); } } }).exports as any;
  const slot = arena.alloc(SLOT, SLOT);
  const key = arena.alloc(16, 16);
  /** Puts `frame` in the slot, unparsed (l3Offset 0), as a capture of `wire` bytes; fills the rest of the slot with `fill`. */
  const load = (frame: Buffer, fill = 0, wire = frame.length) => {
    arena.u8.fill(fill, slot, slot + SLOT);
    arena.u8.fill(0, slot, slot + Meta.size);
    arena.view.setUint32(slot + Meta.length, frame.length, true);
    arena.view.setUint32(slot + Meta.wireLength, wire, true);
    arena.view.setUint16(slot + Meta.dataOffset, Meta.defaultDataOffset, true);
    arena.u8.set(frame, slot + Meta.defaultDataOffset);
    return slot;
  };
  /** The hash of a key of these four words. */
  const hashOf = (words: number[]) => {
    words.forEach((w, i) => arena.view.setUint32(key + 4 * i, w >>> 0, true));
    return x.hashAt(key) >>> 0;
  };
  return {
    hint: (frame: Buffer, ordered: boolean, fill = 0, wire = frame.length) => x.hint(load(frame, fill, wire), ordered) >>> 0,
    keyHash: (frame: Buffer) => x.keyHash(load(frame), key) >>> 0,
    hashOf,
  };
}

/** A copy of a frame with 4 bytes of IP options (NOPs) after its IPv4 header (at 14). */
function withOptions(frame: Buffer): Buffer {
  const out = Buffer.concat([frame.subarray(0, 34), Buffer.from([1, 1, 1, 1]), frame.subarray(34)]);
  out[14] = 0x46;
  out.writeUInt16BE(out.readUInt16BE(16) + 4, 16);
  return out;
}

const address = (s: string) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);

const FRAMES: [string, Buffer][] = [
  ['TCP', ipv4Frame({ src: '100.64.1.2', dst: '198.18.3.4', sport: 40001, dport: 443 })],
  ['UDP', ipv4Frame({ proto: 'udp', src: '100.64.9.9', dst: '198.18.0.1', sport: 5353, dport: 53 })],
  ['UDP with IP options', withOptions(ipv4Frame({ proto: 'udp', src: '100.64.9.9', dst: '198.18.0.1', sport: 5353, dport: 53 }))],
  ['TCP in a VLAN tag', ipv4Frame({ vlan: 7, src: '100.64.1.2', dst: '198.18.3.4', sport: 40001, dport: 443 })],
  ['TCP, source after destination', ipv4Frame({ src: '198.18.3.4', dst: '100.64.1.2', sport: 443, dport: 40001 })],
  ['UDP, same address, higher source port', ipv4Frame({ proto: 'udp', src: '100.64.0.5', dst: '100.64.0.5', sport: 9000, dport: 7 })],
];

test('the hint is the hash of the key the lookup makes (FlowKey.fromPacket\'s words: NAT\'s session key)', async () => {
  const h = await harness();
  for (const [name, frame] of FRAMES) assert.is(h.hint(frame, false), h.keyHash(frame), name);
});

test('ordered, it is the hash of the connection key (lower address first, its port in the high half), the same both ways', async () => {
  const h = await harness();
  const tcp = FRAMES[0][1], reply = FRAMES[4][1];
  const connection = h.hashOf([address('100.64.1.2'), address('198.18.3.4'), (40001 << 16) | 443, 6]);
  assert.is(h.hint(tcp, true), connection);
  assert.is(h.hint(reply, true), connection);
  const same = FRAMES[5][1];
  assert.is(h.hint(same, true), h.hashOf([address('100.64.0.5'), address('100.64.0.5'), (7 << 16) | 9000, 17]), 'same address: lower port first');
});

test('no read past the packet: a capture cut anywhere gives a hint that does not depend on the bytes after it, or none', async () => {
  const h = await harness();
  for (const [name, frame] of FRAMES) {
    for (let n = 0; n <= frame.length; n++) {
      const cut = frame.subarray(0, n);
      const hint = h.hint(cut, false, 0, frame.length);
      assert.is(h.hint(cut, false, 0xff, frame.length), hint, `${name} cut to ${n} bytes`);
      assert.is(h.hint(cut, true, 0xff, frame.length), h.hint(cut, true, 0, frame.length), `${name} cut to ${n} bytes, ordered`);
      // Whole up to the ports: the hint is there.
      const l4End = (frame[12] === 0x81 ? 18 : 14) + (frame[frame[12] === 0x81 ? 18 : 14] & 15) * 4 + 4;
      if (n >= l4End) assert.ok(hint !== 0, `${name} cut to ${n} bytes has its ports`);
      else assert.is(hint, 0, `${name} cut to ${n} bytes: no hint`);
    }
  }
});

test.run();
