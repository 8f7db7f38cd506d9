import Config
import OutriderCore

/// Reads a policy file (format: filters/mtls/README.md) into an `MTLSPolicy`, collecting every
/// problem as `file:line: message`. Never traps: the file is input.
struct MTLSPolicyParser {
    static let topKeys: Set<String> = ["rules"]
    static let ruleKeys: Set<String> = ["name", "action", "from", "to"]
    static let sourceKeys: Set<String> = ["principals", "notPrincipals"]
    static let operationKeys: Set<String> = ["methods", "notMethods", "paths", "notPaths"]
    static let maxRules = 10_000
    static let maxIdentityBytes = 2048
    /// Reserved for the decisions that no rule made (metrics label `rule`).
    static let reservedNames: Set<String> = ["default"]

    let file: String
    var errors: [ConfigDiagnostic] = []
    var rules: [MTLSRule] = []

    init(file: String) { self.file = file }

    mutating func error(_ n: ConfigNode?, _ message: String) {
        errors.append(ConfigDiagnostic(file: file, line: max(1, n?.line ?? 1), column: n?.column ?? 0, message: message))
    }

    static func load(path: String) -> Result<MTLSPolicy, ConfigErrors> {
        switch RuleFileReader.read(path: path) {
        case .failure(let d): return .failure(ConfigErrors([d]))
        case .success(let root):
            var p = MTLSPolicyParser(file: path)
            return p.parse(root)
        }
    }

    static func parse(text: String, file: String) -> Result<MTLSPolicy, ConfigErrors> {
        switch RuleFileReader.parse(text: text, file: file) {
        case .failure(let d): return .failure(ConfigErrors([d]))
        case .success(let root):
            var p = MTLSPolicyParser(file: file)
            return p.parse(root)
        }
    }

    /// An empty file, or `rules:` empty or absent, is the allow-all policy.
    mutating func parse(_ root: ConfigNode?) -> Result<MTLSPolicy, ConfigErrors> {
        if let root, !root.isNull {
            if let entries = root.mapEntries {
                for (k, v) in entries where !Self.topKeys.contains(k) {
                    error(v, "unknown key '\(k)' (a policy file has only `rules:`)")
                }
                if let r = root["rules"], !r.isNull {
                    if let items = r.listValue {
                        if items.count > Self.maxRules { error(r, "more than \(Self.maxRules) rules") } else { parseRules(items) }
                    } else {
                        error(r, "rules must be a list of {name, action, from, to}")
                    }
                }
            } else {
                error(root, "a policy file is a map with `rules:` (a list)")
            }
        }
        if !errors.isEmpty { return .failure(ConfigErrors(errors)) }
        return .success(MTLSPolicy(file: file, rules: rules))
    }

    private mutating func parseRules(_ items: [ConfigNode]) {
        var names: [String: Int] = [:]
        for item in items {
            guard let entries = item.mapEntries else { error(item, "a rule is a map with `name:` and `action:`"); continue }
            var bad = false
            for (k, v) in entries where !Self.ruleKeys.contains(k) {
                error(v, "unknown key '\(k)' in rule (known: \(Self.ruleKeys.sorted().joined(separator: ", ")))"); bad = true
            }
            var name = ""
            if let n = item["name"] {
                if let s = n.stringValue, Self.validName(s) {
                    if Self.reservedNames.contains(s) {
                        error(n, "rule name '\(s)' is reserved (it labels decisions no rule made)"); bad = true
                    } else if let first = names[s] {
                        error(n, "duplicate rule name '\(s)' (first at line \(first))"); bad = true
                    } else {
                        names[s] = n.line; name = s
                    }
                } else {
                    error(n, "name must be 1 to 64 characters of letters, digits, '-', '_' or '.'"); bad = true
                }
            } else {
                error(item, "rule needs a `name:` (it names the rule in metrics and in 403 replies)"); bad = true
            }
            var action = MTLSAction.allow
            if let a = item["action"] {
                if let s = a.stringValue, let v = MTLSAction(rawValue: s.uppercased()) { action = v }
                else { error(a, "action must be ALLOW or DENY"); bad = true }
            } else {
                error(item, "rule needs an `action:` (ALLOW or DENY)"); bad = true
            }
            var from: [MTLSSource]?
            if let f = item["from"] {
                from = parseClauses(f, wrapper: "source", what: "from") { (p: inout Self, n: ConfigNode) in p.parseSource(n) }
                if from == nil { bad = true }
            }
            var to: [MTLSOperation]?
            if let t = item["to"] {
                to = parseClauses(t, wrapper: "operation", what: "to") { (p: inout Self, n: ConfigNode) in p.parseOperation(n) }
                if to == nil { bad = true }
            }
            if !bad {
                rules.append(MTLSRule(index: rules.count, name: name, action: action, from: from, to: to, file: file, line: item.line))
            }
        }
    }

