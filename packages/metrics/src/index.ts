export { MetricsDatapath, MIN_PEERS, peerTableSizeFor } from './datapath.js';
export type { Direction, HttpSample, TcpSample, MetricsSnapshot, MetricsOptions, MetricsInput } from './datapath.js';
export { KernelMetrics, defaultResolver } from './exporter.js';
export type { Identity, IdentityResolver, MetricsSource, ExporterOptions } from './exporter.js';
export { BUCKET_BOUNDS_S, METHODS, counterNames } from './maps.js';
export type { CounterName } from './maps.js';
export { HpackDecoder, HpackError, STATIC_TABLE, DEFAULT_TABLE_SIZE, ENTRY_OVERHEAD } from './h2/hpack.js';
export type { HpackErrorReason, HpackDecoderOptions, HpackStats, FieldSink } from './h2/hpack.js';
export { huffmanDecode, huffmanEncode, huffmanEncodedLength, huffmanDecodedBound, huffmanPrepare } from './h2/huffman.js';
export {
  CLIENT_PREFACE,
  FrameFlag,
  FrameReader,
  FrameType,
  H2FrameError,
  HeaderBlockAssembler,
  Setting,
  headerBlockFragment,
  matchPreface,
  parseFrameHeader,
  parseHttp2SettingsHeader,
  parseSettings,
} from './h2/frames.js';
export type { FrameHeader, FrameReaderOptions, H2FrameErrorReason, HeaderBlock } from './h2/frames.js';
export { SignalCollector, grpcPath, isGrpcContentType } from './h2/signals.js';
export type { HeaderSignals } from './h2/signals.js';
export { HeaderDirection } from './h2/direction.js';
export type { DecodedBlock, DirectionOptions } from './h2/direction.js';
export { H2Streams, H2_IDENT, H2_ITEM_HEADER, H2_RECORD_HEADER } from './h2/streams.js';
export type { H2Counters, H2HttpSample, H2StreamsOptions, RpcSample } from './h2/streams.js';
