/// HTTP version as major.minor; only 1.0, 1.1 and 2 are served.
public struct HTTPVersion: Sendable, Equatable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public init(major: Int, minor: Int) { self.major = major; self.minor = minor }
    public static let http10 = HTTPVersion(major: 1, minor: 0)
    public static let http11 = HTTPVersion(major: 1, minor: 1)
    public static let http2 = HTTPVersion(major: 2, minor: 0)
    /// "HTTP/1.1"
    public var description: String { major == 2 ? "HTTP/2" : "HTTP/\(major).\(minor)" }
    /// "1.1", "2" — the form OpenTelemetry's network.protocol.version uses.
    public var shortDescription: String { major == 2 ? "2" : "\(major).\(minor)" }
}

/// How a message body is delimited on the wire (RFC 9112 §6.3).
public enum BodyFraming: Sendable, Equatable {
    /// No body at all.
    case none
    /// Exactly this many bytes.
    case contentLength(UInt64)
    /// Transfer-Encoding: chunked.
    case chunked
    /// Until the connection closes (responses only).
    case untilClose
}

/// A request line and its header fields.
public struct RequestHead: Sendable {
    public var method: String
    /// The request-target exactly as received (origin-form, absolute-form, authority-form or "*").
    public var target: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    public init(method: String, target: String, version: HTTPVersion, headers: HTTPHeaders) {
        self.method = method; self.target = target; self.version = version; self.headers = headers
    }
    /// The path part of the target, without the query.
    public var path: Substring {
        if let q = target.firstIndex(of: "?") { return target[..<q] }
        return target[...]
    }
    /// The query without "?", or nil.
    public var query: Substring? {
        guard let q = target.firstIndex(of: "?") else { return nil }
        return target[target.index(after: q)...]
    }
}

/// A status line and its header fields.
public struct ResponseHead: Sendable {
    public var status: Int
    public var reason: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    public init(status: Int, reason: String = "", version: HTTPVersion = .http11, headers: HTTPHeaders = HTTPHeaders()) {
        self.status = status; self.reason = reason; self.version = version; self.headers = headers
    }
}

/// Standard reason phrases for the statuses Outrider produces itself.
public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: return "Continue"
    case 101: return "Switching Protocols"
    case 200: return "OK"
    case 204: return "No Content"
    case 304: return "Not Modified"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 408: return "Request Timeout"
    case 411: return "Length Required"
    case 413: return "Content Too Large"
    case 414: return "URI Too Long"
    case 417: return "Expectation Failed"
    case 429: return "Too Many Requests"
    case 431: return "Request Header Fields Too Large"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    case 505: return "HTTP Version Not Supported"
    default: return "Unknown"
    }
}
