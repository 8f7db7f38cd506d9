import OutriderCore

/// Why an HTTP/1.x message was rejected. Each case names the status a client gets for a bad request;
/// for responses every case means "the upstream spoke broken HTTP" (see `outriderError(source:)`).
public enum HTTP1ParseError: Error, Sendable, Equatable {
    /// 400. The text is short and human readable, e.g. "Content-Length with Transfer-Encoding".
    case badRequest(String)
    /// 431: too many header fields, or a header/trailer section over its byte budget.
    case headersTooLarge(String)
    /// 414: the request-target is longer than `HTTP1Limits.maxURILength`.
    case uriTooLong
    /// 505: a well-formed version other than HTTP/1.0 and HTTP/1.1.
    case unsupportedVersion
    /// 501: e.g. a transfer-coding other than chunked.
    case notImplemented(String)
    /// 417: an Expect value other than 100-continue.
    case expectationFailed

    /// The HTTP status a client gets when its request fails this way.
    public var status: Int {
        switch self {
        case .badRequest: return 400
        case .headersTooLarge: return 431
        case .uriTooLong: return 414
        case .unsupportedVersion: return 505
        case .notImplemented: return 501
        case .expectationFailed: return 417
        }
    }

    /// Human-readable context for logs and local-reply bodies.
    public var reason: String {
        switch self {
        case .badRequest(let text), .headersTooLarge(let text), .notImplemented(let text): return text
        case .uriTooLong: return "request-target too long"
        case .unsupportedVersion: return "unsupported HTTP version"
        case .expectationFailed: return "unsupported expectation"
        }
    }

    /// Maps to the data path's error type. Requests pass `.downstream` (the kind follows the status);
    /// responses pass `.upstream`, and every case becomes `.upstreamProtocol` (the client sees 502).
    public func outriderError(source: ErrorSource) -> OutriderError {
        if source == .upstream {
            return OutriderError(.upstreamProtocol, source: .upstream, reason)
        }
        let kind: OutriderError.Kind
        switch self {
        case .badRequest: kind = .badRequest
        case .headersTooLarge: kind = .headersTooLarge
        case .uriTooLong: kind = .uriTooLong
        case .unsupportedVersion: kind = .unsupportedVersion
        case .notImplemented: kind = .notImplemented
        case .expectationFailed: kind = .expectationFailed
        }
        return OutriderError(kind, source: source, reason)
    }
}
