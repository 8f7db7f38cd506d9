#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Config
import Dispatch
import Filters
import Foundation
import OutriderCore
import Proxy
import Synchronization
import Telemetry

/// `outrider run`: start-up, hot reload, signals and drain. Everything here runs on the
/// `control` queue or at start-up; the workers only ever see published snapshots.
enum RunCommand {
    static func run(_ args: Arguments) -> Never {
        guard let path = args.configPath else { exit(2) }
        let loaded: LoadedConfig
        switch ConfigValidation.load(path: path, args: args) {
        case .success(let l): loaded = l
        case .failure(let errors):
            for d in errors.diagnostics { Diagnostics.log(.error, "config: \(d.description)") }
            exit(1)
        }
        applyLogLevel(loaded.config.logLevel)
        signal(SIGPIPE, SIG_IGN)

        let registry = MetricsRegistry()
        registerProcessMetrics(registry, version: outriderVersion)
        let metrics = ProxyMetrics(registry: registry)
        let controller: Controller
        do {
            let chain = try FilterRegistry.buildChain(loaded.config.filters, context: filterContext(registry))
            let snapshot = try ConfigSnapshot(version: 1, loaded: loaded, chain: chain, metrics: metrics)
            let accessLog = try AccessLogSink(path: accessLogPath(loaded.config.accessLog))
            let shared = ProxyShared(metrics: metrics, store: SnapshotStore(snapshot), accessLog: accessLog)
            let workers = loaded.config.workers == 0 ? Int(clinux_available_cpus()) : loaded.config.workers
            let server = try ProxyServer(shared: shared, workers: workers)
            controller = Controller(args: args, path: path, server: server, registry: registry, initial: loaded)
            let admin = try AdminServer(address: loaded.config.admin.address) { method, path in
                controller.admin(method: method, path: path)
            }
            controller.installSignalsAndWatcher()
            // Building a rule set (parsing, automata) and listing the rule files to watch (which
            // reads them) free megabytes of scratch: hand those pages back before serving.
            _ = clinux_malloc_trim()
            try server.start()
            try admin.start()
            shared.setState(.live)
            Diagnostics.log(.info, "outrider \(outriderVersion) serving: \(loaded.config.listeners.map { "\($0.name) \($0.address) → \($0.upstream)" }.joined(separator: ", ")); admin \(loaded.config.admin.address); \(workers) worker(s)")
        } catch {
            Diagnostics.log(.error, "cannot start: \(error)")
            exit(1)
        }
        // After a moment, so the workers have faulted in what they run.
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(500)) { StartupPages.release() }
        dispatchMain()
    }

    static func filterContext(_ registry: MetricsRegistry) -> FilterBuildContext {
        FilterBuildContext(metrics: registry, environment: ProcessInfo.processInfo.environment, version: outriderVersion)
    }

    static func accessLogPath(_ t: AccessLogTarget) -> String {
        switch t {
        case .stdout: return "stdout"
        case .off: return "off"
        case .file(let p): return p
        }
    }

    static func applyLogLevel(_ l: LogLevel) {
        Diagnostics.setLevel(Diagnostics.Level(name: l.rawValue) ?? .info)
    }
}

/// Owns reloads, admin answers and the drain. Mutable state lives behind one Mutex; the slow
/// work (reading and validating files) runs on the serial `queue`, never on a worker loop.
final class Controller: Sendable {
    private struct State {
        var current: LoadedConfig
        var version: Int
        var lastReloadError: String?
        /// Seconds the last reload attempt took (read, validate, compile filters and rule sets, publish).
        var lastReloadSeconds = 0.0
        var draining = false
    }
    let queue = DispatchQueue(label: "outrider.control")
    private let args: Arguments.Sendable
    private let path: String
    private let server: ProxyServer
    private let registry: MetricsRegistry
    private let reloadsOK: Counter
    private let reloadsFailed: Counter
    private let state: Mutex<State>
    private let watched = Mutex<(files: [String], watcher: FileWatcher?)>(([], nil))
    private static let controlShard = 15