    /// `from: {principals: …}` (one clause), or Istio's `from: [{source: {principals: …}}, …]`.
    private mutating func parseClauses<T>(_ node: ConfigNode, wrapper: String, what: String,
                                          _ one: (inout Self, ConfigNode) -> T?) -> [T]? {
        if node.mapEntries != nil {
            return one(&self, node).map { [$0] }
        }
        guard let items = node.listValue, !items.isEmpty else {
            error(node, "\(what) must be a map, or a non-empty list of {\(wrapper): {…}}")
            return nil
        }
        var out: [T] = []
        var ok = true
        for item in items {
            guard let entries = item.mapEntries, entries.count == 1, entries[0].key == wrapper else {
                error(item, "each entry of a `\(what):` list is {\(wrapper): {…}}"); ok = false; continue
            }
            if let c = one(&self, entries[0].value) { out.append(c) } else { ok = false }
        }
        return ok ? out : nil
    }

    private mutating func parseSource(_ node: ConfigNode) -> MTLSSource? {
        guard let entries = node.mapEntries else { error(node, "a source is a map with `principals:` and/or `notPrincipals:`"); return nil }
        var ok = true
        for (k, v) in entries where !Self.sourceKeys.contains(k) {
            error(v, "unknown key '\(k)' in from (known: \(Self.sourceKeys.sorted().joined(separator: ", ")))"); ok = false
        }
        var s = MTLSSource()
        if let p = node["principals"] { s.principals = principalList(p, "principals"); if s.principals == nil { ok = false } }
        if let p = node["notPrincipals"] { s.notPrincipals = principalList(p, "notPrincipals"); if s.notPrincipals == nil { ok = false } }
        if ok && s.principals == nil && s.notPrincipals == nil { error(node, "from needs `principals:` or `notPrincipals:`"); ok = false }
        return ok ? s : nil
    }

    private mutating func parseOperation(_ node: ConfigNode) -> MTLSOperation? {
        guard let entries = node.mapEntries else { error(node, "an operation is a map with `methods:` and/or `paths:`"); return nil }
        var ok = true
        for (k, v) in entries where !Self.operationKeys.contains(k) {
            error(v, "unknown key '\(k)' in to (known: \(Self.operationKeys.sorted().joined(separator: ", ")))"); ok = false
        }
        var o = MTLSOperation()
        if let m = node["methods"] { o.methods = methodList(m, "methods"); if o.methods == nil { ok = false } }
        if let m = node["notMethods"] { o.notMethods = methodList(m, "notMethods"); if o.notMethods == nil { ok = false } }
        if let p = node["paths"] { o.paths = pathList(p, "paths"); if o.paths == nil { ok = false } }
        if let p = node["notPaths"] { o.notPaths = pathList(p, "notPaths"); if o.notPaths == nil { ok = false } }
        if ok && o.methods == nil && o.notMethods == nil && o.paths == nil && o.notPaths == nil {
            error(node, "to needs `methods:`, `paths:`, `notMethods:` or `notPaths:`"); ok = false
        }
        return ok ? o : nil
    }

