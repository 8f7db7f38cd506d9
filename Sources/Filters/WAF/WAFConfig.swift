import Config
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import OutriderCore
import Synchronization
import Telemetry
import WAF

/// The WAF filter's settings, from its `outrider.yaml` entry:
/// ```yaml
/// - name: waf
///   mode: enforce            # shadow = DetectionOnly whatever SecRuleEngine says
///   rules:                   # SecLang files (globs, Include allowed); relative to outrider.yaml
///     - filters/waf/base.conf
///   audit_log: /var/log/outrider/waf.log   # or "stderr" (default)
/// ```
enum WAFFilterBuilder: FilterBuilder {
    static let name = "waf"
    static let knownKeys: Set<String> = ["name", "mode", "rules", "audit_log"]

    struct Settings {
        var ruleFiles: [String]
        var auditLog: String?
        var ruleSet: WAF.RuleSet
    }

    static func validate(_ entry: FilterEntry, environment: [String: String]) -> [ConfigDiagnostic] {
        switch parse(entry) {
        case .success: return []
        case .failure(let e): return e.diagnostics
        }
    }

    static func build(_ entry: FilterEntry, context: FilterBuildContext) throws(ConfigErrors) -> any FilterFactory {
        let s: Settings
        switch parse(entry) {
        case .success(let v): s = v
        case .failure(let e): throw e
        }
        let sink = AuditSinks.shared.sink(path: s.auditLog)
        return WAFFactory(mode: entry.mode, ruleSet: s.ruleSet, audit: sink, metrics: WAFMetrics.shared(context.metrics, ruleCount: s.ruleSet.ruleCount))
    }

    /// Rule files (and everything they include, data files too) to watch for reloads.
    public static func watchedFiles(_ entry: FilterEntry) -> [String] {
        let paths = ruleFiles(entry).paths
        if case .success(let rs) = SecLang.load(files: paths) { return Array(Set(rs.files + paths)).sorted() }
        return paths
    }

    static func baseDir(_ entry: FilterEntry) -> String {
        guard let slash = entry.file.lastIndex(of: "/") else { return "." }
        return slash == entry.file.startIndex ? "/" : String(entry.file[..<slash])
    }

    static func resolve(_ p: String, _ entry: FilterEntry) -> String {
        p.hasPrefix("/") ? p : baseDir(entry) + "/" + p
    }

    static func ruleFiles(_ entry: FilterEntry) -> (paths: [String], errors: [ConfigDiagnostic]) {
        var errors: [ConfigDiagnostic] = []
        var paths: [String] = []
        let node = entry.settings
        func error(_ n: ConfigNode?, _ m: String) {
            errors.append(ConfigDiagnostic(file: entry.file, line: n?.line ?? entry.line, column: n?.column ?? 0, message: "filter 'waf': \(m)"))
        }
        guard let r = node["rules"] else { error(nil, "rules is required (a list of SecLang files)"); return ([], errors) }
        if let s = r.stringValue { paths.append(resolve(s, entry)) }
        else if let list = r.listValue {
            for item in list {
                if let s = item.stringValue, !s.isEmpty { paths.append(resolve(s, entry)) } else { error(item, "rules entries must be file paths") }
            }
        } else { error(r, "rules must be a list of file paths") }
        if paths.isEmpty && errors.isEmpty { error(r, "rules must name at least one file") }
        return (paths, errors)
    }

    static func parse(_ entry: FilterEntry) -> Result<Settings, ConfigErrors> {
        var errors: [ConfigDiagnostic] = []
        let node = entry.settings
        for (key, value) in node.mapEntries ?? [] where !knownKeys.contains(key) {
            errors.append(ConfigDiagnostic(file: entry.file, line: value.line, column: value.column,
                                           message: "filter 'waf': unknown key '\(key)' (known: \(knownKeys.sorted().joined(separator: ", ")))"))
        }
        var audit: String?
        if let a = node["audit_log"] {
            if let s = a.stringValue, !s.isEmpty { audit = s == "stderr" ? nil : resolve(s, entry) }
            else { errors.append(ConfigDiagnostic(file: entry.file, line: a.line, column: a.column, message: "filter 'waf': audit_log must be a path or \"stderr\"")) }
        }
        let (paths, pathErrors) = ruleFiles(entry)
        errors += pathErrors
        if !errors.isEmpty { return .failure(ConfigErrors(errors)) }
        switch RuleSetCache.shared.load(paths) {
        case .success(let rs):
            for w in rs.warnings { Diagnostics.log(.warn, "waf: \(w.description)") }
            return .success(Settings(ruleFiles: paths, auditLog: audit, ruleSet: rs))
        case .failure(let e):
            return .failure(ConfigErrors(e.diagnostics.map { ConfigDiagnostic(file: $0.file, line: $0.line, column: 0, message: "waf: \($0.message)") }))
        }
    }
}

/// validate() and build() of one config version load the same files: keep the last result
/// for a few seconds so a reload compiles the rule set once.
final class RuleSetCache: Sendable {
    static let shared = RuleSetCache()
    private let last = Mutex<(key: String, at: UInt64, result: Result<WAF.RuleSet, RuleErrors>)?>(nil)

    func load(_ paths: [String]) -> Result<WAF.RuleSet, RuleErrors> {
        let key = paths.joined(separator: "\n") + "\n" + Self.stamp(paths)
        let now = monotonicNanos()
        if let hit = last.withLock({ c -> Result<WAF.RuleSet, RuleErrors>? in
            guard let c, c.key == key, now &- c.at < 5_000_000_000 else { return nil }
            return c.result
        }) { return hit }
        let r = SecLang.load(files: paths)
        if case .success(let rs) = r {
            // Include files too: a changed include must not hit a stale entry.
            let full = paths.joined(separator: "\n") + "\n" + Self.stamp(paths)
            last.withLock { $0 = (full, monotonicNanos(), r) }
            _ = rs
        } else {
            last.withLock { $0 = nil }
        }
        return r
    }

