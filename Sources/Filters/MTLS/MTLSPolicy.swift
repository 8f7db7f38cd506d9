import Config
import OutriderCore

/// What a rule does when it matches (Istio's AuthorizationPolicy actions; CUSTOM and AUDIT are
/// not supported).
enum MTLSAction: String, Sendable {
    case allow = "ALLOW"
    case deny = "DENY"
}

/// One `principals:` entry.
enum PrincipalPattern: Sendable, Equatable {
    /// `spiffe://td/path`: this identity exactly.
    case exact(String)
    /// `spiffe://td/ns/default/*`: any identity starting with the text before `*`.
    case prefix(String)
    /// `*`: any verified identity (Istio's meaning).
    case anyAuthenticated
    /// `unauthenticated`: the request has no verified identity.
    case unauthenticated

    func matches(_ identity: String?) -> Bool {
        switch self {
        case .unauthenticated: return identity == nil
        case .anyAuthenticated: return identity != nil
        case .exact(let id): return identity == id
        case .prefix(let p): return identity.map { $0.utf8.starts(with: p.utf8) } ?? false
        }
    }
}

/// One `paths:` entry, matched against the request's normalized path (Istio's forms).
enum PathPattern: Sendable, Equatable {
    /// `/healthz`: this path exactly.
    case exact(String)
    /// `/api/*`: any path starting with the text before `*`.
    case prefix(String)
    /// `*.js`: any path ending with the text after `*`.
    case suffix(String)
    /// `*`: every path.
    case any

    func matches(_ path: String) -> Bool {
        switch self {
        case .any: return true
        case .exact(let p): return path == p
        case .prefix(let p): return path.utf8.starts(with: p.utf8)
        case .suffix(let s): return path.utf8.count >= s.utf8.count && path.utf8.reversed().starts(with: s.utf8.reversed())
        }
    }
}

/// `from:` — who is calling. Lists are ORed; principals and notPrincipals are ANDed.
struct MTLSSource: Sendable, Equatable {
    var principals: [PrincipalPattern]?
    var notPrincipals: [PrincipalPattern]?

    func matches(_ identity: String?) -> Bool {
        if let p = principals, !p.contains(where: { $0.matches(identity) }) { return false }
        if let n = notPrincipals, n.contains(where: { $0.matches(identity) }) { return false }
        return true
    }
}

/// `to:` — what is called. Lists are ORed; the fields are ANDed.
struct MTLSOperation: Sendable, Equatable {
    var methods: [String]?
    var notMethods: [String]?
    var paths: [PathPattern]?
    var notPaths: [PathPattern]?

    func matches(method: String, path: String) -> Bool {
        if let m = methods, !m.contains(method) { return false }
        if let n = notMethods, n.contains(method) { return false }
        if let p = paths, !p.contains(where: { $0.matches(path) }) { return false }
        if let n = notPaths, n.contains(where: { $0.matches(path) }) { return false }
        return true
    }
}

/// One rule of the policy file.
struct MTLSRule: Sendable {
    /// Position in the policy's rule list (for its counters).
    var index: Int
    var name: String
    var action: MTLSAction
    /// nil: any caller. Otherwise one of these must match (Istio's `from` list).
    var from: [MTLSSource]?
    /// nil: any operation. Otherwise one of these must match (Istio's `to` list).
    var to: [MTLSOperation]?
    var file: String
    var line: Int

    func matches(identity: String?, method: String, path: String) -> Bool {
        if let f = from, !f.contains(where: { $0.matches(identity) }) { return false }
        if let t = to, !t.contains(where: { $0.matches(method: method, path: path) }) { return false }
        return true
    }
}

/// What the policy decided for one request.
enum MTLSDecision: Equatable {
    /// Allowed by this ALLOW rule.
    case allowedBy(Int)
    /// No ALLOW rule in the policy: everything not denied is allowed.
    case allowedByDefault
    /// Denied by this DENY rule.
    case deniedBy(Int)
    /// ALLOW rules exist and none matched.
    case deniedByDefault

    var allowed: Bool {
        switch self {
        case .allowedBy, .allowedByDefault: return true
        case .deniedBy, .deniedByDefault: return false
        }
    }
}

/// A parsed policy file: DENY rules are checked first (any match → denied), then ALLOW rules
/// (none → allow everything; some → one must match).
struct MTLSPolicy: Sendable {
    var file: String
    var rules: [MTLSRule]
    let denyRules: [MTLSRule]
    let allowRules: [MTLSRule]

    init(file: String, rules: [MTLSRule]) {
        self.file = file
        self.rules = rules
        denyRules = rules.filter { $0.action == .deny }
        allowRules = rules.filter { $0.action == .allow }
    }

    /// `identity` nil or empty means no verified client certificate; `target` is the raw
    /// request-target (normalized here for matching only).
    func evaluate(identity rawIdentity: String?, method: String, target: String) -> MTLSDecision {
        let identity = (rawIdentity?.isEmpty ?? true) ? nil : rawIdentity
        let path = MTLSPath.normalized(target: target)
        for r in denyRules where r.matches(identity: identity, method: method, path: path) { return .deniedBy(r.index) }
        if allowRules.isEmpty { return .allowedByDefault }
        for r in allowRules where r.matches(identity: identity, method: method, path: path) { return .allowedBy(r.index) }
        return .deniedByDefault
    }
}

