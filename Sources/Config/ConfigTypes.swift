import OutriderCore

/// Minimum severity written to the log. Ordered: debug < info < warn < error.
public enum LogLevel: String, Sendable, Comparable, CaseIterable {
    case debug, info, warn, error

    private var rank: Int {
        switch self {
        case .debug: return 0
        case .info: return 1
        case .warn: return 2
        case .error: return 3
        }
    }
    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rank < rhs.rank }
}

/// How a filter's verdicts are applied: `shadow` evaluates, logs and counts but never blocks.
public enum FilterMode: String, Sendable, CaseIterable {
    case enforce, shadow, off
}

/// Every timeout in nanoseconds; 0 disables the timeout (for `drain`, 0 means "do not wait").
public struct Timeouts: Sendable, Equatable {
    /// The whole request head must arrive within this (slowloris guard) → 408.
    public var headerRead: UInt64
    /// Downstream keep-alive idle time between requests.
    public var idle: UInt64
    /// Whole request and response; 0 by default (disabled).
    public var request: UInt64
    /// TCP connect to the upstream. Never 0.
    public var upstreamConnect: UInt64
    /// Request sent → response head received; → 504.
    public var upstreamResponse: UInt64
    /// Pooled idle upstream connections are closed after this. Never 0.
    public var upstreamIdle: UInt64
    /// SIGTERM / POST /drain: how long in-flight requests get.
    public var drain: UInt64

    public init(
        headerRead: UInt64 = 10_000_000_000,
        idle: UInt64 = 60_000_000_000,
        request: UInt64 = 0,
        upstreamConnect: UInt64 = 5_000_000_000,
        upstreamResponse: UInt64 = 30_000_000_000,
        upstreamIdle: UInt64 = 50_000_000_000,
        drain: UInt64 = 30_000_000_000
    ) {
        self.headerRead = headerRead
        self.idle = idle
        self.request = request
        self.upstreamConnect = upstreamConnect
        self.upstreamResponse = upstreamResponse
        self.upstreamIdle = upstreamIdle
        self.drain = drain
    }

    public static let defaults = Timeouts()
}

let nanosPerSecond: UInt64 = 1_000_000_000

/// Size and count limits. Per-worker where noted.
public struct Limits: Sendable, Equatable {
    public var maxRequestHeaderBytes: Int
    public var maxRequestHeaders: Int
    public var maxURILength: Int
    /// Per worker; accept pauses beyond it.
    public var maxConnections: Int
    /// Idle pooled upstream connections per worker per listener; 0 disables pooling.
    public var upstreamMaxIdle: Int

    public init(
        maxRequestHeaderBytes: Int = 61_440,
        maxRequestHeaders: Int = 100,
        maxURILength: Int = 8192,
        maxConnections: Int = 10_000,
        upstreamMaxIdle: Int = 64
    ) {
        self.maxRequestHeaderBytes = maxRequestHeaderBytes
        self.maxRequestHeaders = maxRequestHeaders
        self.maxURILength = maxURILength
        self.maxConnections = maxConnections
        self.upstreamMaxIdle = upstreamMaxIdle
    }

    public static let defaults = Limits()
}

public struct AdminConfig: Sendable, Equatable {
    public var address: SocketAddressSpec
    public init(address: SocketAddressSpec = AdminConfig.defaultAddress) { self.address = address }
    public static let defaultAddress = SocketAddressSpec(host: "127.0.0.1", port: 15000)
}

public struct ListenerConfig: Sendable, Equatable {
    /// Unique, `[a-z0-9_-]+`; used in metric labels and logs.
    public var name: String
    public var address: SocketAddressSpec
    public var upstream: SocketAddressSpec
    /// TLS termination on this listener; nil = plaintext.
    public var tls: ListenerTLSConfig?
    /// TLS (optionally mTLS) from Outrider to the workload; nil = plaintext upstream.
    public var upstreamTLS: UpstreamTLSConfig?
    /// The protocol spoken to the workload: HTTP/1.1 (default) or HTTP/2 (`h2`: by ALPN over
    /// `upstream_tls`, prior knowledge otherwise).
    public var upstreamProtocol: UpstreamProtocol = .http1
    /// Line of the listener's entry in the config file (0 when built in code).
    public var line: Int

    public init(name: String, address: SocketAddressSpec, upstream: SocketAddressSpec, tls: ListenerTLSConfig? = nil,
                upstreamTLS: UpstreamTLSConfig? = nil, line: Int = 0) {
        self.name = name
        self.address = address
        self.upstream = upstream
        self.tls = tls
        self.upstreamTLS = upstreamTLS
        self.line = line
    }
}

public enum UpstreamProtocol: String, Sendable { case http1, h2 }

