#if canImport(Glibc)
import Glibc
#endif
import OutriderCore

/// A validated config and where it came from.
public struct LoadedConfig: Sendable {
    public var config: OutriderConfig
    public var path: String
    /// Lowercase hex SHA-256 of the file bytes as read.
    public var sha256: String
    public var loadedAtWallNanos: UInt64

    public init(config: OutriderConfig, path: String, sha256: String, loadedAtWallNanos: UInt64) {
        self.config = config
        self.path = path
        self.sha256 = sha256
        self.loadedAtWallNanos = loadedAtWallNanos
    }

    /// The active config as one JSON object for GET /config:
    /// `{"version","path","sha256","loaded_at","last_reload_error","config":{…}}`.
    ///
    /// Every effective value is present, defaults included. Durations are strings in the
    /// largest exact unit ("10s", "250ms", "0s" = disabled), the same syntax the file accepts.
    /// Filters are `{"name","mode",…their other keys as written}`.
    public func json(version: Int, lastReloadError: String?) -> String {
        let c = config
        let t = c.timeouts
        let l = c.limits
        let accessLog: String
        switch c.accessLog {
        case .stdout: accessLog = "stdout"
        case .off: accessLog = "off"
        case let .file(p): accessLog = p
        }
        let listeners = c.listeners.map { li in
            var pairs: [(String, String)] = [
                ("name", JSONWriter.quote(li.name)),
                ("address", JSONWriter.quote(li.address.description)),
                ("upstream", JSONWriter.quote(li.upstream.description)),
            ]
            if let t = li.tls {
                pairs.append(("tls", JSONWriter.object([
                    ("cert", JSONWriter.quote(t.cert)), ("key", JSONWriter.quote(t.key)),
                    ("client_ca", t.clientCA.map(JSONWriter.quote) ?? "null"),
                    ("client_cert", JSONWriter.quote(t.clientCert.rawValue)),
                    ("min_version", JSONWriter.quote(t.minVersion)),
                ])))
            }
            return JSONWriter.object(pairs)
        }
        let filters = c.filters.map { f in
            var pairs: [(String, String)] = [("name", JSONWriter.quote(f.name)), ("mode", JSONWriter.quote(f.mode.rawValue))]
            for (key, value) in f.settings.mapEntries ?? [] where key != "name" && key != "mode" {
                pairs.append((key, JSONWriter.render(value)))
            }
            return JSONWriter.object(pairs)
        }
        func d(_ n: UInt64) -> String { JSONWriter.quote(ConfigDuration.format(n)) }
        let body = JSONWriter.object([
            ("workers", String(c.workers)),
            ("log_level", JSONWriter.quote(c.logLevel.rawValue)),
            ("admin", JSONWriter.object([("address", JSONWriter.quote(c.admin.address.description))])),
            ("listeners", JSONWriter.array(listeners)),
            ("timeouts", JSONWriter.object([
                ("header_read", d(t.headerRead)),
                ("idle", d(t.idle)),
                ("request", d(t.request)),
                ("upstream_connect", d(t.upstreamConnect)),
                ("upstream_response", d(t.upstreamResponse)),
                ("upstream_idle", d(t.upstreamIdle)),
                ("drain", d(t.drain)),
            ])),
            ("limits", JSONWriter.object([
                ("max_request_header_bytes", String(l.maxRequestHeaderBytes)),
                ("max_request_headers", String(l.maxRequestHeaders)),
                ("max_uri_length", String(l.maxURILength)),
                ("max_connections", String(l.maxConnections)),
                ("upstream_max_idle", String(l.upstreamMaxIdle)),
            ])),
            ("access_log", JSONWriter.object([("path", JSONWriter.quote(accessLog))])),
            ("filters", JSONWriter.array(filters)),
        ])
        return JSONWriter.object([
            ("version", String(version)),
            ("path", JSONWriter.quote(path)),
            ("sha256", JSONWriter.quote(sha256)),
            ("loaded_at", JSONWriter.quote(rfc3339(wallNanos: loadedAtWallNanos))),
            ("last_reload_error", lastReloadError.map(JSONWriter.quote) ?? "null"),
            ("config", body),
        ])
    }
}

public enum ConfigLoader {
    /// Larger files are refused: a config is a few KiB, and this bounds what a bad mount can cost.
    public static let maxFileBytes = 4 * 1024 * 1024

