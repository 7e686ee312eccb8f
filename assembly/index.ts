// The wirepath fast-path runtime. Element authors import everything from "wirepath".
export * from "./packet";
export * from "./batch";
export * from "./ring";
export * from "./checksum";
export * from "./headers";
export * from "./flowtable";
export { now, shardIndex, keyBuffer, batchScratch, BATCH_SCRATCH_BYTES, packetRoom, freePacket, freeBatch, dropPacket, newPacket, clonePacket, sendToSink, resteer } from "./shard";
export { ioAllocate, ioDroppedNoSlot, ioRelease, ioSubmit, ioRoom, addressHash, symmetricHash, symmetricHashOf } from "./io";
export * from "./bytes";
