/// Where an error came from, as Pingora's ErrorSource: the client, the workload, or ourselves.
public enum ErrorSource: String, Sendable { case downstream, upstream, `internal` }

/// One error type for the data path: a kind, a source, and whether a retry may help.
/// Errors are mapped to local replies in exactly one place (`OutriderError.localReply`).
public struct OutriderError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        // downstream protocol errors
        case badRequest, headersTooLarge, uriTooLong, headerTimeout, requestTimeout, bodyTooLarge, unsupportedVersion, notImplemented, expectationFailed
        // upstream errors
        case connectRefused, connectTimeout, upstreamTimeout, upstreamReset, upstreamProtocol
        // internal
        case filterFailed, internalError
    }
    public var kind: Kind
    public var source: ErrorSource
    public var retryable: Bool
    /// Human-readable context, e.g. "Content-Length with Transfer-Encoding".
    public var context: String

    public init(_ kind: Kind, source: ErrorSource, retryable: Bool = false, _ context: String) {
        self.kind = kind; self.source = source; self.retryable = retryable; self.context = context
    }
    public var description: String { "\(source.rawValue) \(kind.rawValue): \(context)" }

    /// The HTTP status a client sees for this error.
    public var status: Int {
        switch kind {
        case .badRequest: return 400
        case .headersTooLarge: return 431
        case .uriTooLong: return 414
        case .headerTimeout, .requestTimeout: return 408
        case .bodyTooLarge: return 413
        case .unsupportedVersion: return 505
        case .notImplemented: return 501
        case .expectationFailed: return 417
        case .connectRefused, .upstreamReset, .upstreamProtocol: return 502
        case .connectTimeout, .upstreamTimeout: return 504
        case .filterFailed, .internalError: return 500
        }
    }

    /// The single mapping from errors to local replies.
    public var localReply: LocalReply {
        let details: String
        switch kind {
        case .badRequest: details = "bad_request"
        case .headersTooLarge: details = "request_headers_too_large"
        case .uriTooLong: details = "uri_too_long"
        case .headerTimeout: details = "header_timeout"
        case .requestTimeout: details = "request_timeout"
        case .bodyTooLarge: details = "body_too_large"
        case .unsupportedVersion: details = "unsupported_http_version"
        case .notImplemented: details = "not_implemented"
        case .expectationFailed: details = "expectation_failed"
        case .connectRefused: details = "upstream_connect_refused"
        case .connectTimeout: details = "upstream_connect_timeout"
        case .upstreamTimeout: details = "upstream_response_timeout"
        case .upstreamReset: details = "upstream_reset"
        case .upstreamProtocol: details = "upstream_protocol_error"
        case .filterFailed: details = "filter_failed"
        case .internalError: details = "internal_error"
        }
        let body = "\(reasonPhrase(status)): \(context)\n"
        return LocalReply(status: status, details: details, body: body,
                          closeConnection: source == .downstream)
    }
}