// MARK: - paths

/// The request path as the policy sees it: the path of an origin- or absolute-form target
/// without query or fragment, unreserved percent-escapes decoded (`%61` → `a`), other escapes
/// upper-cased (`%2f` → `%2F`, never decoded), repeated slashes merged and `.`/`..` segments
/// removed (RFC 3986 §5.2.4) — so `//admin`, `/./admin`, `/x/../admin` and `/%61dmin` all match a
/// rule for `/admin`. The request forwarded upstream is not changed.
enum MTLSPath {
    static func normalized(target: String) -> String {
        // Fast path, the common case: an origin-form path with nothing to normalize.
        let u = target.utf8
        if u.first == UInt8(ascii: "/") {
            var prev: UInt8 = 0
            var end = u.endIndex
            var normal = true
            for i in u.indices {
                let c = u[i]
                if c == UInt8(ascii: "?") || c == UInt8(ascii: "#") { end = i; break }
                if c == UInt8(ascii: "%") || (prev == UInt8(ascii: "/") && (c == UInt8(ascii: "/") || c == UInt8(ascii: "."))) { normal = false; break }
                prev = c
            }
            if normal { return end == u.endIndex ? target : String(Substring(u[..<end])) }
        }
        var bytes = Array(u)
        // Absolute-form (`http://host/path`): keep the path.
        if let first = bytes.first, first != UInt8(ascii: "/"), let sep = find(bytes, "://") {
            let afterAuthority = bytes[(sep + 3)...].firstIndex(of: UInt8(ascii: "/"))
            let end = bytes[(sep + 3)...].firstIndex { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? bytes.count
            if let a = afterAuthority, a < end { bytes = Array(bytes[a...]) } else { bytes = [UInt8(ascii: "/")] + bytes[end...] }
        }
        if let q = bytes.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            bytes.removeSubrange(q...)
        }
        // `*` (OPTIONS), authority-form (CONNECT): nothing to normalize.
        guard bytes.first == UInt8(ascii: "/") else { return String(decoding: bytes, as: UTF8.self) }
        if isNormal(bytes) { return String(decoding: bytes, as: UTF8.self) }
        return String(decoding: removeDotSegments(decodeUnreserved(bytes)), as: UTF8.self)
    }

    /// Whether `p` (a path without `*`) is already in normal form: policy paths must be.
    static func isNormalPath(_ p: String) -> Bool {
        let b = Array(p.utf8)
        return b.first == UInt8(ascii: "/") && removeDotSegments(decodeUnreserved(b)) == b
    }

    private static func find(_ b: [UInt8], _ needle: String) -> Int? {
        let n = Array(needle.utf8)
        guard b.count >= n.count else { return nil }
        for i in 0...(b.count - n.count) where b[i] == n[0] && Array(b[i..<(i + n.count)]) == n { return i }
        return nil
    }

    /// Fast path: no `%`, no `//`, no `/.`.
    private static func isNormal(_ b: [UInt8]) -> Bool {
        var prev: UInt8 = 0
        for c in b {
            if c == UInt8(ascii: "%") { return false }
            if prev == UInt8(ascii: "/") && (c == UInt8(ascii: "/") || c == UInt8(ascii: ".")) { return false }
            prev = c
        }
        return true
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func isUnreserved(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"): return true
        default: return false
        }
    }

    private static func decodeUnreserved(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) {
                let v = h << 4 | l
                if isUnreserved(v) { out.append(v) } else {
                    let digits = Array("0123456789ABCDEF".utf8)
                    out.append(UInt8(ascii: "%")); out.append(digits[Int(h)]); out.append(digits[Int(l)])
                }
                i += 3
            } else {
                out.append(b[i]); i += 1
            }
        }
        return out
    }

    /// Segments without empty ones (merged slashes), `.` and `..` resolved; a trailing slash
    /// (or a trailing `.`/`..`) is kept as a trailing slash.
    private static func removeDotSegments(_ b: [UInt8]) -> [UInt8] {
        var stack: [ArraySlice<UInt8>] = []
        var trailingSlash = false
        for seg in b.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst() {
            trailingSlash = false
            if seg.isEmpty { trailingSlash = true; continue }
            if seg.elementsEqual([UInt8(ascii: ".")]) { trailingSlash = true; continue }
            if seg.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) { _ = stack.popLast(); trailingSlash = true; continue }
            stack.append(seg)
        }
        var out: [UInt8] = [UInt8(ascii: "/")]
        for (i, s) in stack.enumerated() {
            if i > 0 { out.append(UInt8(ascii: "/")) }
            out.append(contentsOf: s)
        }
        if trailingSlash && !stack.isEmpty { out.append(UInt8(ascii: "/")) }
        return out
    }
}
