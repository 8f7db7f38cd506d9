/// Settings of the OTLP/HTTP span exporter and its batch processor (CONVENTIONS §3).
///
/// Defaults follow the OTel SDK: queue 2048, batch 512, delay 5 s, `http/protobuf`, request
/// timeout 10 s. `applyingEnvironment` layers the standard `OTEL_*` variables on top.
public struct OTLPExporterConfig: Sendable, Equatable {
    public enum Encoding: String, Sendable, Equatable {
        case protobuf = "http/protobuf"
        case json = "http/json"

        public var contentType: String {
            switch self {
            case .protobuf: return "application/x-protobuf"
            case .json: return "application/json"
            }
        }
    }

    /// Full URL including the path, e.g. `http://127.0.0.1:4318/v1/traces`. http only for now.
    public var endpoint: String
    public var encoding: Encoding
    /// Extra request headers (authentication tokens…), sent in this order.
    public var headers: [(String, String)]
    /// Per export request (connect + send + response).
    public var timeoutNanos: UInt64
    public var maxQueueSize: Int
    public var maxExportBatchSize: Int
    public var scheduleDelayNanos: UInt64
    /// A batch still failing after this long since its first attempt is dropped
    /// (`reason="retries_exhausted"`).
    public var maxRetryElapsedNanos: UInt64
    public var resource: TelemetryResource
    public var scope: InstrumentationScopeInfo

    public static let defaultEndpoint = "http://localhost:4318/v1/traces"
    public static let tracesPath = "/v1/traces"

    public init(endpoint: String = OTLPExporterConfig.defaultEndpoint,
                encoding: Encoding = .protobuf,
                headers: [(String, String)] = [],
                timeoutNanos: UInt64 = 10_000_000_000,
                maxQueueSize: Int = 2048,
                maxExportBatchSize: Int = 512,
                scheduleDelayNanos: UInt64 = 5_000_000_000,
                maxRetryElapsedNanos: UInt64 = 60_000_000_000,
                resource: TelemetryResource,
                scope: InstrumentationScopeInfo) {
        self.endpoint = endpoint
        self.encoding = encoding
        self.headers = headers
        self.timeoutNanos = timeoutNanos
        self.maxQueueSize = maxQueueSize
        self.maxExportBatchSize = maxExportBatchSize
        self.scheduleDelayNanos = scheduleDelayNanos
        self.maxRetryElapsedNanos = maxRetryElapsedNanos
        self.resource = resource
        self.scope = scope
    }

    public static func == (a: OTLPExporterConfig, b: OTLPExporterConfig) -> Bool {
        a.endpoint == b.endpoint && a.encoding == b.encoding
            && a.headers.count == b.headers.count
            && zip(a.headers, b.headers).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            && a.timeoutNanos == b.timeoutNanos && a.maxQueueSize == b.maxQueueSize
            && a.maxExportBatchSize == b.maxExportBatchSize
            && a.scheduleDelayNanos == b.scheduleDelayNanos
            && a.maxRetryElapsedNanos == b.maxRetryElapsedNanos
            && a.resource == b.resource && a.scope == b.scope
    }

    /// Problems that make the config unusable (empty when it is fine): endpoint URL, sizes.
    public func validate() -> [String] {
        var errors: [String] = []
        switch OTLPEndpoint.parse(endpoint) {
        case .success: break
        case .failure(let e): errors.append(e.message)
        }
        if maxQueueSize < 1 { errors.append("max_queue_size must be at least 1") }
        if maxExportBatchSize < 1 { errors.append("max_export_batch_size must be at least 1") }
        if maxExportBatchSize > maxQueueSize && maxQueueSize >= 1 {
            errors.append("max_export_batch_size (\(maxExportBatchSize)) must not exceed max_queue_size (\(maxQueueSize))")
        }
        if timeoutNanos == 0 { errors.append("exporter timeout must be greater than 0") }
        return errors
    }

