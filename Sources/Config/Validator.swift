#if canImport(Glibc)
import Glibc
#endif
import OutriderCore

/// Walks a `ConfigNode` tree into an `OutriderConfig`, collecting every problem instead of
/// stopping at the first, so one `outrider check` run shows them all.
struct Validator {
    let file: String
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(file: String) { self.file = file }

    /// The config file's directory with a trailing slash ("" for a bare file name), against
    /// which relative paths in the config are resolved.
    var configDirectory: String {
        guard let slash = file.lastIndex(of: "/") else { return "" }
        return String(file[...slash])
    }

    // MARK: Reporting

    mutating func error(_ line: Int, _ column: Int = 0, _ message: String) {
        diagnostics.append(ConfigDiagnostic(file: file, line: line, column: column, message: message))
    }

    mutating func error(at node: ConfigNode, _ message: String) {
        error(node.line, node.column, message)
    }

    /// A key of a map with the position of the key itself, for errors about its value.
    struct Field {
        var key: String
        var node: ConfigNode
        var line: Int
        var column: Int
    }

    /// Reads a map's fields, reporting unknown keys (with a suggestion) against `known`.
    mutating func fields(of map: ConfigNode, known: [String], context: String) -> [String: Field] {
        guard let entries = map.mapEntries else { return [:] }
        var result: [String: Field] = [:]
        for (key, value) in entries {
            let pos = map.keyPositions[key]
            let field = Field(key: key, node: value, line: pos?.line ?? value.line, column: pos?.column ?? value.column)
            if known.contains(key) {
                result[key] = field
            } else {
                var message = "unknown key '\(key)' \(context)"
                if let guess = Suggest.closest(to: key, among: known) { message += " (did you mean '\(guess)'?)" }
                error(field.line, field.column, message)
            }
        }
        return result
    }

    // MARK: Document

    mutating func validate(root: ConfigNode?) -> OutriderConfig {
        var config = OutriderConfig()
        guard let root, !root.isNull else {
            error(1, 0, "config is empty; it needs at least a 'listeners' list")
            return config
        }
        guard root.mapEntries != nil else {
            error(at: root, "the top level must be a map of keys (workers, admin, listeners, …), not \(root.kindDescription)")
            return config
        }
        let top = fields(of: root, known: ["workers", "log_level", "admin", "listeners", "timeouts",
                                           "limits", "access_log", "filters"], context: "at top level")
        if let f = top["workers"] {
            if let w = int(f, in: 0...256, name: "workers") { config.workers = w }
        }
        if let f = top["log_level"] {
            if let s = f.node.stringValue, let level = LogLevel(rawValue: s) {
                config.logLevel = level
            } else {
                error(f.line, f.column, "log_level must be one of debug, info, warn, error (got \(show(f.node)))")
            }
        }
        if let f = top["admin"], let map = map(f, name: "admin") {
            let admin = fields(of: map, known: ["address"], context: "in admin")
            if let a = admin["address"], let spec = address(a, what: "admin address") {
                config.admin.address = spec
            }
        }
        if let f = top["listeners"] {
            config.listeners = listeners(f)
        } else {
            error(root.line, root.column, "missing required key 'listeners'")
        }
        if let f = top["timeouts"], let map = map(f, name: "timeouts") {
            config.timeouts = timeouts(map)
        }
        if let f = top["limits"], let map = map(f, name: "limits") {
            config.limits = limits(map)
        }
        if let f = top["access_log"], let map = map(f, name: "access_log") {
            let fs = fields(of: map, known: ["path"], context: "in access_log")
            if let p = fs["path"] {
                switch p.node.stringValue {
                case "stdout"?: config.accessLog = .stdout
                case "off"?: config.accessLog = .off
                case let path? where !path.isEmpty && !path.utf8.contains(0):
                    config.accessLog = .file(path)
                default:
                    error(p.line, p.column, "access_log.path must be 'stdout', 'off' or a file path (got \(show(p.node)))")
                }
            }
        }
        if let f = top["filters"] {
            config.filters = filters(f)
        }
        return config
    }

    // MARK: Sections

