// Classic libpcap files (not pcapng): what tshark/tcpdump -r read and tcpdump -w writes.

const MAGIC_USEC = 0xa1b2c3d4;
const MAGIC_NSEC = 0xa1b23c4d;
const LINKTYPE_ETHERNET = 1;
const GLOBAL_HLEN = 24;
const RECORD_HLEN = 16;
const SNAPLEN = 262144;

export interface PcapRecord {
  /** Capture time in microseconds since the epoch. */
  timeUs: number;
  /** Length on the wire; larger than `data.length` when the capture was truncated by the snap length. */
  origLength: number;
  data: Buffer;
}

export interface Pcap {
  linktype: number;
  records: PcapRecord[];
}

/** A little-endian, microsecond, Ethernet pcap file holding `frames`, one microsecond apart. */
export function writePcap(frames: readonly Uint8Array[], startTimeUs = 0): Buffer {
  const header = Buffer.alloc(GLOBAL_HLEN);
  header.writeUInt32LE(MAGIC_USEC, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(SNAPLEN, 16);
  header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  const parts: Buffer[] = [header];
  frames.forEach((frame, i) => {
    const t = startTimeUs + i;
    const rec = Buffer.alloc(RECORD_HLEN);
    rec.writeUInt32LE(Math.floor(t / 1e6), 0);
    rec.writeUInt32LE(t % 1e6, 4);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    parts.push(rec, Buffer.from(frame));
  });
  return Buffer.concat(parts);
}

/** Records of a pcap file in either byte order and either time resolution, e.g. from `tcpdump -w`. */
export function readPcap(file: Uint8Array): Pcap {
  const buf = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (buf.length < GLOBAL_HLEN) throw new RangeError(`readPcap: ${buf.length} bytes is shorter than a pcap header`);
  let le: boolean;
  let nsec: boolean;
  const magicLE = buf.readUInt32LE(0);
  const magicBE = buf.readUInt32BE(0);
  if (magicLE === MAGIC_USEC || magicLE === MAGIC_NSEC) [le, nsec] = [true, magicLE === MAGIC_NSEC];
  else if (magicBE === MAGIC_USEC || magicBE === MAGIC_NSEC) [le, nsec] = [false, magicBE === MAGIC_NSEC];
  else throw new TypeError(`readPcap: not a pcap file (magic 0x${magicBE.toString(16)}; pcapng is not supported)`);
  const u32 = (at: number): number => (le ? buf.readUInt32LE(at) : buf.readUInt32BE(at));
  const records: PcapRecord[] = [];
  for (let at = GLOBAL_HLEN; at < buf.length;) {
    if (at + RECORD_HLEN > buf.length) throw new RangeError(`readPcap: truncated record header at offset ${at}`);
    const inclLen = u32(at + 8);
    if (at + RECORD_HLEN + inclLen > buf.length) throw new RangeError(`readPcap: truncated record at offset ${at}`);
    const frac = u32(at + 4);
    records.push({
      timeUs: u32(at) * 1e6 + (nsec ? Math.floor(frac / 1000) : frac),
      origLength: u32(at + 12),
      data: buf.subarray(at + RECORD_HLEN, at + RECORD_HLEN + inclLen),
    });
    at += RECORD_HLEN + inclLen;
  }
  return { linktype: u32(20), records };
}
