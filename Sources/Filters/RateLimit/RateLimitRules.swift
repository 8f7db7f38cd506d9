import Config
import OutriderCore

/// `unit:` of a `rate_limit` (envoyproxy/ratelimit's units).
enum RateLimitUnit: String, Sendable, CaseIterable {
    case second, minute, hour, day
    var seconds: UInt64 {
        switch self {
        case .second: return 1
        case .minute: return 60
        case .hour: return 3600
        case .day: return 86_400
        }
    }
}

/// Where a limit is counted: in this process's buckets, or in Redis, shared by every replica.
enum LimitScope: String, Sendable {
    case local, global
}

/// Where a descriptor entry's value comes from in the request.
enum DescriptorSource: Sendable, Equatable {
    /// The client address (or the first X-Forwarded-For hop with `use_forwarded_for`).
    case remoteAddress
    case method
    /// The exact path, without the query.
    case path
    /// Matches when the path starts with the node's `value`; the bucket is per prefix.
    case pathPrefix
    /// A request header's value (name lowercased); no header, no match.
    case header(String)
    /// The mTLS peer identity (SPIFFE id); no identity, no match.
    case peerIdentity
    /// Always present: every node of the key matches (Envoy's `generic_key`).
    case constant

    /// Descriptor keys that need no `sources:` entry.
    static let builtIn: [String: DescriptorSource] = [
        "remote_address": .remoteAddress, "method": .method, "path": .path, "path_prefix": .pathPrefix,
        "peer_identity": .peerIdentity, "generic_key": .constant,
    ]
}

/// One limit of the rule tree: the `rate_limit` of a descriptor node and where it sits.
final class RuleLimit: Sendable {
    /// Position in the factory's flat list of limits (for its counters).
    let index: Int
    let domain: String
    /// Stats name, envoyproxy/ratelimit style: `key_value` or `key` per level, joined by dots.
    let descriptorLabel: String
    /// The nodes from the root: key and, when the node has one, its value.
    let path: [(key: String, value: String?)]
    let name: String?
    let replaces: [String]
    let unlimited: Bool
    let requestsPerUnit: UInt64
    let unit: RateLimitUnit
    let burst: UInt64
    let bucket: BucketLimit?
    let scope: LimitScope
    let shadow: Bool
    /// Hash of everything that defines the bucket, so a changed rule starts a fresh bucket.
    let fingerprint: Int
    let file: String
    let line: Int

    init(index: Int, domain: String, path: [(key: String, value: String?)], name: String?, replaces: [String],
         unlimited: Bool, requestsPerUnit: UInt64, unit: RateLimitUnit, burst: UInt64, bucket: BucketLimit?,
         scope: LimitScope, shadow: Bool, file: String, line: Int) {
        self.index = index; self.domain = domain; self.path = path; self.name = name; self.replaces = replaces
        self.unlimited = unlimited; self.requestsPerUnit = requestsPerUnit; self.unit = unit; self.burst = burst
        self.bucket = bucket; self.scope = scope; self.shadow = shadow; self.file = file; self.line = line
        descriptorLabel = path.map { p in p.value.map { v in "\(p.key)_\(v)" } ?? p.key }.joined(separator: ".")
        var h = Hasher()
        h.combine(domain)
        for p in path { h.combine(p.key); h.combine(p.value ?? "\u{0}*") }
        h.combine(requestsPerUnit); h.combine(unit.seconds); h.combine(burst); h.combine(scope.rawValue)
        fingerprint = h.finalize()
        let window = unit.seconds
        limitHeader = "\(requestsPerUnit), \(requestsPerUnit);w=\(window)"
        quotedPolicyName = RateLimitFilter.sfString(name ?? descriptorLabel)
        policyHeader = "\(quotedPolicyName);q=\(requestsPerUnit);w=\(window)"
    }

    /// The policy name for `RateLimit-Policy` / `RateLimit` (IETF draft).
    var policyName: String { name ?? descriptorLabel }
    /// Header values that do not change per request, formatted once.
    let limitHeader: String
    let policyHeader: String
    let quotedPolicyName: String
}