    private mutating func listeners(_ f: Field) -> [ListenerConfig] {
        if f.node.isNull || f.node.listValue?.isEmpty == true {
            error(f.line, f.column, "listeners must list at least one listener")
            return []
        }
        guard let items = f.node.listValue else {
            error(f.line, f.column, "listeners must be a list, not \(f.node.kindDescription)")
            return []
        }
        var result: [ListenerConfig] = []
        var firstLineByName: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            guard item.mapEntries != nil else {
                error(at: item, "listener #\(index + 1) must be a map with name, address and upstream, not \(item.kindDescription)")
                continue
            }
            let fs = fields(of: item, known: ["name", "address", "upstream", "tls", "upstream_tls", "upstream_protocol"], context: "in listener")
            var label = "listener #\(index + 1)"
            var name: String?
            if let n = fs["name"] {
                if let s = n.node.stringValue, isValidName(s) {
                    name = s
                    label = "listener '\(s)'"
                    if let first = firstLineByName[s] {
                        error(n.line, n.column, "listener name '\(s)' is already used at line \(first)")
                    } else {
                        firstLineByName[s] = item.line
                    }
                } else {
                    error(n.line, n.column, "\(label): name must match [a-z0-9_-]+ (at most 63 characters), got \(show(n.node))")
                }
            }
            var address: SocketAddressSpec?
            var upstream: SocketAddressSpec?
            if let a = fs["address"] { address = self.address(a, what: "\(label): address") }
            if let u = fs["upstream"] { upstream = self.address(u, what: "\(label): upstream") }
            var tls: ListenerTLSConfig?
            if let t = fs["tls"] { tls = self.tls(t, label: label) }
            var upstreamTLS: UpstreamTLSConfig?
            if let t = fs["upstream_tls"] { upstreamTLS = self.upstreamTLS(t, label: label) }
            var upstreamProtocol = UpstreamProtocol.http1
            if let p = fs["upstream_protocol"] {
                if let s = p.node.stringValue, let v = UpstreamProtocol(rawValue: s) { upstreamProtocol = v }
                else { error(p.line, p.column, "\(label): upstream_protocol must be http1 or h2, got \(show(p.node))") }
            }
            for required in ["name", "address", "upstream"] where fs[required] == nil {
                error(item.line, item.column, "\(label): missing required key '\(required)'")
            }
            if let name, let address, let upstream {
                if upstream == address {
                    error(fs["upstream"]?.line ?? item.line, 0,
                          "\(label): upstream \(upstream) is the listener's own address (requests would loop)")
                }
                var listener = ListenerConfig(name: name, address: address, upstream: upstream, tls: tls,
                                              upstreamTLS: upstreamTLS, line: item.line)
                listener.upstreamProtocol = upstreamProtocol
                result.append(listener)
            }
        }
        // Addresses are checked after the whole list is read so each pair is reported once.
        for i in result.indices {
            for j in result.indices where j < i && Self.overlaps(result[i].address, result[j].address) {
                error(result[i].line, 0,
                      "listener '\(result[i].name)': address \(result[i].address) is already used by listener '\(result[j].name)' (line \(result[j].line))")
                break
            }
        }
        return result
    }

    /// A listener's `tls:` block; file paths relative to the config file's directory.
    private mutating func tls(_ f: Field, label: String) -> ListenerTLSConfig? {
        guard f.node.mapEntries != nil else {
            error(f.line, f.column, "\(label): tls must be a map with cert and key, not \(f.node.kindDescription)")
            return nil
        }
        let fs = fields(of: f.node, known: ["cert", "key", "client_ca", "client_cert", "min_version", "sni"], context: "in tls")
        func path(_ key: String) -> String? {
            guard let v = fs[key] else { return nil }
            guard let s = v.node.stringValue, !s.isEmpty else {
                error(v.line, v.column, "\(label): tls.\(key) must be a file path")
                return nil
            }
            return s.hasPrefix("/") ? s : configDirectory + s
        }
        let cert = path("cert"), key = path("key"), ca = path("client_ca")
        for required in ["cert", "key"] where fs[required] == nil {
            error(f.line, f.column, "\(label): tls: missing required key '\(required)'")
        }
        var policy: ListenerTLSConfig.ClientCert = ca == nil ? .none : .require
        if let p = fs["client_cert"] {
            if let s = p.node.stringValue, let v = ListenerTLSConfig.ClientCert(rawValue: s) { policy = v }
            else { error(p.line, p.column, "\(label): tls.client_cert must be require, optional or none, got \(show(p.node))") }
            if policy != .none && ca == nil { error(p.line, p.column, "\(label): tls.client_cert: \(policy.rawValue) needs client_ca (the CA bundle that verifies client certificates)") }
        }
        var minVersion = "1.2"
        if let m = fs["min_version"] {
            let text: String? = m.node.stringValue ?? m.node.doubleValue.map { String($0) }
            if let t = text, t == "1.2" || t == "1.3" { minVersion = t }
            else { error(m.line, m.column, "\(label): tls.min_version must be \"1.2\" or \"1.3\", got \(show(m.node))") }
        }
        var sni: [ListenerTLSConfig.SNICertificate] = []
        if let list = fs["sni"] {
            if let items = list.node.listValue {
                for item in items {
                    let e = fields(of: item, known: ["server_name", "cert", "key"], context: "in tls.sni entry")
                    func text(_ k: String) -> String? {
                        guard let v = e[k]?.node.stringValue, !v.isEmpty else {
                            error(item.line, item.column, "\(label): tls.sni entry needs \(k)")
                            return nil
                        }
                        return v
                    }
                    guard let name = text("server_name"), let c = text("cert"), let k = text("key") else { continue }
                    sni.append(.init(serverName: name.lowercased(), cert: c.hasPrefix("/") ? c : configDirectory + c,
                                     key: k.hasPrefix("/") ? k : configDirectory + k))
                }
            } else {
                error(list.line, list.column, "\(label): tls.sni must be a list of {server_name, cert, key}")
            }
        }
        guard let cert, let key else { return nil }
        var result = ListenerTLSConfig(cert: cert, key: key, clientCA: ca, clientCert: policy, minVersion: minVersion, line: f.line)
        result.sni = sni
        return result
    }

    /// A listener's `upstream_tls:` block.
    private mutating func upstreamTLS(_ f: Field, label: String) -> UpstreamTLSConfig? {
        guard f.node.mapEntries != nil else {
            error(f.line, f.column, "\(label): upstream_tls must be a map (ca, cert, key, server_name, verify), not \(f.node.kindDescription)")
            return nil
        }
        let fs = fields(of: f.node, known: ["ca", "cert", "key", "server_name", "verify"], context: "in upstream_tls")
        func path(_ key: String) -> String? {
            guard let v = fs[key] else { return nil }
            guard let s = v.node.stringValue, !s.isEmpty else {
                error(v.line, v.column, "\(label): upstream_tls.\(key) must be a file path")
                return nil
            }
            return s.hasPrefix("/") ? s : configDirectory + s
        }
        var verify = true
        if let v = fs["verify"] {
            if let b = v.node.boolValue { verify = b } else { error(v.line, v.column, "\(label): upstream_tls.verify must be true or false") }
        }
        var serverName: String?
        if let n = fs["server_name"] {
            if let s = n.node.stringValue, !s.isEmpty { serverName = s } else { error(n.line, n.column, "\(label): upstream_tls.server_name must be a host name") }
        }
        let ca = path("ca"), cert = path("cert"), key = path("key")
        if (cert == nil) != (key == nil) {
            error(f.line, f.column, "\(label): upstream_tls: cert and key go together (a client certificate needs its key)")
        }
        if verify && ca == nil {
            error(f.line, f.column, "\(label): upstream_tls: ca is required to verify the workload (or set verify: false)")
        }
        return UpstreamTLSConfig(ca: ca, cert: cert, key: key, serverName: serverName, verify: verify, line: f.line)
    }

    private mutating func timeouts(_ map: ConfigNode) -> Timeouts {
        var t = Timeouts()
        let fs = fields(of: map, known: ["header_read", "idle", "request", "upstream_connect",
                                         "upstream_response", "upstream_idle", "drain"], context: "in timeouts")
        func set(_ key: String, _ path: WritableKeyPath<Timeouts, UInt64>, allowZero: Bool = true) {
            guard let f = fs[key], let v = duration(f, name: "timeouts.\(key)") else { return }
            if v == 0 && !allowZero {
                error(f.line, f.column, "timeouts.\(key) must be greater than 0")
                return
            }
            t[keyPath: path] = v
        }
        set("header_read", \.headerRead)
        set("idle", \.idle)
        set("request", \.request)
        set("upstream_connect", \.upstreamConnect, allowZero: false)
        set("upstream_response", \.upstreamResponse)
        set("upstream_idle", \.upstreamIdle, allowZero: false)
        set("drain", \.drain)
        return t
    }

    private mutating func limits(_ map: ConfigNode) -> Limits {
        var l = Limits()
        let fs = fields(of: map, known: ["max_request_header_bytes", "max_request_headers", "max_uri_length",
                                         "max_connections", "upstream_max_idle"], context: "in limits")
        func set(_ key: String, _ path: WritableKeyPath<Limits, Int>, _ range: ClosedRange<Int>) {
            guard let f = fs[key], let v = int(f, in: range, name: "limits.\(key)") else { return }
            l[keyPath: path] = v
        }
        set("max_request_header_bytes", \.maxRequestHeaderBytes, 1024...1_048_576)
        set("max_request_headers", \.maxRequestHeaders, 1...10_000)
        set("max_uri_length", \.maxURILength, 64...1_048_576)
        set("max_connections", \.maxConnections, 1...1_000_000)
        set("upstream_max_idle", \.upstreamMaxIdle, 0...100_000)
        return l
    }

    private mutating func filters(_ f: Field) -> [FilterEntry] {
        if f.node.isNull { return [] }
        guard let items = f.node.listValue else {
            error(f.line, f.column, "filters must be a list, not \(f.node.kindDescription)")
            return []
        }
        var result: [FilterEntry] = []
        for (index, item) in items.enumerated() {
            guard item.mapEntries != nil else {
                error(at: item, "filter #\(index + 1) must be a map with at least 'name', not \(item.kindDescription)")
                continue
            }
            // Keys other than name and mode belong to the filter, which validates them itself.
            var label = "filter #\(index + 1)"
            var name: String?
            if let n = item["name"] {
                if let s = n.stringValue, isValidName(s) {
                    name = s
                    label = "filter '\(s)'"
                } else {
                    error(item.line(ofKey: "name"), 0, "\(label): name must match [a-z0-9_-]+ (at most 63 characters), got \(show(n))")
                }
            } else {
                error(at: item, "\(label): missing required key 'name'")
            }
            var mode = FilterMode.enforce
            if let m = item["mode"] {
                if let s = m.stringValue, let parsed = FilterMode(rawValue: s) {
                    mode = parsed
                } else {
                    error(item.line(ofKey: "mode"), 0, "\(label): unknown filter mode \(show(m)) (use enforce, shadow or off)")
                }
            }
            if let name {
                result.append(FilterEntry(name: name, mode: mode, settings: item, file: file, line: item.line))
            }
        }
        return result
    }

    // MARK: Values

    private mutating func map(_ f: Field, name: String) -> ConfigNode? {
        if f.node.isNull { return nil }  // `timeouts:` with nothing under it keeps the defaults.
        guard f.node.mapEntries != nil else {
            error(f.line, f.column, "\(name) must be a map, not \(f.node.kindDescription)")
            return nil
        }
        return f.node
    }

    private mutating func int(_ f: Field, in range: ClosedRange<Int>, name: String) -> Int? {
        if let v = f.node.intValue, range.contains(v) { return v }
        error(f.line, f.column, "\(name) must be an integer between \(range.lowerBound) and \(range.upperBound) (got \(show(f.node)))")
        return nil
    }

    private mutating func duration(_ f: Field, name: String) -> UInt64? {
        let parsed: UInt64?
        switch f.node.value {
        case let .int(i): parsed = i >= 0 ? ConfigDuration.fromSeconds(Double(i)) : nil
        case let .double(d): parsed = ConfigDuration.fromSeconds(d)
        case let .string(s): parsed = ConfigDuration.parse(s)
        default: parsed = nil
        }
        if let parsed { return parsed }
        error(f.line, f.column, "\(name): \(show(f.node)) is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)")
        return nil
    }

    private mutating func address(_ f: Field, what: String) -> SocketAddressSpec? {
        guard let text = f.node.stringValue else {
            error(f.line, f.column, "\(what) must be a host:port string, not \(f.node.kindDescription)")
            return nil
        }
        guard let spec = Self.parseAddress(text) else {
            error(f.line, f.column, "\(what) '\(text)' is not host:port (an IP address or localhost, and a port 1-65535)")
            return nil
        }
        return spec
    }

    /// host:port where host is an IP literal, "localhost" or empty (all interfaces): nothing in
    /// the proxy resolves names, so a hostname would only fail later at bind or connect.
    static func parseAddress(_ text: String) -> SocketAddressSpec? {
        let trimmed = text.trimmingASCIIWhitespace()
        guard trimmed == text, let spec = SocketAddressSpec(parsing: text) else { return nil }
        // Reject "1.2.3.4:+80" and friends that UInt16(_:) accepts.
        guard let colon = text.lastIndex(of: ":"),
              text[text.index(after: colon)...].utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        // An IPv6 host must be bracketed, or "::1:80" would be ambiguous.
        if spec.isIPv6 && !text.hasPrefix("[") { return nil }
        return isIPLiteral(spec.host) ? spec : nil
    }

    static func isIPLiteral(_ host: String) -> Bool {
        var buf = [UInt8](repeating: 0, count: 16)
        let family = host.contains(":") ? AF_INET6 : AF_INET
        return buf.withUnsafeMutableBytes { raw in
            inet_pton(family, host, raw.baseAddress) == 1
        }
    }

    static func isWildcard(_ a: SocketAddressSpec) -> Bool {
        a.host == "0.0.0.0" || a.host == "::"
    }

    /// Whether two listening addresses would collide: same port and same host, or either
    /// binds all interfaces.
    static func overlaps(_ a: SocketAddressSpec, _ b: SocketAddressSpec) -> Bool {
        a.port == b.port && (a.host == b.host || isWildcard(a) || isWildcard(b))
    }

    private func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 63 && s.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
        }
    }

    /// A value as it appears in a message: quoted text, or the kind for non-scalars.
    func show(_ node: ConfigNode) -> String {
        switch node.value {
        case .null: return "nothing"
        case let .bool(b): return "\(b)"
        case let .int(i): return "\(i)"
        case let .double(d): return "\(d)"
        case let .string(s):
            let short = s.count > 60 ? String(s.prefix(60)) + "…" : s
            return "'\(short)'"
        case .list, .map: return node.kindDescription
        }
    }
}

/// "did you mean …?" for misspelt keys.
enum Suggest {
    static func closest(to word: String, among candidates: [String]) -> String? {
        var best: String?
        var bestDistance = Int.max
        for c in candidates {
            let d = distance(word, c)
            // Allow about one edit per three characters, at least one.
            if d <= max(1, c.count / 3), d < bestDistance {
                best = c
                bestDistance = d
            }
        }
        return best
    }

    /// Edit distance over Unicode scalars counting an adjacent transposition as one edit
    /// (optimal string alignment), so "idel" is one edit from "idle".
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        let width = y.count + 1
        var d = [Int](repeating: 0, count: (x.count + 1) * width)
        for i in 0...x.count { d[i * width] = i }
        for j in 0...y.count { d[j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                var v = Swift.min(d[(i - 1) * width + j] + 1, d[i * width + j - 1] + 1, d[(i - 1) * width + j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    v = Swift.min(v, d[(i - 2) * width + j - 2] + 1)
                }
                d[i * width + j] = v
            }
        }
        return d[x.count * width + y.count]
    }
}