/// A listener's `upstream_tls:` block: Outrider speaks TLS to the workload.
/// ```yaml
/// upstream_tls:
///   ca: /etc/outrider/tls/upstream-ca.crt   # verifies the workload's certificate
///   cert: /etc/outrider/tls/client.crt      # optional client certificate (mTLS to the workload)
///   key: /etc/outrider/tls/client.key
///   server_name: workload.local             # SNI and the name checked (default: the upstream host)
///   verify: true                            # false: encrypt without checking (testing only)
/// ```
public struct UpstreamTLSConfig: Sendable, Equatable {
    public var ca: String?
    public var cert: String?
    public var key: String?
    public var serverName: String?
    public var verify: Bool
    public var line: Int
    public init(ca: String? = nil, cert: String? = nil, key: String? = nil, serverName: String? = nil, verify: Bool = true, line: Int = 0) {
        self.ca = ca; self.cert = cert; self.key = key; self.serverName = serverName; self.verify = verify; self.line = line
    }
    public var files: [String] { [ca, cert, key].compactMap { $0 } }
}

/// A listener's `tls:` block. Paths are resolved against the config file's directory.
/// ```yaml
/// tls:
///   cert: /etc/outrider/tls/tls.crt
///   key: /etc/outrider/tls/tls.key
///   client_ca: /etc/outrider/tls/ca.crt
///   client_cert: require        # require | optional | none
///   min_version: "1.2"          # "1.2" | "1.3"
///   sni:                        # optional: other certificates by server name
///     - {server_name: api.example.com, cert: api.crt, key: api.key}
/// ```
public struct ListenerTLSConfig: Sendable, Equatable {
    public enum ClientCert: String, Sendable { case require, optional, none }
    /// A certificate served to clients asking for `serverName` (SNI); exact names or `*.suffix`.
    public struct SNICertificate: Sendable, Equatable {
        public var serverName: String
        public var cert: String
        public var key: String
        public init(serverName: String, cert: String, key: String) { self.serverName = serverName; self.cert = cert; self.key = key }
    }
    public var cert: String
    public var key: String
    /// Other certificates chosen by SNI; `cert`/`key` serve every other name.
    public var sni: [SNICertificate] = []
    public var clientCA: String?
    public var clientCert: ClientCert
    public var minVersion: String
    /// Line of the `tls:` key, for errors about the files it names.
    public var line: Int
    public init(cert: String, key: String, clientCA: String? = nil, clientCert: ClientCert = .none, minVersion: String = "1.2", line: Int = 0) {
        self.cert = cert; self.key = key; self.clientCA = clientCA; self.clientCert = clientCert; self.minVersion = minVersion; self.line = line
    }
    /// Every file this block names (watched for rotation).
    public var files: [String] { [cert, key] + (clientCA.map { [$0] } ?? []) + sni.flatMap { [$0.cert, $0.key] } }
}

public enum AccessLogTarget: Sendable, Equatable {
    case stdout, off, file(String)
}

/// One entry of `filters:`, in chain order. The filter parses `settings` itself.
public struct FilterEntry: Sendable, Equatable {
    public var name: String
    public var mode: FilterMode
    /// The whole entry map, `name` and `mode` included, with positions for file:line errors.
    public var settings: ConfigNode
    public var file: String
    public var line: Int

    public init(name: String, mode: FilterMode = .enforce, settings: ConfigNode, file: String, line: Int) {
        self.name = name
        self.mode = mode
        self.settings = settings
        self.file = file
        self.line = line
    }
}

/// The validated, effective configuration. An immutable value once loaded.
public struct OutriderConfig: Sendable, Equatable {
    /// 0 = number of CPUs available; the proxy resolves it.
    public var workers: Int
    public var logLevel: LogLevel
    public var admin: AdminConfig
    public var listeners: [ListenerConfig]
    public var timeouts: Timeouts
    public var limits: Limits
    public var accessLog: AccessLogTarget
    public var filters: [FilterEntry]

    public init(
        workers: Int = 0,
        logLevel: LogLevel = .info,
        admin: AdminConfig = AdminConfig(),
        listeners: [ListenerConfig] = [],
        timeouts: Timeouts = .defaults,
        limits: Limits = .defaults,
        accessLog: AccessLogTarget = .stdout,
        filters: [FilterEntry] = []
    ) {
        self.workers = workers
        self.logLevel = logLevel
        self.admin = admin
        self.listeners = listeners
        self.timeouts = timeouts
        self.limits = limits
        self.accessLog = accessLog
        self.filters = filters
    }
}

/// One problem found in a config, with its position.
public struct ConfigDiagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// 1-based; 0 when the problem has no line (unreadable file, environment variable).
    public var line: Int
    /// 1-based; 0 when unknown.
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int = 0, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `outrider check` prints exactly this.
    public var description: String { "\(file):\(line): \(message)" }
}

/// Every problem found in one load, in file order, environment problems last.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]
    public init(_ diagnostics: [ConfigDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