    /// A non-empty list of strings (an empty list would match nothing or everything, depending
    /// on who reads it: refused).
    private mutating func strings(_ node: ConfigNode, _ key: String) -> [(String, ConfigNode)]? {
        guard let items = node.listValue else { error(node, "\(key) must be a list of strings"); return nil }
        if items.isEmpty { error(node, "\(key) is an empty list: remove the key or add values"); return nil }
        var out: [(String, ConfigNode)] = []
        var ok = true
        for i in items {
            if let s = i.stringValue { out.append((s, i)) } else { error(i, "\(key) entries must be strings"); ok = false }
        }
        return ok ? out : nil
    }

    private mutating func principalList(_ node: ConfigNode, _ key: String) -> [PrincipalPattern]? {
        guard let items = strings(node, key) else { return nil }
        var out: [PrincipalPattern] = []
        var ok = true
        for (s, n) in items {
            switch Self.principal(s) {
            case .success(let p): out.append(p)
            case .failure(let m): error(n, "\(key): \(m.message)"); ok = false
            }
        }
        return ok ? out : nil
    }

    private mutating func methodList(_ node: ConfigNode, _ key: String) -> [String]? {
        guard let items = strings(node, key) else { return nil }
        var out: [String] = []
        var ok = true
        for (s, n) in items {
            if s.isEmpty || s.utf8.count > 32 || !s.utf8.allSatisfy(Self.isTokenChar) {
                error(n, "\(key): '\(s)' is not an HTTP method"); ok = false
            } else if s.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) {
                error(n, "\(key): methods are case-sensitive; write '\(s.uppercased())'"); ok = false
            } else {
                out.append(s)
            }
        }
        return ok ? out : nil
    }

    private mutating func pathList(_ node: ConfigNode, _ key: String) -> [PathPattern]? {
        guard let items = strings(node, key) else { return nil }
        var out: [PathPattern] = []
        var ok = true
        for (s, n) in items {
            switch Self.path(s) {
            case .success(let p): out.append(p)
            case .failure(let m): error(n, "\(key): \(m.message)"); ok = false
            }
        }
        return ok ? out : nil
    }

    // MARK: values

    static func validName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
        }
    }

    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }

    /// `spiffe://<trust-domain>/<path>` (SPIFFE ID spec): trust domain of `a-z 0-9 . - _`,
    /// path segments of `A-Z a-z 0-9 . - _`, none empty, `.` or `..`; or a prefix of one ending
    /// in `*` whose trust domain is complete (`spiffe://cluster.local/ns/default/*`); or `*`
    /// (any verified identity); or `unauthenticated` (none).
    static func principal(_ s: String) -> Result<PrincipalPattern, MTLSPolicyError> {
        if s.isEmpty { return .failure(MTLSPolicyError("empty principal")) }
        if s == "*" { return .success(.anyAuthenticated) }
        if s == "unauthenticated" { return .success(.unauthenticated) }
        if s.utf8.count > maxIdentityBytes { return .failure(MTLSPolicyError("principal longer than \(maxIdentityBytes) bytes")) }
        let scheme = "spiffe://"
        guard s.hasPrefix(scheme) else {
            let hint = s.contains("/") && !s.contains(":") ? " (did you mean 'spiffe://\(s)'?)" : ""
            return .failure(MTLSPolicyError("'\(s)' is not a SPIFFE ID: expected spiffe://trust-domain/path, '*' or 'unauthenticated'\(hint)"))
        }
        var body = Substring(s.dropFirst(scheme.count))
        var isPrefix = false
        if body.hasSuffix("*") { isPrefix = true; body = body.dropLast() }
        if body.contains("*") {
            return .failure(MTLSPolicyError("'\(s)': '*' is allowed only at the end (suffix match) or alone"))
        }
        guard let slash = body.firstIndex(of: "/") else {
            return .failure(MTLSPolicyError(isPrefix
                ? "'\(s)': the trust domain must be complete before '*' (write spiffe://\(body)/*), or the pattern would also match other trust domains"
                : "'\(s)' has no path: expected spiffe://trust-domain/path"))
        }
        let td = body[..<slash]
        if td.isEmpty { return .failure(MTLSPolicyError("'\(s)' has an empty trust domain")) }
        let tdOK = td.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
        }
        if !tdOK { return .failure(MTLSPolicyError("'\(s)': trust domain '\(td)' may contain only lowercase letters, digits, '.', '-' and '_'")) }
        let path = body[body.index(after: slash)...]
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (i, seg) in segments.enumerated() {
            let last = i == segments.count - 1
            if seg.isEmpty {
                // `spiffe://td/ns/*`: the prefix ends with a slash.
                if isPrefix && last && i > 0 { continue }
                if isPrefix && last && segments.count == 1 { continue }   // spiffe://td/*
                return .failure(MTLSPolicyError("'\(s)' has an empty path segment"))
            }
            if !isPrefix || !last, seg == "." || seg == ".." {
                return .failure(MTLSPolicyError("'\(s)' has a '\(seg)' path segment"))
            }
            let ok = seg.utf8.allSatisfy { c in
                (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                    || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
            }
            if !ok { return .failure(MTLSPolicyError("'\(s)': path segment '\(seg)' may contain only letters, digits, '.', '-' and '_'")) }
        }
        let text = scheme + String(body)
        return .success(isPrefix ? .prefix(text) : .exact(text))
    }

    /// Istio's path forms: `/exact`, `/prefix/*`, `*suffix`, `*`. The fixed part of a `/` path
    /// must already be normalized (no `//`, `.`/`..` segments or escapes of unreserved
    /// characters), since requests are matched after normalization.
    static func path(_ s: String) -> Result<PathPattern, MTLSPolicyError> {
        if s.isEmpty { return .failure(MTLSPolicyError("empty path")) }
        if s == "*" { return .success(.any) }
        if s.utf8.count > 4096 { return .failure(MTLSPolicyError("path longer than 4096 bytes")) }
        if s.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7f || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            return .failure(MTLSPolicyError("'\(s)' has a space, control, non-ASCII, '?' or '#' character (paths match without the query)"))
        }
        let stars = s.utf8.filter { $0 == UInt8(ascii: "*") }.count
        if stars > 1 || (stars == 1 && !s.hasPrefix("*") && !s.hasSuffix("*")) {
            return .failure(MTLSPolicyError("'\(s)': '*' is allowed only at the start (suffix match) or at the end (prefix match)"))
        }
        if s.hasPrefix("*") { return .success(.suffix(String(s.dropFirst()))) }
        guard s.hasPrefix("/") else { return .failure(MTLSPolicyError("'\(s)' must start with '/' (or be '*' or '*suffix')")) }
        let fixed = s.hasSuffix("*") ? String(s.dropLast()) : s
        // A prefix ending in `.` or `..` may be the start of a longer segment (`/.*` for `/.well-known`).
        var checked = fixed
        if s.hasSuffix("*"), let slash = fixed.lastIndex(of: "/") {
            let tail = fixed[fixed.index(after: slash)...]
            if tail == "." || tail == ".." { checked = String(fixed[...slash]) }
        }
        if !MTLSPath.isNormalPath(checked) {
            return .failure(MTLSPolicyError("'\(s)' is not a normalized path (requests are matched after merging '//', resolving '.'/'..' and decoding escapes of unreserved characters)"))
        }
        return .success(s.hasSuffix("*") ? .prefix(fixed) : .exact(fixed))
    }
}

struct MTLSPolicyError: Error {
    var message: String
    init(_ m: String) { message = m }
}
