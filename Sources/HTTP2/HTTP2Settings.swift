/// What the server advertises in its SETTINGS frame and the limits it enforces against known
/// HTTP/2 attacks. Parsed once (per listener) and shared by every session.
public struct HTTP2Settings: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS. Streams above it are refused (RST_STREAM REFUSED_STREAM
    /// before the client acknowledged our SETTINGS, PROTOCOL_ERROR after).
    public var maxConcurrentStreams: UInt32 = 100
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much request body a client may send on one stream before
    /// the proxy consumed it (`HTTP2ServerSession.consumed`).
    public var initialWindowSize: Int32 = 1 << 20
    /// The connection-level receive window (raised from 65,535 with a WINDOW_UPDATE on stream 0):
    /// the most request-body bytes all streams of one connection can hold in the proxy.
    public var connectionWindowSize: Int32 = 2 << 20
    /// SETTINGS_MAX_HEADER_LIST_SIZE, and enforced: a request header section whose decoded size
    /// (name + value + 32 per field, RFC 9113 §6.5.2) exceeds it gets a 431 response; oversized
    /// trailers reset the stream. Bounds HPACK bombs: decoded fields past the limit are dropped.
    public var maxHeaderListSize: UInt32 = 64 * 1024
    /// SETTINGS_MAX_FRAME_SIZE (16,384 ... 16,777,215).
    public var maxFrameSize: UInt32 = 16_384
    /// CONTINUATION frames accepted after one HEADERS frame; more is a connection error
    /// (CONTINUATION flood, VU#421644). nghttp2's default is 8.
    public var maxContinuationFrames: Int = 16

    /// RST_STREAM frames from the client: a token bucket of `resetBurst` tokens refilled at
    /// `maxResetsPerSecond`. Empty bucket → GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    public var maxResetsPerSecond: Double = 200
    public var resetBurst: Double = 400
    /// SETTINGS frames (non-ACK) from the client: SETTINGS flood (CVE-2019-9515).
    public var maxSettingsPerSecond: Double = 100
    public var settingsBurst: Double = 200
    /// PING frames (non-ACK) from the client: ping flood (CVE-2019-9512).
    public var maxPingsPerSecond: Double = 100
    public var pingBurst: Double = 200
    /// PRIORITY, WINDOW_UPDATE and empty DATA frames without END_STREAM: resource loop and empty
    /// frame floods (CVE-2019-9513, CVE-2019-9518).
    public var maxControlFramesPerSecond: Double = 2_000
    public var controlFrameBurst: Double = 4_000
    /// SETTINGS entries accepted in one SETTINGS frame (nghttp2 option; default 32).
    public var maxSettingsEntries: Int = 32
    /// SETTINGS ACK / PING ACK frames nghttp2 may hold unsent before it declares a flood.
    public var maxOutboundAcks: Int = 1_000

    public init() {}

    /// The settings with values clamped to what RFC 9113 allows, so a bad config cannot make
    /// nghttp2 reject the SETTINGS frame.
    var normalized: HTTP2Settings {
        var s = self
        s.initialWindowSize = max(0, s.initialWindowSize)
        s.connectionWindowSize = max(65_535, s.connectionWindowSize)
        s.maxFrameSize = min(max(s.maxFrameSize, 16_384), 16_777_215)
        s.maxContinuationFrames = max(1, s.maxContinuationFrames)
        s.maxSettingsEntries = max(8, s.maxSettingsEntries)
        s.maxOutboundAcks = max(1, s.maxOutboundAcks)
        return s
    }
}

/// HTTP/2 error codes (RFC 9113 §7), for `resetStream` and for reading events.
public enum HTTP2ErrorCode {
    public static let noError: UInt32 = 0x0
    public static let protocolError: UInt32 = 0x1
    public static let internalError: UInt32 = 0x2
    public static let flowControlError: UInt32 = 0x3
    public static let settingsTimeout: UInt32 = 0x4
    public static let streamClosed: UInt32 = 0x5
    public static let frameSizeError: UInt32 = 0x6
    public static let refusedStream: UInt32 = 0x7
    public static let cancel: UInt32 = 0x8
    public static let compressionError: UInt32 = 0x9
    public static let connectError: UInt32 = 0xa
    public static let enhanceYourCalm: UInt32 = 0xb
    public static let inadequateSecurity: UInt32 = 0xc
    public static let http11Required: UInt32 = 0xd
}