final class DescriptorNode: Sendable {
    let key: String
    let value: String?
    let limit: RuleLimit?
    let children: DescriptorLevel
    init(key: String, value: String?, limit: RuleLimit?, children: DescriptorLevel) {
        self.key = key; self.value = value; self.limit = limit; self.children = children
    }
}

/// The nodes of one level, grouped by key in file order.
struct DescriptorLevel: Sendable {
    struct Group: Sendable {
        var key: String
        var source: DescriptorSource
        var exact: [String: DescriptorNode] = [:]
        /// path_prefix nodes, longest prefix first.
        var prefixes: [(String, DescriptorNode)] = []
        var wildcard: DescriptorNode?
        /// File order, for `generic_key` where every node applies.
        var all: [DescriptorNode] = []
    }
    var groups: [Group] = []
    static let empty = DescriptorLevel()
}

/// One rule file: a domain and its descriptor tree.
struct RuleSet: Sendable {
    var domain: String
    var file: String
    var root: DescriptorLevel
    var limits: [RuleLimit]
}

/// What a request offers to the descriptors; values are computed once per key kind.
struct RequestFacts {
    var remoteAddress: String
    var method: String
    var path: Substring
    var headers: HTTPHeaders
    var peerIdentity: String?

    func value(_ source: DescriptorSource) -> String? {
        switch source {
        case .remoteAddress: return remoteAddress
        case .method: return method
        case .path, .pathPrefix: return String(path)
        case .header(let name): return headers.first(name)
        case .peerIdentity: return peerIdentity
        case .constant: return ""
        }
    }