    init(args: Arguments, path: String, server: ProxyServer, registry: MetricsRegistry, initial: LoadedConfig) {
        self.args = Arguments.Sendable(args)
        self.path = path
        self.server = server
        self.registry = registry
        let reloads = registry.counter("outrider_config_reloads_total", help: "Config reload attempts, by result.", labelNames: ["result"])
        reloadsOK = reloads.labels("ok")
        reloadsFailed = reloads.labels("failed")
        state = Mutex(State(current: initial, version: 1))
        let shared = server.shared
        registry.gaugeFunction("outrider_config_version", help: "Version of the active config (1 at start, +1 per successful reload).") {
            Double(shared.store.version)
        }
        registry.gaugeFunction("outrider_server_state", help: "0 starting, 1 live, 2 draining.") {
            Double(shared.state.rawValue)
        }
        registry.gaugeFunction("outrider_config_reload_duration_seconds",
                               help: "Time the last reload attempt took: reading, validating, compiling filters and rule sets, publishing.") { [weak self] in
            self?.state.withLock { $0.lastReloadSeconds } ?? 0
        }
        registry.gaugeFunction("outrider_workers", help: "Worker event loops.") { [server] in Double(server.workerCount) }
        for l in initial.config.listeners where l.tls != nil {
            let name = l.name
            registry.gaugeFunction("outrider_tls_certificate_expiry_timestamp_seconds", help: "notAfter of the certificate a TLS listener serves (Unix seconds).", labels: ["listener": name]) {
                Double(shared.store.load().listeners[name]?.tlsCertificateNotAfter ?? 0)
            }
        }
    }

    // MARK: signals and file watch

