/// Size and count limits the HTTP/1.1 parsers enforce, so a peer cannot make us buffer or scan without bound.
/// Defaults follow common proxies (Envoy's 60 KiB header budget, 100 fields).
public struct HTTP1Limits: Sendable {
    /// Bytes of the start line plus every header line (terminators included); over it → 431.
    public var maxHeaderBytes = 61_440
    /// Header field lines in one head; over it → 431.
    public var maxHeaderCount = 100
    /// Length of the request-target; over it → 414, detected before the request line is complete.
    public var maxURILength = 8_192
    /// Length of a chunk-size line including chunk extensions; over it → 400.
    public var maxChunkLineLength = 4_096
    /// Bytes of a trailer section; over it → 431 for requests (an error for responses).
    public var maxTrailerBytes = 16_384

    /// The defaults above.
    public init() {}
}
