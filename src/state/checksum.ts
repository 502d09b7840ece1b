// The state file's checksums (CRC-32, zlib's: about 60 µs for a 65,537-entry table on
// this machine, paid once per table change by each reader, never per packet). Each
// function reads 32-bit words from any view (the shared mapping or a private copy) and
// allocates only the small views it hashes.
import { crc32 } from "node:zlib";
import {
  B,
  HEADER_WORDS,
  STAMP_WORDS,
  type StateGeometry,
  TARGET_WORDS,
  tableStart,
  UNCHECKED_HEADER_WORDS,
} from "./layout.js";

// Per thread (module state is per worker): scratch copies with the unchecked words zeroed.
const headerScratch = new Uint32Array(HEADER_WORDS);
const stampScratch = new Uint32Array(STAMP_WORDS);

function bytesOf(words: Uint32Array, start: number, count: number): Uint8Array {
  return new Uint8Array(words.buffer, words.byteOffset + start * 4, count * 4);
}

/** CRC-32 of the header's words, the generation, log level and checksum taken as zero. */
export function headerChecksum(header: Uint32Array | Int32Array): number {
  for (let i = 0; i < HEADER_WORDS; i++) headerScratch[i] = header[i];
  for (const i of UNCHECKED_HEADER_WORDS) headerScratch[i] = 0;
  return crc32(bytesOf(headerScratch, 0, HEADER_WORDS));
}

/** CRC-32 of a buffer's stamp (both checksum words taken as zero) and target slots. */
export function targetsChecksum(buffer: Uint32Array, g: StateGeometry): number {
  stampScratch.set(buffer.subarray(0, STAMP_WORDS));
  stampScratch[B.targetsChecksum] = 0;
  stampScratch[B.tableChecksum] = 0;
  const stamp = crc32(bytesOf(stampScratch, 0, STAMP_WORDS));
  return crc32(bytesOf(buffer, STAMP_WORDS, g.maxTargets * TARGET_WORDS), stamp);
}

/** CRC-32 of a buffer's table. */
export function tableChecksum(buffer: Uint32Array, g: StateGeometry): number {
  return crc32(bytesOf(buffer, tableStart(g), g.tableSize));
}
