// A packet lives in a fixed-size slot of shared linear memory. The first 32 bytes of the slot are
// its metadata (this class); the frame itself starts at `dataOffset`, leaving headroom for
// encapsulation. The engine's TypeScript side mirrors these offsets in engine/layout.ts.

/** Byte offsets of the metadata fields, for code that works on raw addresses. */
export const META_LENGTH: u32 = 0;
export const META_WIRE_LENGTH: u32 = 4;
export const META_TIMESTAMP: u32 = 8;
export const META_DATA_OFFSET: u32 = 16;
export const META_L3_OFFSET: u32 = 18;
export const META_PORT: u32 = 20;
export const META_SIZE: u32 = 32;
/** Where a frame starts in a fresh slot: 32 bytes of metadata, then 96 bytes of headroom. */
export const DEFAULT_DATA_OFFSET: u16 = 128;
/** `flags` bit of a packet an element handed back to the dispatcher (resteer): it comes round once more. */
export const PACKET_RESTEERED: u16 = 1;
/** `flags` bit of a later fragment that waited on the I/O side for its datagram's first fragment (assembly/io.ts). */
export const PACKET_WAITED: u16 = 2;
/** `port` of a packet on its way back to the dispatcher: this bit plus the number of the source it came from. */
export const PORT_RESTEER: u16 = 0x8000;

@unmanaged
export class Packet {
  /** Bytes of the frame held in the slot. */
  length: u32;
  /** Bytes the frame had on the wire (larger when the capture was truncated). An element that changes the frame's length changes this with it: ToDevice sends no frame shorter than this. */
  wireLength: u32;
  /** Capture or arrival time, in nanoseconds. */
  timestamp: u64;
  /** Offset of the frame's first byte from the start of the slot. */
  dataOffset: u16;
  /** Offset of the network header from the frame start, set by the header parser; 0 = not parsed. An element that changes the layer 2 header (or moves the data) sets it back to 0. */
  l3Offset: u16;
  /** On the way in, the source that read it; on the way out, the sink it goes to. */
  port: u16;
  flags: u16;
  /** Free for elements to mark packets with (Click's paint annotation). */
  annotation: u32;
  /** Steering hash, computed once by the dispatcher. */
  hash: u32;

  /** Address of the frame's first byte. */
  @inline get data(): usize {
    return changetype<usize>(this) + <usize>this.dataOffset;
  }
}
