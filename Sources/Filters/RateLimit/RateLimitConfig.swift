import Config
import OutriderCore

/// Redis for global limits.
struct RedisSettings: Sendable, Equatable {
    var host: String
    var port: UInt16
    /// Per check: no answer within this → failure mode.
    var timeoutNanos: UInt64 = 50_000_000
    /// true: deny (429) when Redis is down or slow; false: allow.
    var failureDeny = false
    var keyPrefix = "outrider_rl"
    var connectTimeoutNanos: UInt64 = 1_000_000_000
    var maxBackoffNanos: UInt64 = 2_000_000_000
}

/// Which rate-limit headers responses carry.
enum HeaderStyle: String, Sendable {
    /// Envoy's `DRAFT_VERSION_03`: x-ratelimit-limit / -remaining / -reset.
    case draft03
    /// The IETF draft's RateLimit-Policy / RateLimit structured fields.
    case ietf
    case both
    /// Only Retry-After on a 429.
    case none
}

/// The rate-limit filter's settings, from its `outrider.yaml` entry:
/// ```yaml
/// - name: ratelimit
///   mode: enforce                 # enforce | shadow | off
///   rules: filters/ratelimit/default.yaml    # or a list; relative to outrider.yaml's directory
///   scope: local                  # default scope of rule files that do not say (local | global)
///   max_keys: 65536               # local bucket table size (keys), evicting the most idle
///   use_forwarded_for: false      # remote_address = first X-Forwarded-For hop
///   response_headers: draft03     # draft03 | ietf | both | none
///   redis:                        # needed when a limit is global; REDIS_URL overrides address
///     address: 127.0.0.1:6379
///     timeout: 50ms
///     failure_mode: allow         # allow | deny when Redis is down or slow
///     key_prefix: outrider_rl
///     connect_timeout: 1s
///     max_backoff: 2s
/// ```
struct RateLimitSettings: Sendable {
    var ruleFiles: [String]
    var ruleSets: [RuleSet]
    var maxKeys = 65536
    var useForwardedFor = false
    var headers = HeaderStyle.draft03
    var redis: RedisSettings?
    var limitCount: Int { ruleSets.reduce(0) { $0 + $1.limits.count } }
    var hasGlobal: Bool { ruleSets.contains { $0.limits.contains { $0.scope == .global && !$0.unlimited } } }
}

enum RateLimitFilterBuilder: FilterBuilder {
    static let name = "ratelimit"
    static let knownKeys: Set<String> = ["name", "mode", "rules", "scope", "max_keys", "use_forwarded_for", "response_headers", "redis"]
    static let redisKeys: Set<String> = ["address", "timeout", "failure_mode", "key_prefix", "connect_timeout", "max_backoff"]

    static func validate(_ entry: FilterEntry, environment: [String: String]) -> [ConfigDiagnostic] {
        switch parse(entry, environment: environment) {
        case .success: return []
        case .failure(let e): return e.diagnostics
        }
    }

    static func build(_ entry: FilterEntry, context: FilterBuildContext) throws(ConfigErrors) -> any FilterFactory {
        let settings: RateLimitSettings
        switch parse(entry, environment: context.environment) {
        case .success(let s): settings = s
        case .failure(let e): throw e
        }
        return RateLimitFactory(mode: entry.mode, settings: settings, metrics: context.metrics)
    }

    /// The rule files, resolved against the directory of `outrider.yaml`.
    static func watchedFiles(_ entry: FilterEntry) -> [String] {
        ruleFilePaths(entry).map(\.path)
    }

    static func ruleFilePaths(_ entry: FilterEntry) -> [(path: String, node: ConfigNode)] {
        guard let r = entry.settings["rules"] else { return [] }
        let nodes = r.listValue ?? [r]
        return nodes.compactMap { n in n.stringValue.map { (resolve($0, against: entry.file), n) } }
    }

    static func resolve(_ path: String, against configFile: String) -> String {
        if path.hasPrefix("/") { return path }
        guard let slash = configFile.lastIndex(of: "/") else { return path }
        return String(configFile[...slash]) + path
    }

