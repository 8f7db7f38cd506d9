import Config
import Filters
import EventLoop
import HTTP1
import OutriderCore
import Synchronization
import TLS

/// One listener as the data path needs it: resolved addresses and metric handles.
public final class ListenerRuntime: Sendable {
    public let name: String
    public let address: SocketAddressSpec
    let upstream: ResolvedAddress
    /// "host:port" of the upstream, computed once instead of per request (access log).
    let upstreamKey: String
    /// Pooled connections are shared by listeners with the same address, protocol and TLS.
    let poolKey: String
    let stats: ListenerStats
    /// TLS termination: certificates and verification for new connections (nil: plaintext).
    /// A reload builds a new context from the files; connections keep the one they began with.
    let tls: TLSServerContext?
    /// TLS toward the workload (nil: plaintext), and the name sent as SNI and verified.
    let upstreamTLS: TLSClientContext?
    let upstreamServerName: String?
    /// Speak HTTP/2 to the workload (one request per stream; connections pooled).
    let upstreamH2: Bool
    /// notAfter of the served certificate (Unix seconds), 0 without TLS.
    public var tlsCertificateNotAfter: UInt64 { tls?.certificateNotAfter ?? 0 }

    init(_ c: ListenerConfig, metrics: ProxyMetrics, file: String) throws(ConfigErrors) {
        name = c.name
        address = c.address
        do {
            upstream = try ResolvedAddress(c.upstream)
        } catch {
            throw ConfigErrors([ConfigDiagnostic(file: file, line: c.line, message: "listener '\(c.name)': upstream \(c.upstream): \(error)")])
        }
        upstreamKey = c.upstream.description
        poolKey = upstreamKey + (c.upstreamProtocol == .h2 ? " h2" : "") + (c.upstreamTLS != nil ? " tls:\(c.name)" : "")
        stats = metrics.listenerStats(c.name)
        if let t = c.tls {
            let policy: ClientCertPolicy = t.clientCert == .require ? .require : (t.clientCert == .optional ? .optional : .none)
            let config = TLSServerConfig(certChainPath: t.cert, keyPath: t.key, clientCAPath: t.clientCA, clientCert: policy,
                                         minVersion: t.minVersion == "1.3" ? .tls13 : .tls12, alpn: ["h2", "http/1.1"],
                                         sniCertificates: t.sni.map { SNICertificate(serverName: $0.serverName, certChainPath: $0.cert, keyPath: $0.key) })
            do {
                tls = try TLSServerContext(config)
            } catch {
                throw ConfigErrors([ConfigDiagnostic(file: file, line: t.line, message: "listener '\(c.name)': tls: \(error.message)")])
            }
        } else {
            tls = nil
        }
        upstreamH2 = c.upstreamProtocol == .h2
        if let u = c.upstreamTLS {
            let config = TLSClientConfig(caPath: u.ca, verifyPeer: u.verify, certChainPath: u.cert, keyPath: u.key,
                                         alpn: c.upstreamProtocol == .h2 ? ["h2"] : ["http/1.1"])
            do {
                upstreamTLS = try TLSClientContext(config)
            } catch {
                throw ConfigErrors([ConfigDiagnostic(file: file, line: u.line, message: "listener '\(c.name)': upstream_tls: \(error.message)")])
            }
            upstreamServerName = u.serverName ?? c.upstream.host
        } else {
            upstreamTLS = nil
            upstreamServerName = nil
        }
    }
}

/// An immutable, fully validated configuration as the loops use it. Published atomically;
/// a request keeps the snapshot it started with until it completes.
public final class ConfigSnapshot: Sendable {
    public let version: Int
    public let loaded: LoadedConfig
    public let listeners: [String: ListenerRuntime]
    let parserLimits: HTTP1Limits
    /// The filters of this version, in order; empty when `filters:` is.
    public let chain: FilterChain
    public var config: OutriderConfig { loaded.config }

    public init(version: Int, loaded: LoadedConfig, chain: FilterChain, metrics: ProxyMetrics) throws(ConfigErrors) {
        self.version = version
        self.loaded = loaded
        self.chain = chain
        var map: [String: ListenerRuntime] = [:]
        for l in loaded.config.listeners { map[l.name] = try ListenerRuntime(l, metrics: metrics, file: loaded.path) }
        listeners = map
        var limits = HTTP1Limits()
        // The read scratch buffer must hold a whole head, so the head limit is capped below it.
        limits.maxHeaderBytes = min(max(loaded.config.limits.maxRequestHeaderBytes, 1024), Worker.maxHeadBytes)
        limits.maxHeaderCount = max(loaded.config.limits.maxRequestHeaders, 1)
        limits.maxURILength = min(max(loaded.config.limits.maxURILength, 64), Worker.maxHeadBytes)
        parserLimits = limits
    }
}

/// Where the current snapshot is published. Workers compare an atomic version on each new
/// request (a relaxed load) and take the lock only when it changed, so the request path is
/// lock-free in the steady state.
public final class SnapshotStore: Sendable {
    private let current: Mutex<ConfigSnapshot>
    private let versionCell: Atomic<Int>

    public init(_ initial: ConfigSnapshot) {
        current = Mutex(initial)
        versionCell = Atomic(initial.version)
    }
    public var version: Int { versionCell.load(ordering: .acquiring) }
    public func load() -> ConfigSnapshot { current.withLock { $0 } }
    public func publish(_ s: ConfigSnapshot) {
        current.withLock { $0 = s }
        versionCell.store(s.version, ordering: .releasing)
    }
}

/// Server lifecycle as /ready reports it (Envoy's server states).
public enum ServerState: Int, Sendable {
    case starting = 0, live = 1, draining = 2
}

/// Everything the workers share: metrics, the published config, the lifecycle state.
public final class ProxyShared: Sendable {
    public let metrics: ProxyMetrics
    public let store: SnapshotStore
    private let stateCell = Atomic<Int>(ServerState.starting.rawValue)
    /// Workers that finished draining (no connections left).
    let drainedWorkers = Atomic<Int>(0)
    public let accessLog: AccessLogSink

    public init(metrics: ProxyMetrics, store: SnapshotStore, accessLog: AccessLogSink) {
        self.metrics = metrics
        self.store = store
        self.accessLog = accessLog
    }
    public var state: ServerState { ServerState(rawValue: stateCell.load(ordering: .acquiring)) ?? .starting }
    public func setState(_ s: ServerState) { stateCell.store(s.rawValue, ordering: .releasing) }
    public var drainedWorkerCount: Int { drainedWorkers.load(ordering: .acquiring) }
}