    /// The signal URL for a base URL as `OTEL_EXPORTER_OTLP_ENDPOINT` and the config's
    /// `exporter.endpoint` give it: `/v1/traces` is appended when the URL has no path (or `/`);
    /// a URL that already has a path is used as-is.
    public static func tracesURL(fromBase base: String) -> String {
        let u = Array(base.utf8)
        var i = 0
        var schemeEnd: Int?
        while i + 2 < u.count {
            if u[i] == 0x3A && u[i + 1] == 0x2F && u[i + 2] == 0x2F { schemeEnd = i + 3; break }
            i += 1
        }
        guard let start = schemeEnd else { return base }
        guard let slash = u[start...].firstIndex(of: 0x2F) else { return base + tracesPath }
        if slash == u.count - 1 { return String(base.dropLast()) + tracesPath }
        return base
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` as the spec says: always a base URL, `/v1/traces` appended
    /// to its path (after removing one trailing slash).
    static func signalURL(appendingTo base: String) -> String {
        var b = base
        if b.hasSuffix("/") { b.removeLast() }
        return b + tracesPath
    }

    /// Environment overrides (CONVENTIONS §3). The more specific `_TRACES_` variables win over
    /// the generic ones. Values that cannot be used leave the setting unchanged and produce an
    /// error text; settings accepted with a caveat produce a warning. The caller reports both
    /// with the variable's name (they start with it).
    public static func applyingEnvironment(_ base: OTLPExporterConfig, _ env: [String: String])
        -> (OTLPExporterConfig, errors: [String], warnings: [String]) {
        var c = base
        var errors: [String] = []
        var warnings: [String] = []
        func value(_ name: String) -> String? {
            guard let v = env[name]?.trimmingWhitespace(), !v.isEmpty else { return nil }
            return v
        }

        // Endpoint.
        if let v = value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            c.endpoint = v
        } else if let v = value("OTEL_EXPORTER_OTLP_ENDPOINT") {
            c.endpoint = signalURL(appendingTo: v)
        }
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
            if let v = value(name), case .failure(let e) = OTLPEndpoint.parse(v) {
                errors.append("\(name): \(e.message)")
            }
        }

        // Protocol.
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            guard let v = value(name) else { continue }
            switch v.lowercased() {
            case "http/protobuf": c.encoding = .protobuf
            case "http/json": c.encoding = .json
            case "grpc":
                errors.append("\(name)=grpc: the OTLP/gRPC exporter is not supported; use http/protobuf or http/json (port 4318)")
            default:
                errors.append("\(name)=\(v): unknown protocol; expected http/protobuf or http/json")
            }
        }

        // Headers: generic first, then the traces-specific ones replace the same keys.
        for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            guard let v = value(name) else { continue }
            let (parsed, problems) = parseHeaderList(v)
            for p in problems { warnings.append("\(name): \(p)") }
            for (k, val) in parsed {
                c.headers.removeAll { $0.0.lowercased() == k.lowercased() }
                c.headers.append((k, val))
            }
        }

        // Timeouts (milliseconds). The request timeout is the most specific OTLP one; the
        // batch processor's export timeout bounds it too.
        var otlpTimeout: UInt64?
        for name in ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] {
            guard let v = value(name) else { continue }
            if let ms = parseMillis(v), ms > 0 { otlpTimeout = ms } else {
                errors.append("\(name)=\(v): expected a positive number of milliseconds")
            }
        }
        if let t = otlpTimeout { c.timeoutNanos = t }
        if let v = value("OTEL_BSP_EXPORT_TIMEOUT") {
            if let ms = parseMillis(v), ms > 0 { c.timeoutNanos = min(c.timeoutNanos, ms) } else {
                errors.append("OTEL_BSP_EXPORT_TIMEOUT=\(v): expected a positive number of milliseconds")
            }
        }

        // Compression.
        for name in ["OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"] {
            guard let v = value(name) else { continue }
            switch v.lowercased() {
            case "none": break
            case "gzip": warnings.append("\(name)=gzip: gzip not supported yet; exporting uncompressed")
            default: errors.append("\(name)=\(v): expected none or gzip")
            }
        }

        // Batch span processor.
        func positiveInt(_ name: String, _ apply: (Int) -> Void) {
            guard let v = value(name) else { return }
            if let n = Int(v), n > 0 { apply(n) } else {
                errors.append("\(name)=\(v): expected a positive integer")
            }
        }
        positiveInt("OTEL_BSP_MAX_QUEUE_SIZE") { c.maxQueueSize = $0 }
        positiveInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") { c.maxExportBatchSize = $0 }
        if let v = value("OTEL_BSP_SCHEDULE_DELAY") {
            if let ms = parseMillis(v) { c.scheduleDelayNanos = ms } else {
                errors.append("OTEL_BSP_SCHEDULE_DELAY=\(v): expected a number of milliseconds")
            }
        }
        if c.maxExportBatchSize > c.maxQueueSize {
            // The SDKs clamp rather than fail here.
            warnings.append("OTEL_BSP_MAX_EXPORT_BATCH_SIZE (\(c.maxExportBatchSize)) exceeds the queue size (\(c.maxQueueSize)); using \(c.maxQueueSize)")
            c.maxExportBatchSize = c.maxQueueSize
        }
        return (c, errors, warnings)
    }

    /// Milliseconds (a non-negative integer) to nanoseconds, `nil` on anything else or overflow.
    static func parseMillis(_ s: String) -> UInt64? {
        guard let ms = UInt64(s) else { return nil }
        let (ns, overflow) = ms.multipliedReportingOverflow(by: 1_000_000)
        return overflow ? nil : ns
    }

    /// `k=v,k2=v2` (W3C baggage-like, as the OTel spec defines `OTEL_EXPORTER_OTLP_HEADERS`),
    /// keys and values percent-decoded and trimmed. Entries without `=` or with an empty key
    /// are skipped with a problem text.
    static func parseHeaderList(_ s: String) -> ([(String, String)], [String]) {
        var out: [(String, String)] = []
        var problems: [String] = []
        for raw in s.split(separator: ",", omittingEmptySubsequences: true) {
            let entry = String(raw).trimmingWhitespace()
            if entry.isEmpty { continue }
            guard let eq = entry.firstIndex(of: "=") else {
                problems.append("ignoring entry without '=': \(entry)")
                continue
            }
            let k = percentDecode(String(entry[..<eq]).trimmingWhitespace())
            let v = percentDecode(String(entry[entry.index(after: eq)...]).trimmingWhitespace())
            guard let key = k, let val = v, !key.isEmpty, isHeaderName(key), isHeaderValue(val) else {
                problems.append("ignoring invalid entry: \(entry)")
                continue
            }
            out.append((key, val))
        }
        return (out, problems)
    }

    static func percentDecode(_ s: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == 0x25 { // %
                guard let h = it.popFirst(), let l = it.popFirst(),
                      let hv = hexValue(h), let lv = hexValue(l) else { return nil }
                bytes.append(hv << 4 | lv)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }

    /// RFC 9110 token characters.
    static func isHeaderName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// No control characters (CR/LF would split the request).
    static func isHeaderValue(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let u = Array(utf8)
        var lo = 0, hi = u.count
        while lo < hi, u[lo] == 0x20 || u[lo] == 0x09 || u[lo] == 0x0A || u[lo] == 0x0D { lo += 1 }
        while hi > lo, u[hi - 1] == 0x20 || u[hi - 1] == 0x09 || u[hi - 1] == 0x0A || u[hi - 1] == 0x0D { hi -= 1 }
        return String(decoding: u[lo..<hi], as: UTF8.self)
    }
}

/// A parsed `http://host[:port][/path]` URL. The host is an IP literal (`[::1]` for IPv6), or
/// a name resolved on the exporter thread when connecting.
public struct OTLPEndpoint: Sendable, Equatable {
    public var host: String
    public var port: UInt16
    public var path: String
    /// `Host` header value: as written in the URL.
    public var hostHeader: String

    public struct ParseError: Error, Sendable, Equatable { public var message: String }

    public static func parse(_ url: String) -> Result<OTLPEndpoint, ParseError> {
        let lower = url.lowercased()
        if lower.hasPrefix("https://") {
            return .failure(ParseError(message: "\(url): https endpoints need the TLS work (not supported yet); use http://"))
        }
        guard lower.hasPrefix("http://") else {
            return .failure(ParseError(message: "\(url): expected an http:// URL"))
        }
        let rest = String(url.dropFirst("http://".count))
        let authority: Substring
        var path: String
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
            authority = rest[..<slash]
            path = String(rest[slash...])
            if path.hasPrefix("?") { path = "/" + path }
        } else {
            authority = rest[...]
            path = "/"
        }
        if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
        if authority.isEmpty { return .failure(ParseError(message: "\(url): missing host")) }
        if authority.contains("@") {
            return .failure(ParseError(message: "\(url): credentials in the URL are not supported; use headers"))
        }
        var host: String
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                return .failure(ParseError(message: "\(url): unterminated IPv6 literal"))
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    return .failure(ParseError(message: "\(url): unexpected text after the IPv6 literal"))
                }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        if host.isEmpty { return .failure(ParseError(message: "\(url): missing host")) }
        var port: UInt16 = 80
        if let p = portText {
            guard let v = UInt16(p), v > 0 else {
                return .failure(ParseError(message: "\(url): invalid port '\(p)'"))
            }
            port = v
        }
        if host.lowercased() == "localhost" { host = "127.0.0.1" }
        guard host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(ParseError(message: "\(url): invalid host"))
        }
        guard OTLPExporterConfig.isHeaderValue(path), !path.contains(" ") else {
            return .failure(ParseError(message: "\(url): invalid path"))
        }
        return .success(OTLPEndpoint(host: host, port: port, path: path, hostHeader: String(authority)))
    }
}