    static func parse(_ entry: FilterEntry, environment env: [String: String]) -> Result<RateLimitSettings, ConfigErrors> {
        var errors: [ConfigDiagnostic] = []
        let node = entry.settings
        func error(_ n: ConfigNode?, _ message: String) {
            errors.append(ConfigDiagnostic(file: entry.file, line: n?.line ?? entry.line, column: n?.column ?? 0, message: "filter 'ratelimit': \(message)"))
        }
        for (key, value) in node.mapEntries ?? [] where !knownKeys.contains(key) {
            error(value, "unknown key '\(key)' (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }
        var settings = RateLimitSettings(ruleFiles: [], ruleSets: [])
        var defaultScope = LimitScope.local
        if let s = node["scope"] {
            if let v = s.stringValue, let sc = LimitScope(rawValue: v) { defaultScope = sc } else { error(s, "scope must be local or global") }
        }
        if let m = node["max_keys"] {
            if let v = m.intValue, v >= 64, v <= 1 << 26 { settings.maxKeys = v } else { error(m, "max_keys must be an integer in 64...\(1 << 26)") }
        }
        if let x = node["use_forwarded_for"] {
            if let b = x.boolValue { settings.useForwardedFor = b } else { error(x, "use_forwarded_for must be true or false") }
        }
        if let h = node["response_headers"] {
            if let s = h.stringValue, let v = HeaderStyle(rawValue: s) { settings.headers = v } else { error(h, "response_headers must be draft03, ietf, both or none") }
        }
        // Rule files.
        guard let rulesNode = node["rules"] else {
            error(node, "missing `rules:` (a rule file path, or a list of them)")
            return .failure(ConfigErrors(errors))
        }
        let paths = ruleFilePaths(entry)
        if paths.isEmpty || (rulesNode.listValue?.count ?? 1) != paths.count {
            error(rulesNode, "rules must be a path or a list of paths")
        }
        var index = 0
        var domains: [String: String] = [:]
        for (path, n) in paths {
            switch RuleFileParser.load(path: path, defaultScope: defaultScope, firstIndex: index) {
            case .failure(let e):
                if e.diagnostics.count == 1, e.diagnostics[0].line == 0 {
                    // Unreadable: say which entry named it.
                    error(n, "rules: \(path): \(e.diagnostics[0].message)")
                } else {
                    errors += e.diagnostics
                }
            case .success(let set):
                if let other = domains[set.domain] {
                    errors.append(ConfigDiagnostic(file: path, line: 1, message: "domain '\(set.domain)' is also used by \(other)"))
                }
                domains[set.domain] = path
                index += set.limits.count
                settings.ruleFiles.append(path)
                settings.ruleSets.append(set)
            }
        }
        // Redis.
        var redis: RedisSettings?
        if let r = node["redis"] {
            if r.mapEntries == nil { error(r, "redis must be a map") }
            for (key, value) in r.mapEntries ?? [] where !redisKeys.contains(key) {
                error(value, "unknown key '\(key)' in redis (known: \(redisKeys.sorted().joined(separator: ", ")))")
            }
            var rs = RedisSettings(host: "127.0.0.1", port: 6379)
            if let a = r["address"] {
                if let s = a.stringValue, let spec = SocketAddressSpec(parsing: s) { rs.host = spec.host; rs.port = spec.port }
                else { error(a, "redis address must be host:port") }
            } else if env["REDIS_URL"] == nil {
                error(r, "redis needs `address: host:port` (or REDIS_URL in the environment)")
            }
            func duration(_ key: String, _ set: (UInt64) -> Void) {
                guard let n = r[key] else { return }
                if let s = n.stringValue, let d = ConfigDuration.parse(s), d > 0 { set(d) }
                else if let d = n.doubleValue, d > 0, let v = ConfigDuration.fromSeconds(d) { set(v) }
                else { error(n, "redis \(key) must be a positive duration like 50ms or 2s") }
            }
            duration("timeout") { rs.timeoutNanos = $0 }
            duration("connect_timeout") { rs.connectTimeoutNanos = $0 }
            duration("max_backoff") { rs.maxBackoffNanos = max(50_000_000, $0) }
            if let f = r["failure_mode"] {
                switch f.stringValue {
                case "allow": rs.failureDeny = false
                case "deny": rs.failureDeny = true
                default: error(f, "failure_mode must be allow or deny")
                }
            }
            if let p = r["key_prefix"] {
                if let s = p.stringValue, !s.isEmpty, s.utf8.count <= 64 { rs.keyPrefix = s } else { error(p, "key_prefix must be a string of 1 to 64 bytes") }
            }
            redis = rs
        }
        // REDIS_URL (envoyproxy/ratelimit's variable): host:port or redis://host:port.
        if let url = env["REDIS_URL"], !url.isEmpty {
            var text = Substring(url)
            if text.hasPrefix("redis://") { text = text.dropFirst(8) }
            if text.hasSuffix("/") { text = text.dropLast() }
            if let spec = SocketAddressSpec(parsing: String(text)), !text.contains("@"), !text.contains("/") {
                var rs = redis ?? RedisSettings(host: spec.host, port: spec.port)
                rs.host = spec.host; rs.port = spec.port
                redis = rs
            } else {
                errors.append(ConfigDiagnostic(file: "env", line: 0, message: "REDIS_URL must be host:port or redis://host:port (got '\(url)')"))
            }
        }
        settings.redis = redis
        if settings.hasGlobal && redis == nil {
            for set in settings.ruleSets {
                for l in set.limits where l.scope == .global && !l.unlimited {
                    errors.append(ConfigDiagnostic(file: l.file, line: l.line, message: "global limit '\(l.descriptorLabel)' needs Redis: add `redis: {address: host:port}` to the ratelimit filter in \(entry.file) or set REDIS_URL"))
                }
            }
        }
        if !errors.isEmpty { return .failure(ConfigErrors(errors)) }
        return .success(settings)
    }
}