    func installSignalsAndWatcher() {
        var sources: [Any] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            src.setEventHandler { [self] in
                if sig == SIGHUP { reload(reason: "SIGHUP") } else { drain(reason: sig == SIGTERM ? "SIGTERM" : "SIGINT") }
            }
            src.resume()
            sources.append(src)
        }
        let files = state.withLock { Controller.watchedFiles(path, $0.current.config) }
        watch(files)
        retainedSources = sources
    }

    /// The config, every rule file its filters name, and TLS certificates, keys and CA bundles
    /// (rotation: a changed certificate reloads like a changed config).
    static func watchedFiles(_ path: String, _ c: OutriderConfig) -> [String] {
        var files = [path] + FilterRegistry.watchedFiles(c.filters)
        for l in c.listeners {
            for f in (l.tls?.files ?? []) + (l.upstreamTLS?.files ?? []) where !files.contains(f) { files.append(f) }
        }
        return files
    }

    /// Watches the config and every rule file it names. Called again when a reload changes
    /// the set of files (a new rule file path), replacing the previous watcher.
    private func watch(_ files: [String]) {
        let changed = watched.withLock { w -> Bool in
            guard w.files != files else { return false }
            w.watcher?.cancel()
            w.watcher = nil
            w.files = files
            return true
        }
        guard changed else { return }
        do {
            let watcher = try FileWatcher(files: files, queue: queue) { [self] in reload(reason: "file change") }
            watcher.start()
            watched.withLock { $0.watcher = watcher }
        } catch {
            Diagnostics.log(.warn, "file watch disabled (\(error)); SIGHUP still reloads")
        }
    }

    // MARK: reload

    /// Parses and validates off the loops; publishes only a config that passed everything.
    func reload(reason: String) {
        queue.async { [self] in
            let started = monotonicNanos()
            defer {
                let seconds = Double(monotonicNanos() &- started) / 1e9
                state.withLock { $0.lastReloadSeconds = seconds }
            }
            let result = ConfigValidation.load(path: path, args: args.value)
            switch result {
            case .failure(let errors):
                reloadsFailed.increment(shard: Controller.controlShard)
                let text = errors.diagnostics.map(\.description).joined(separator: "; ")
                state.withLock { $0.lastReloadError = text }
                Diagnostics.log(.error, "reload (\(reason)) rejected, keeping the running config: \(text)")
            case .success(let loaded):
                let (old, version) = state.withLock { s in (s.current, s.version + 1) }
                warnAboutRestartOnlyChanges(old: old.config, new: loaded.config)
                do {
                    let chain = try FilterRegistry.buildChain(loaded.config.filters, context: RunCommand.filterContext(registry))
                    let snap = try ConfigSnapshot(version: version, loaded: loaded, chain: chain, metrics: server.shared.metrics)
                    server.shared.store.publish(snap)
                    state.withLock { s in
                        s.current = loaded
                        s.version = version
                        s.lastReloadError = nil
                    }
                    RunCommand.applyLogLevel(loaded.config.logLevel)
                    watch(Controller.watchedFiles(path, loaded.config))
                    reloadsOK.increment(shard: Controller.controlShard)
                    let ms = Double(monotonicNanos() &- started) / 1e6
                    Diagnostics.log(.info, "config reloaded (\(reason)): version \(version), sha256 \(loaded.sha256.prefix(12)), \(Int(ms)) ms")
                    trimHeapSoon()
                } catch {
                    reloadsFailed.increment(shard: Controller.controlShard)
                    let text = (error as? ConfigErrors)?.diagnostics.map(\.description).joined(separator: "; ") ?? "\(path): \(error)"
                    state.withLock { $0.lastReloadError = text }
                    Diagnostics.log(.error, "reload (\(reason)) rejected, keeping the running config: \(text)")
                }
            }
        }
    }

    /// A reload frees a whole filter chain (a WAF rule set is tens of megabytes while it is
    /// built) once the streams still using the old snapshot finish; glibc keeps freed pages in
    /// its heaps, so without this every reload under load would leave RSS higher. Hand them
    /// back a little after the swap, when the old snapshot has drained.
    private func trimHeapSoon() {
        queue.asyncAfter(deadline: .now() + 2) { _ = clinux_malloc_trim() }
    }

    /// Listeners and the admin address are bound once; say so instead of silently ignoring.
    private func warnAboutRestartOnlyChanges(old: OutriderConfig, new: OutriderConfig) {
        let oldL = Dictionary(old.listeners.map { ($0.name, $0.address) }, uniquingKeysWith: { a, _ in a })
        let newL = Dictionary(new.listeners.map { ($0.name, $0.address) }, uniquingKeysWith: { a, _ in a })
        for (name, addr) in newL where oldL[name] != addr {
            Diagnostics.log(.warn, "listener '\(name)' address \(addr) takes effect only after a restart (still serving \(oldL[name].map { "\($0)" } ?? "nothing") for it)")
        }
        for name in oldL.keys where newL[name] == nil {
            Diagnostics.log(.warn, "listener '\(name)' was removed from the config; it keeps serving with its last upstream until a restart")
        }
        if old.admin.address != new.admin.address {
            Diagnostics.log(.warn, "admin address change to \(new.admin.address) takes effect only after a restart")
        }
        if old.workers != new.workers {
            Diagnostics.log(.warn, "workers change takes effect only after a restart")
        }
        if old.accessLog != new.accessLog {
            Diagnostics.log(.warn, "access_log change takes effect only after a restart")
        }
    }

    // MARK: drain

    /// SIGTERM or POST /drain: stop accepting, /ready → 503, let in-flight exchanges finish
    /// for up to `timeouts.drain`, then exit 0.
    func drain(reason: String) {
        queue.async { [self] in
            let already = state.withLock { s -> Bool in
                defer { s.draining = true }
                return s.draining
            }
            guard !already else { return }
            let timeout = state.withLock { $0.current.config.timeouts.drain }
            Diagnostics.log(.info, "draining (\(reason)): no new connections, finishing in-flight requests (up to \(Double(timeout) / 1e9) s)")
            server.shared.setState(.draining)
            server.drain()
            let deadline = monotonicNanos() &+ (timeout == 0 ? 30_000_000_000 : timeout)
            waitForDrain(deadline: deadline)
        }
    }

    private func waitForDrain(deadline: UInt64) {
        if server.allDrained {
            Diagnostics.log(.info, "drained; flushing spans and audit lines, exiting")
            flushAndExit(spansWithin: 2_000_000_000)
        }
        if monotonicNanos() >= deadline {
            Diagnostics.log(.warn, "drain timeout reached; closing remaining connections")
            server.forceClose()
            queue.asyncAfter(deadline: .now() + .milliseconds(200)) {
                self.flushAndExit(spansWithin: 1_000_000_000)
            }
            return
        }
        queue.asyncAfter(deadline: .now() + .milliseconds(50)) { [self] in waitForDrain(deadline: deadline) }
    }

    /// Writes out what is still queued (spans, up to `spansWithin` ns; audit lines) and exits 0.
    private func flushAndExit(spansWithin: UInt64) -> Never {
        TracingExport.flushAndStop(within: spansWithin)
        AuditSinks.shared.flushAll()
        exit(0)
    }

    // MARK: admin

    func admin(method: String, path rawPath: String) -> AdminResponse {
        let path = rawPath
        switch path {
        case "/ready":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(method, "GET") }
            switch server.shared.state {
            case .live: return AdminResponse(status: 200, body: "LIVE\n")
            case .draining: return AdminResponse(status: 503, body: "DRAINING\n")
            case .starting: return AdminResponse(status: 503, body: "STARTING\n")
            }
        case "/healthz", "/live":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(method, "GET") }
            return AdminResponse(status: 200, body: "ok\n")
        case "/metrics", "/stats/prometheus":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(method, "GET") }
            let info = state.withLock { s in
                "# HELP outrider_config_info The active config's file hash (value is always 1).\n# TYPE outrider_config_info gauge\noutrider_config_info{sha256=\"\(s.current.sha256)\",version=\"\(s.version)\"} 1\n"
            }
            return AdminResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.render() + info)
        case "/config", "/config_dump":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(method, "GET") }
            let body = state.withLock { s in s.current.json(version: s.version, lastReloadError: s.lastReloadError) }
            return AdminResponse(status: 200, contentType: "application/json", body: body + "\n")
        case "/drain", "/drain_listeners", "/shutdown":
            // Mutating endpoints are POST-only; a GET gets 400 as Envoy's admin does.
            guard method == "POST" else { return AdminResponse(status: 400, body: "\(path) requires POST\n") }
            drain(reason: "POST \(path)")
            return AdminResponse(status: 202, body: "draining\n")
        case "/reload":
            guard method == "POST" else { return AdminResponse(status: 400, body: "\(path) requires POST\n") }
            reload(reason: "POST /reload")
            return AdminResponse(status: 202, body: "reload scheduled\n")
        case "/":
            return AdminResponse(status: 200, body: "outrider \(outriderVersion) admin: /ready /healthz /metrics /config, POST /drain /reload\n")
        default:
            return AdminResponse(status: 404, body: "no such admin endpoint: \(path)\n")
        }
    }

    private func methodNotAllowed(_ method: String, _ allowed: String) -> AdminResponse {
        AdminResponse(status: 405, body: "\(method) not allowed; use \(allowed)\n")
    }
}

/// Signal sources live as long as the process. Written once on the main
/// thread during start-up, never read afterwards: it only keeps them alive.
nonisolated(unsafe) private var retainedSources: [Any] = []

extension Arguments {
    /// The parsed flags as a Sendable value for the control queue.
    struct Sendable: Swift.Sendable {
        let command: String
        let configPath: String?
        let workers: Int?
        let logLevel: String?
        init(_ a: Arguments) { command = a.command.rawValue; configPath = a.configPath; workers = a.workers; logLevel = a.logLevel }
        var value: Arguments {
            var a = Arguments()
            a.configPath = configPath; a.workers = workers; a.logLevel = logLevel
            return a
        }
    }
}