    static func stamp(_ paths: [String]) -> String {
        paths.map { p -> String in
            var st = stat()
            guard stat(p, &st) == 0 else { return "-" }
            return "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec).\(st.st_size)"
        }.joined(separator: ",")
    }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(max(0, ts.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, ts.tv_nsec))
}

/// Where audit lines go: one file descriptor per path for the process (reloads reuse it),
/// one write(2) per batch of whole lines (O_APPEND keeps them together across workers).
/// One audit log file. Workers hand it whole lines; a background queue writes them, a few
/// milliseconds' worth per write(2). The event loop then never waits for the disk, and a
/// blocked request's five-odd lines cost a copy instead of a system call each. Lines wait in
/// memory up to `maxPending` bytes; beyond that they are dropped and counted (a stuck disk
/// costs bounded memory, never a stall of traffic). `flush` writes what is pending (at exit).
final class AuditSink: Sendable {
    let fd: Int32
    static let maxPending = 16 << 20
    /// Lines are written this long after the first of a batch arrives.
    static let batchDelay = DispatchTimeInterval.milliseconds(2)
    private struct Pending {
        var bytes: [UInt8] = []
        /// The buffer of the last batch written, emptied: queuing appends into its capacity
        /// instead of growing a new array from nothing every batch.
        var spare: [UInt8] = []
        var scheduled = false
    }
    private let pending = Mutex(Pending())
    /// Serializes the writes (and `flush` with them).
    private let writer = DispatchQueue(label: "outrider.waf.audit")

    init(fd: Int32) { self.fd = fd }

    /// Queues whole lines (each ending in a newline); false when they were dropped because
    /// `maxPending` bytes are already waiting.
    func write(_ bytes: [UInt8]) -> Bool {
        let (accepted, schedule) = pending.withLock { p -> (Bool, Bool) in
            guard p.bytes.count + bytes.count <= AuditSink.maxPending else { return (false, false) }
            p.bytes.append(contentsOf: bytes)
            if p.scheduled { return (true, false) }
            p.scheduled = true
            return (true, true)
        }
        if schedule { writer.asyncAfter(deadline: .now() + AuditSink.batchDelay) { self.drain() } }
        return accepted
    }

    /// Writes everything queued so far before returning.
    func flush() { writer.sync { drain() } }

    /// On `writer`: takes the pending bytes and writes them, until none are left.
    private func drain() {
        while true {
            var batch = pending.withLock { p -> [UInt8] in
                let b = p.bytes
                p.bytes = p.spare
                p.spare = []
                if b.isEmpty { p.scheduled = false }
                return b
            }
            if batch.isEmpty { return }
            writeAll(batch)
            batch.removeAll(keepingCapacity: true)
            pending.withLock { $0.spare = batch }
        }
    }

    /// One write(2) per batch, retrying short writes.
    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress.map { $0 + off }, buf.count - off)
                if n < 0 { if errno == EINTR { continue }; return }
                if n == 0 { return }
                off += n
            }
        }
    }
}

public final class AuditSinks: Sendable {
    public static let shared = AuditSinks()
    private let sinks = Mutex<[String: AuditSink]>([:])
    private let stderrSink = AuditSink(fd: 2)

    /// Writes every sink's pending lines (before the process exits).
    public func flushAll() {
        let all = sinks.withLock { Array($0.values) } + [stderrSink]
        for s in all { s.flush() }
    }

    func sink(path: String?) -> AuditSink {
        guard let path else { return stderrSink }
        return sinks.withLock { m in
            if let s = m[path] { return s }
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                Diagnostics.log(.error, "waf: cannot open audit log \(path) (errno \(errno)); writing to stderr")
                return stderrSink
            }
            let s = AuditSink(fd: fd)
            m[path] = s
            return s
        }
    }
}

/// Counters of the WAF (prefix `outrider_waf_`).
final class WAFMetrics: Sendable {
    let requests: CounterFamily
    let ruleMatches: CounterFamily
    /// Audit lines dropped because the audit log's writer fell `AuditSink.maxPending` behind.
    let auditDropped: Counter
    let passed: Counter
    let blocked: Counter
    let detected: Counter
    let bodyOverLimit: Counter
    let rules: GaugeFamily

    private init(_ r: MetricsRegistry) {
        requests = r.counter("outrider_waf_requests_total", help: "Requests inspected by the WAF, by outcome (pass, blocked, detected = would block in DetectionOnly/shadow).", labelNames: ["outcome"])
        passed = requests.labels("pass")
        blocked = requests.labels("blocked")
        detected = requests.labels("detected")
        bodyOverLimit = requests.labels("body_over_limit")
        ruleMatches = r.counter("outrider_waf_rule_matches_total", help: "Logged rule matches, by rule id.", labelNames: ["rule_id"])
        rules = r.gauge("outrider_waf_rules_loaded", help: "Rules in the running WAF rule set.")
        auditDropped = r.counter("outrider_waf_audit_lines_dropped_total",
                                 help: "Audit log lines dropped because the writer fell behind (16 MiB waiting).").labels([])
    }

    static func shared(_ r: MetricsRegistry, ruleCount: Int) -> WAFMetrics {
        // The registry hands back the same families for the same names across reloads.
        let m = WAFMetrics(r)
        m.rules.labels([]).set(Int64(ruleCount))
        return m
    }
}