    /// The client address: the socket peer, or the first X-Forwarded-For hop when trusted.
    static func clientAddress(peer: String, headers: HTTPHeaders, useForwardedFor: Bool) -> String {
        guard useForwardedFor, let xff = headers.first("x-forwarded-for") else { return peer }
        let first = xff.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let trimmed = first.trimmingCharacters(in: " \t")
        return trimmed.isEmpty ? peer : trimmed
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

/// A limit that applies to one request, with the request's values for its wildcard nodes.
struct MatchedLimit {
    var limit: RuleLimit
    /// One value per node of `limit.path` (constant values included), in order.
    var values: [String]
}

enum DescriptorMatcher {
    /// Every limit of `sets` that applies to the request (Envoy's descriptors, each matched
    /// against the tree as envoyproxy/ratelimit does: an exact `value` wins over a prefix, a
    /// prefix over a node without value), then `replaces` applied.
    static func match(_ sets: [RuleSet], _ facts: RequestFacts, into out: inout [MatchedLimit]) {
        var values: [String] = []
        for s in sets { walk(s.root, facts, &values, &out) }
        guard out.count > 1 else { return }
        var replaced: Set<String> = []
        for m in out { for r in m.limit.replaces { replaced.insert(r) } }
        if !replaced.isEmpty {
            out.removeAll { m in m.limit.name.map { replaced.contains($0) } ?? false }
        }
    }

    private static func walk(_ level: DescriptorLevel, _ facts: RequestFacts, _ values: inout [String], _ out: inout [MatchedLimit]) {
        for g in level.groups {
            guard let v = facts.value(g.source) else { continue }
            if g.source == .constant {
                for n in g.all { visit(n, n.value ?? "", facts, &values, &out) }
                continue
            }
            if let n = g.exact[v] {
                visit(n, v, facts, &values, &out)
            } else if let (p, n) = g.prefixes.first(where: { v.hasPrefix($0.0) }) {
                visit(n, p, facts, &values, &out)
            } else if let n = g.wildcard {
                visit(n, v, facts, &values, &out)
            }
        }
    }

    private static func visit(_ n: DescriptorNode, _ v: String, _ facts: RequestFacts, _ values: inout [String], _ out: inout [MatchedLimit]) {
        values.append(v)
        if let l = n.limit { out.append(MatchedLimit(limit: l, values: values)) }
        if !n.children.groups.isEmpty { walk(n.children, facts, &values, &out) }
        values.removeLast()
    }
}

/// Parses rule files: envoyproxy/ratelimit's `domain` + `descriptors` YAML, plus Outrider's
/// `scope`, `sources` and `burst`. Every error carries the file and line.
struct RuleFileParser {
    let file: String
    let defaultScope: LimitScope
    var nextIndex: Int
    var errors: [ConfigDiagnostic] = []
    var limits: [RuleLimit] = []
    var sources: [String: DescriptorSource] = DescriptorSource.builtIn
    var domain = ""
    var fileScope: LimitScope

    static let topKeys: Set<String> = ["domain", "descriptors", "scope", "sources"]
    static let nodeKeys: Set<String> = ["key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "value_to_metric"]
    static let limitKeys: Set<String> = ["unit", "requests_per_unit", "unlimited", "name", "replaces", "burst", "scope"]
    /// Bounds that keep the tree and the arithmetic small.
    static let maxDepth = 8
    static let maxRequestsPerUnit: UInt64 = 1_000_000_000

    init(file: String, defaultScope: LimitScope, firstIndex: Int) {
        self.file = file
        self.defaultScope = defaultScope
        self.fileScope = defaultScope
        self.nextIndex = firstIndex
    }

    mutating func error(_ n: ConfigNode?, _ message: String) {
        errors.append(ConfigDiagnostic(file: file, line: n?.line ?? 0, column: n?.column ?? 0, message: message))
    }

    mutating func error(_ n: ConfigNode?, _ line: Int, _ message: String) {
        errors.append(ConfigDiagnostic(file: file, line: line, column: n?.column ?? 0, message: message))
    }

    /// Reads and parses `path`; diagnostics on failure.
    static func load(path: String, defaultScope: LimitScope, firstIndex: Int) -> Result<RuleSet, ConfigErrors> {
        switch RuleFileReader.read(path: path) {
        case .failure(let d): return .failure(ConfigErrors([d]))
        case .success(let root):
            var p = RuleFileParser(file: path, defaultScope: defaultScope, firstIndex: firstIndex)
            return p.parse(root)
        }
    }

    static func parse(text: String, file: String, defaultScope: LimitScope = .local, firstIndex: Int = 0) -> Result<RuleSet, ConfigErrors> {
        switch RuleFileReader.parse(text: text, file: file) {
        case .failure(let d): return .failure(ConfigErrors([d]))
        case .success(let root):
            var p = RuleFileParser(file: file, defaultScope: defaultScope, firstIndex: firstIndex)
            return p.parse(root)
        }
    }

    mutating func parse(_ root: ConfigNode?) -> Result<RuleSet, ConfigErrors> {
        guard let root, let entries = root.mapEntries else {
            error(root, 1, "a rule file is a map with `domain:` and `descriptors:`")
            return .failure(ConfigErrors(errors))
        }
        for (k, v) in entries where !Self.topKeys.contains(k) {
            error(v, "unknown key '\(k)' (known: \(Self.topKeys.sorted().joined(separator: ", ")))")
        }
        if let d = root["domain"] {
            if let s = scalarString(d), !s.isEmpty { domain = s } else { error(d, "domain must be a non-empty string") }
        } else {
            error(root, root.line, "missing `domain:`")
        }
        if let s = root["scope"] {
            if let v = s.stringValue, let sc = LimitScope(rawValue: v) { fileScope = sc } else { error(s, "scope must be local or global") }
        }
        if let s = root["sources"] { parseSources(s) }
        var level = DescriptorLevel.empty
        if let d = root["descriptors"] {
            level = parseLevel(d, path: [], depth: 1)
        } else {
            error(root, root.line, "missing `descriptors:`")
        }
        if !errors.isEmpty { return .failure(ConfigErrors(errors)) }
        return .success(RuleSet(domain: domain, file: file, root: level, limits: limits))
    }

    private mutating func parseSources(_ node: ConfigNode) {
        guard let entries = node.mapEntries else { error(node, "sources must be a map of descriptor key → source"); return }
        for (key, v) in entries {
            if let s = v.stringValue {
                if let b = DescriptorSource.builtIn[s] { sources[key] = b; continue }
                error(v, "source '\(s)' for '\(key)' is not one of \(DescriptorSource.builtIn.keys.sorted().joined(separator: ", ")) (or {header: name})")
            } else if let h = v["header"] {
                guard let name = h.stringValue, !name.isEmpty, name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
                    error(h, "header must be a header name"); continue
                }
                if v.keys.count != 1 { error(v, "a header source has only `header:`") }
                sources[key] = .header(name.asciiLowercased)
            } else {
                error(v, "source for '\(key)' must be a built-in name or {header: name}")
            }
        }
    }

    private mutating func parseLevel(_ node: ConfigNode, path: [(key: String, value: String?)], depth: Int) -> DescriptorLevel {
        guard let items = node.listValue else { error(node, "descriptors must be a list"); return .empty }
        if depth > Self.maxDepth { error(node, "descriptors nest deeper than \(Self.maxDepth) levels"); return .empty }
        var level = DescriptorLevel()
        var seen: [String: Int] = [:]
        for item in items {
            guard let entries = item.mapEntries else { error(item, "a descriptor is a map with `key:`"); continue }
            for (k, v) in entries where !Self.nodeKeys.contains(k) {
                error(v, "unknown key '\(k)' in descriptor (known: \(Self.nodeKeys.sorted().joined(separator: ", ")))")
            }
            guard let keyNode = item["key"], let key = keyNode.stringValue, !key.isEmpty else {
                error(item["key"] ?? item, "descriptor needs a `key:` string"); continue
            }
            guard let source = sources[key] else {
                error(keyNode, "descriptor key '\(key)' has no source: use a built-in key (\(DescriptorSource.builtIn.keys.sorted().joined(separator: ", "))) or add `sources: {\(key): {header: <name>}}`")
                continue
            }
            var value: String?
            if let vn = item["value"] {
                if let s = scalarString(vn) { value = s } else { error(vn, "value must be a string") }
            }
            if source == .pathPrefix, value == nil || value == "" {
                error(keyNode, "path_prefix needs a non-empty `value:` (the prefix)")
                continue
            }
            let dupKey = key + "\u{0}" + (value ?? "\u{1}*")
            if let prev = seen[dupKey] {
                error(keyNode, "duplicate descriptor key '\(key)'\(value.map { " value '\($0)'" } ?? "") at this level (first at line \(prev))")
                continue
            }
            seen[dupKey] = keyNode.line
            let nodePath = path + [(key: key, value: value)]
            var shadow = false
            if let s = item["shadow_mode"] {
                if let b = s.boolValue { shadow = b } else { error(s, "shadow_mode must be true or false") }
            }
            for flag in ["detailed_metric", "value_to_metric"] {
                if let f = item[flag], f.boolValue == nil { error(f, "\(flag) must be true or false") }
            }
            var limit: RuleLimit?
            if let rl = item["rate_limit"] { limit = parseLimit(rl, path: nodePath, shadow: shadow) }
            var children = DescriptorLevel.empty
            if let d = item["descriptors"] { children = parseLevel(d, path: nodePath, depth: depth + 1) }
            if item["rate_limit"] == nil && item["descriptors"] == nil {
                error(keyNode, "descriptor '\(key)' has neither `rate_limit:` nor `descriptors:`")
            }
            let n = DescriptorNode(key: key, value: value, limit: limit, children: children)
            var gi = level.groups.firstIndex { $0.key == key } ?? -1
            if gi < 0 { level.groups.append(.init(key: key, source: source)); gi = level.groups.count - 1 }
            level.groups[gi].all.append(n)
            if let value {
                if source == .pathPrefix { level.groups[gi].prefixes.append((value, n)) } else { level.groups[gi].exact[value] = n }
            } else {
                level.groups[gi].wildcard = n
            }
        }
        for i in level.groups.indices { level.groups[i].prefixes.sort { $0.0.utf8.count > $1.0.utf8.count } }
        return level
    }

    private mutating func parseLimit(_ node: ConfigNode, path: [(key: String, value: String?)], shadow: Bool) -> RuleLimit? {
        guard let entries = node.mapEntries else { error(node, "rate_limit must be a map"); return nil }
        var bad = false
        for (k, v) in entries where !Self.limitKeys.contains(k) {
            error(v, "unknown key '\(k)' in rate_limit (known: \(Self.limitKeys.sorted().joined(separator: ", ")))"); bad = true
        }
        var unlimited = false
        if let u = node["unlimited"] {
            if let b = u.boolValue { unlimited = b } else { error(u, "unlimited must be true or false"); bad = true }
        }
        var name: String?
        if let n = node["name"] {
            if let s = scalarString(n), !s.isEmpty { name = s } else { error(n, "name must be a non-empty string"); bad = true }
        }
        var replaces: [String] = []
        if let r = node["replaces"] {
            if let items = r.listValue {
                for it in items {
                    if let s = it["name"].flatMap(scalarString) ?? scalarString(it) { replaces.append(s) } else { error(it, "replaces entries are {name: <rate_limit name>}"); bad = true }
                }
            } else { error(r, "replaces must be a list of {name: …}"); bad = true }
        }
        var scope = fileScope
        if let s = node["scope"] {
            if let v = s.stringValue, let sc = LimitScope(rawValue: v) { scope = sc } else { error(s, "scope must be local or global"); bad = true }
        }
        var unit = RateLimitUnit.second
        var rpu: UInt64 = 0
        var burst: UInt64 = 0
        if !unlimited {
            if let u = node["unit"] {
                if let s = u.stringValue, let v = RateLimitUnit(rawValue: s.lowercased()) { unit = v }
                else { error(u, "unit must be one of second, minute, hour, day"); bad = true }
            } else { error(node, node.line, "rate_limit needs `unit:` (second, minute, hour, day)"); bad = true }
            if let r = node["requests_per_unit"] {
                if let i = r.intValue, i > 0, UInt64(i) <= Self.maxRequestsPerUnit { rpu = UInt64(i) }
                else { error(r, "requests_per_unit must be an integer in 1...\(Self.maxRequestsPerUnit)"); bad = true }
            } else { error(node, node.line, "rate_limit needs `requests_per_unit:`"); bad = true }
            burst = rpu
            if let b = node["burst"] {
                if let i = b.intValue, i > 0, UInt64(i) <= Self.maxRequestsPerUnit { burst = UInt64(i) }
                else { error(b, "burst must be an integer in 1...\(Self.maxRequestsPerUnit)"); bad = true }
                if scope == .global { error(b, "burst applies to local limits only (global limits are fixed windows of requests_per_unit)"); bad = true }
            }
        }
        if bad { return nil }
        var bucket: BucketLimit?
        if !unlimited {
            bucket = BucketLimit(requestsPerUnit: rpu, unitNanos: unit.seconds * 1_000_000_000, burst: burst)
            if bucket == nil {
                error(node, node.line, "burst × (unit / requests_per_unit) must stay within 25 days")
                return nil
            }
        }
        let l = RuleLimit(index: nextIndex, domain: domain, path: path, name: name, replaces: replaces, unlimited: unlimited,
                          requestsPerUnit: rpu, unit: unit, burst: burst, bucket: bucket, scope: scope, shadow: shadow,
                          file: file, line: node.line)
        nextIndex += 1
        limits.append(l)
        return l
    }

    /// Strings, and numbers written without quotes (`value: 200`), as their text.
    private func scalarString(_ n: ConfigNode) -> String? {
        switch n.value {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .double(let d): return String(d)
        default: return nil
        }
    }
}