    /// Reads and validates `path`, then applies environment overrides (OUTRIDER_WORKERS,
    /// OUTRIDER_LOG_LEVEL, OUTRIDER_ADMIN_ADDRESS). Blocking file I/O: call it off the loops.
    public static func load(path: String, environment: [String: String]) throws(ConfigErrors) -> LoadedConfig {
        let bytes: [UInt8]
        switch readFile(path) {
        case let .success(b): bytes = b
        case let .failure(diag): throw ConfigErrors([diag])
        }
        // Invalid UTF-8 is replaced (U+FFFD) rather than rejected; YAML then reports what it finds.
        let text = String(decoding: bytes, as: UTF8.self)
        let config = try parse(text: text, file: path, environment: environment)
        return LoadedConfig(config: config, path: path, sha256: SHA256.hex(bytes), loadedAtWallNanos: wallClockNanos())
    }

    /// Validates YAML `text`; `file` names it in diagnostics.
    public static func parse(text: String, file: String, environment: [String: String]) throws(ConfigErrors) -> OutriderConfig {
        var validator = Validator(file: file)
        var config: OutriderConfig
        switch YAMLReader.read(text: text, file: file) {
        case let .failure(diag):
            throw ConfigErrors([diag])
        case let .success(root):
            config = validator.validate(root: root)
        }
        let envDiagnostics = applyEnvironment(environment, to: &config)
        var fileDiagnostics = validator.diagnostics
        // Checked after the environment, which may move the admin address.
        for listener in config.listeners where Validator.overlaps(listener.address, config.admin.address) {
            fileDiagnostics.append(ConfigDiagnostic(
                file: file, line: listener.line, column: 0,
                message: "listener '\(listener.name)': address \(listener.address) collides with the admin address \(config.admin.address)"))
        }
        let diagnostics = fileDiagnostics.enumerated().sorted { a, b in
            (a.element.line, a.offset) < (b.element.line, b.offset)
        }.map(\.element) + envDiagnostics
        if !diagnostics.isEmpty { throw ConfigErrors(diagnostics) }
        return config
    }

    /// Environment problems are reported as `env:0: VARIABLE …`. Empty values count as unset,
    /// since Kubernetes manifests often template variables to "".
    static func applyEnvironment(_ env: [String: String], to config: inout OutriderConfig) -> [ConfigDiagnostic] {
        var diagnostics: [ConfigDiagnostic] = []
        func fail(_ message: String) {
            diagnostics.append(ConfigDiagnostic(file: "env", line: 0, column: 0, message: message))
        }
        if let raw = env["OUTRIDER_WORKERS"], !raw.isEmpty {
            if let w = Int(raw.trimmingASCIIWhitespace()), (0...256).contains(w) {
                config.workers = w
            } else {
                fail("OUTRIDER_WORKERS must be an integer between 0 and 256 (got '\(raw)')")
            }
        }
        if let raw = env["OUTRIDER_LOG_LEVEL"], !raw.isEmpty {
            if let level = LogLevel(rawValue: raw.trimmingASCIIWhitespace().asciiLowercased) {
                config.logLevel = level
            } else {
                fail("OUTRIDER_LOG_LEVEL must be one of debug, info, warn, error (got '\(raw)')")
            }
        }
        if let raw = env["OUTRIDER_ADMIN_ADDRESS"], !raw.isEmpty {
            if let spec = Validator.parseAddress(raw) {
                config.admin.address = spec
            } else {
                fail("OUTRIDER_ADMIN_ADDRESS '\(raw)' is not host:port (an IP address or localhost, and a port 1-65535)")
            }
        }
        return diagnostics
    }

    private static func readFile(_ path: String) -> Result<[UInt8], ConfigDiagnostic> {
        func failure(_ what: String, _ err: Int32) -> Result<[UInt8], ConfigDiagnostic> {
            .failure(ConfigDiagnostic(file: path, line: 0, column: 0, message: "\(what): \(String(cString: strerror(err)))"))
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return failure("cannot open config", errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return failure("cannot read config", errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maxFileBytes {
                return .failure(ConfigDiagnostic(file: path, line: 0, column: 0,
                                                 message: "config is larger than \(maxFileBytes / (1024 * 1024)) MiB"))
            }
        }
        return .success(bytes)
    }
}
