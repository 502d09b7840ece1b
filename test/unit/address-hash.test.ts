import assert from "node:assert/strict";
import { test } from "node:test";
import {
  addressHash,
  defaultClassifyOptions,
  flowHash,
  infoFromTuple,
  PacketInfo,
} from "../../src/packet/index.js";

// The tier places fragments by the addresses alone: the hash must equal the address-only
// key's hash (nft `jhash ip saddr . ip daddr`) whatever protocol the packet carries.
test("addressHash equals the address-only flow hash for TCP, UDP, SCTP (ports-only), v4 and v6", () => {
  const info = new PacketInfo();
  const reference = new PacketInfo();
  for (const [src, dst] of [
    ["10.0.0.1", "10.200.0.1"],
    ["192.0.2.77", "198.51.100.3"],
    ["fd00::1", "fd00:200::1"],
    ["2001:db8::dead:beef", "2001:db8:1::1"],
  ]) {
    infoFromTuple("icmp", src, 0, dst, 0, defaultClassifyOptions, reference);
    for (const proto of ["tcp", "udp", "sctp"]) {
      for (const seed of [0, 0x1234, 0xdeadbeef]) {
        infoFromTuple(proto, src, 1234, dst, 80, defaultClassifyOptions, info);
        assert.equal(
          addressHash(info, seed),
          flowHash(reference, seed),
          `${proto} ${src} seed ${seed}`,
        );
      }
    }
  }
});
