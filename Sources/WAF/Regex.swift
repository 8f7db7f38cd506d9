import CPCRE2
#if canImport(Glibc)
import Glibc
#endif

/// A PCRE2 pattern compiled once at load (8-bit, no UTF, JIT), matched with a per-thread
/// scratch (match data, JIT stack, match limit) so matching never allocates.
final class Regex: @unchecked Sendable {
    let pattern: String
    private let code: OpaquePointer
    /// The compiled code, for callers that match without going through this object (FastPlan);
    /// valid while this object lives.
    var codePointer: OpaquePointer { code }
    let jit: Bool
    /// Lowercase literals one of which every match contains (`RegexLiterals`); computed only
    /// for variable-key regexes, which run over every key of TX on each use.
    let requiredLiterals: [Bytes]?
    /// `^.*$` (CRS's "capture the whole value"): under DOTALL | MULTILINE it matches every
    /// subject, the whole of it, so PCRE2 is not asked.
    let matchesWhole: Bool

    struct CompileError: Error { var message: String; var offset: Int }

    /// ModSecurity v3 compiles @rx with DOTALL | MULTILINE.
    init(_ pattern: String, caseless: Bool = false, literals: Bool = false) throws(CompileError) {
        self.pattern = pattern
        let bytes = pattern.latin1
        var err: Int32 = 0
        var off = 0
        var opts = cpcre2_dotall() | cpcre2_multiline()
        if caseless { opts |= cpcre2_caseless() }
        let c = bytes.withUnsafeBufferPointer { p in
            cpcre2_compile(p.baseAddress, p.count, opts, &err, &off)
        }
        guard let c else {
            var buf = [UInt8](repeating: 0, count: 256)
            let n = buf.withUnsafeMutableBufferPointer { cpcre2_error_message(err, $0.baseAddress, 256) }
            throw CompileError(message: String(decoding: buf.prefix(Int(max(0, n))), as: UTF8.self), offset: off)
        }
        code = c
        jit = cpcre2_jit_compile(c) == 0
        matchesWhole = pattern == "^.*$"
        // Read only once PCRE2 accepted the pattern (it bounds nesting). ASCII literals only:
        // stored keys are compared through their String (UTF-8) form.
        let lits = literals ? RegexLiterals.required(bytes) : nil
        requiredLiterals = lits.flatMap { $0.allSatisfy { $0.allSatisfy { $0 < 0x80 } } ? $0 : nil }
    }

    deinit { cpcre2_code_free(code) }

    @inline(__always) private func run(_ s: UnsafeBufferPointer<UInt8>, _ scratch: UnsafeMutablePointer<cpcre2_scratch>) -> Int32 {
        cpcre2_match(code, s.baseAddress, s.count, scratch)
    }

    /// False when `lower` (the subject, ASCII lowercased) lacks every required literal: no match
    /// is possible. True means "run the regex".
    func mayMatch(lower: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let lits = requiredLiterals else { return true }
        for l in lits where l.withUnsafeBufferPointer({ bytesFind(lower, $0) != nil }) { return true }
        return false
    }

    func matches(_ s: Bytes) -> Bool {
        s.withUnsafeBufferPointer { matches($0) }
    }

    /// With the caller's scratch (a transaction fetches its thread's once).
    @inline(__always) func matches(_ p: UnsafeBufferPointer<UInt8>, _ scratch: UnsafeMutablePointer<cpcre2_scratch>?) -> Bool {
        if matchesWhole { return true }
        guard let scratch else { return false }
        return run(p, scratch) >= 0
    }

    func matches(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        if matchesWhole { return true }
        guard let scratch = RegexScratch.current else { return false }
        return run(p, scratch) >= 0
    }

    func firstMatch(_ s: Bytes, groups: Int) -> [Bytes]? {
        s.withUnsafeBufferPointer { firstMatch($0, groups: groups) }
    }

    /// The whole match and up to `groups` capture groups (empty for unset ones), or nil.
    func firstMatch(_ p: UnsafeBufferPointer<UInt8>, groups: Int) -> [Bytes]? {
        if matchesWhole { return [Array(p)] }
        guard let scratch = RegexScratch.current else { return nil }
        let rc = run(p, scratch)
        if rc < 0 { return nil }
        guard let ov = cpcre2_ovector(scratch) else { return nil }
        let pairs = Int(cpcre2_ovector_count(scratch))
        let n = rc == 0 ? pairs : min(Int(rc), pairs)
        var out: [Bytes] = []
        for g in 0..<min(n, groups + 1) {
            let a = ov[2 * g], b = ov[2 * g + 1]
            if a == cpcre2_unset() || b < a || b > p.count { out.append([]) } else { out.append(Array(p[a..<b])) }
        }
        return out
    }
}

/// Per-thread PCRE2 scratch, created on first use and freed with the thread.
enum RegexScratch {
    nonisolated(unsafe) static var matchLimit: UInt32 = 500_000
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in
            cpcre2_scratch_free(p?.assumingMemoryBound(to: cpcre2_scratch.self))
        }
        return k
    }()

    static var current: UnsafeMutablePointer<cpcre2_scratch>? {
        if let p = pthread_getspecific(key) { return p.assumingMemoryBound(to: cpcre2_scratch.self) }
        guard let s = cpcre2_scratch_create(16, matchLimit) else { return nil }
        pthread_setspecific(key, s)
        return s
    }
}

/// Case-insensitive multi-pattern search (@pm, @pmFromFile): Aho–Corasick over bytes with
/// ASCII case folding; reports the first phrase found. Built as a trie with failure links, then
/// flattened: each node's edges are a run of (byte, target) pairs in two flat arrays, so the
/// search loop reads plain integers.
final class AhoCorasick: @unchecked Sendable {
    /// The root's transitions for every byte (0: stay at the root).
    private let rootNext: [Int32]
    /// Node n's edges are edgeBytes/edgeTargets[edgeStart[n] ..< edgeStart[n + 1]].
    private let edgeStart: [Int32]
    private let edgeBytes: [UInt8]
    private let edgeTargets: [Int32]
    private let fail: [Int32]
    /// Pattern index ending here (directly or through the dictionary suffix), -1 if none.
    private let output: [Int32]
    let patterns: [Bytes]

    init(_ phrases: [Bytes]) {
        patterns = phrases.filter { !$0.isEmpty }
        let trie = AhoCorasickTrie(patterns.enumerated().map { ($1, Int32($0)) })
        let edges = trie.edges, fail = trie.fail
        let output = trie.outputs.map { $0.first ?? -1 }
        var root = [Int32](repeating: 0, count: 256)
        for (c, n) in edges[0] { root[Int(c)] = n }
        var start: [Int32] = [0]
        var bytes: [UInt8] = []
        var targets: [Int32] = []
        for e in edges {
            for (c, n) in e { bytes.append(c); targets.append(n) }
            start.append(Int32(bytes.count))
        }
        rootNext = root; edgeStart = start; edgeBytes = bytes; edgeTargets = targets
        self.fail = fail; self.output = output
    }

    func search(_ s: Bytes) -> Int? { s.withUnsafeBufferPointer { search($0) } }

    /// The index of a phrase found in `s`, or nil.
    func search(_ s: UnsafeBufferPointer<UInt8>) -> Int? {
        rootNext.withUnsafeBufferPointer { root in
        edgeStart.withUnsafeBufferPointer { start in
        edgeBytes.withUnsafeBufferPointer { eb in
        edgeTargets.withUnsafeBufferPointer { et in
        fail.withUnsafeBufferPointer { fail in
        output.withUnsafeBufferPointer { output -> Int? in
            var node: Int32 = 0
            for raw in s {
                let c = lowerByte(raw)
                while true {
                    if node == 0 { node = root[Int(c)]; break }
                    var found: Int32 = -1
                    var k = Int(start[Int(node)])
                    let end = Int(start[Int(node) + 1])
                    while k < end { if eb[k] == c { found = et[k]; break }; k += 1 }
                    if found >= 0 { node = found; break }
                    node = fail[Int(node)]
                }
                let o = output[Int(node)]
                if o >= 0 { return Int(o) }
            }
            return nil
        }}}}}}
    }
}

/// The trie and failure links of an Aho–Corasick automaton over ASCII-case-folded patterns,
/// built once for @pm (`AhoCorasick`) and the prefilter (`LiteralScanner`), which each lay it
/// out for their own search.
struct AhoCorasickTrie {
    /// Node n's edges as (byte, child); node 0 is the root.
    private(set) var edges: [[(UInt8, Int32)]] = [[]]
    private(set) var fail: [Int32] = []
    /// Pattern ids reported at node n: those ending there first (in pattern order), then those
    /// of its dictionary suffixes.
    private(set) var outputs: [[Int32]] = [[]]
    /// Every node, breadth first from the root.
    private(set) var order: [Int32] = [0]

    init(_ patterns: [(Bytes, Int32)]) {
        for (p, id) in patterns where !p.isEmpty {
            var node: Int32 = 0
            for raw in p {
                let c = lowerByte(raw)
                if let nx = child(node, c) { node = nx; continue }
                let n = Int32(edges.count)
                edges.append([]); outputs.append([])
                edges[Int(node)].append((c, n))
                node = n
            }
            if !outputs[Int(node)].contains(id) { outputs[Int(node)].append(id) }
        }
        fail = [Int32](repeating: 0, count: edges.count)
        var qi = 1
        order += edges[0].map { $0.1 }
        while qi < order.count {
            let u = order[qi]; qi += 1
            for (c, v) in edges[Int(u)] {
                var f = fail[Int(u)]
                while f != 0, child(f, c) == nil { f = fail[Int(f)] }
                var target = child(f, c) ?? 0
                if target == v { target = 0 }
                fail[Int(v)] = target
                // Breadth first: the suffix's outputs are complete before v's are merged.
                for b in outputs[Int(target)] where !outputs[Int(v)].contains(b) { outputs[Int(v)].append(b) }
                order.append(v)
            }
        }
    }

    func child(_ node: Int32, _ c: UInt8) -> Int32? {
        for (k, v) in edges[Int(node)] where k == c { return v }
        return nil
    }

    /// The node after reading `c` in `node`, failure links followed (a DFA transition).
    func step(_ node: Int32, _ c: UInt8) -> Int32 {
        var x = node
        while true {
            if let t = child(x, c) { return t }
            if x == 0 { return 0 }
            x = fail[Int(x)]
        }
    }
}

/// @ipMatch: IPv4/IPv6 addresses and CIDR ranges.
struct IPMatcher: Sendable {
    private var v4: [(UInt32, UInt32)] = []
    private var v6: [(UInt64, UInt64, UInt64, UInt64)] = []   // addr hi, lo, mask hi, lo

    init?(_ list: [String]) {
        for raw in list {
            let item = raw.trimmingSpaces
            if item.isEmpty { continue }
            var addr = Substring(item)
            var bits: Int?
            if let slash = item.firstIndex(of: "/") {
                addr = item[..<slash]
                guard let b = Int(item[item.index(after: slash)...]) else { return nil }
                bits = b
            }
            if let a = IPMatcher.parseV4(addr) {
                let b = bits ?? 32
                guard (0...32).contains(b) else { return nil }
                let mask: UInt32 = b == 0 ? 0 : ~UInt32(0) << UInt32(32 - b)
                v4.append((a & mask, mask))
            } else if let (hi, lo) = IPMatcher.parseV6(addr) {
                let b = bits ?? 128
                guard (0...128).contains(b) else { return nil }
                let mh: UInt64 = b >= 64 ? ~0 : (b == 0 ? 0 : ~UInt64(0) << UInt64(64 - b))
                let ml: UInt64 = b <= 64 ? 0 : (b >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - b))
                v6.append((hi & mh, lo & ml, mh, ml))
            } else { return nil }
        }
    }

    func contains(_ s: String) -> Bool {
        Array(s.utf8).withUnsafeBufferPointer { contains($0) }
    }

    /// The same for a value's bytes: IPv4 (CRS tests REMOTE_ADDR on every request) parsed
    /// in place, IPv6 as a string.
    func contains(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        if let a = IPMatcher.parseV4(v) { return v4.contains { a & $0.1 == $0.0 } }
        guard v.contains(UInt8(ascii: ":")), let (hi, lo) = IPMatcher.parseV6(Substring(String(decoding: v, as: UTF8.self))) else { return false }
        return v6.contains { hi & $0.2 == $0.0 && lo & $0.3 == $0.1 }
    }

    /// Dotted quad of 1–3 decimal digits per part, each at most 255.
    static func parseV4(_ s: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var v: UInt32 = 0, part: UInt32 = 0, digits = 0, dots = 0
        for c in s {
            if c == UInt8(ascii: ".") {
                guard digits > 0, dots < 3 else { return nil }
                v = v << 8 | part
                part = 0; digits = 0; dots += 1
            } else if c >= 48 && c <= 57 {
                digits += 1
                guard digits <= 3 else { return nil }
                part = part * 10 + UInt32(c - 48)
                guard part <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return v << 8 | part
    }

    static func parseV4(_ s: Substring) -> UInt32? {
        Array(s.utf8).withUnsafeBufferPointer { parseV4($0) }
    }

    static func parseV6(_ s: Substring) -> (UInt64, UInt64)? {
        guard s.contains(":") else { return nil }
        var groups: [UInt16] = []
        var tail: [UInt16] = []
        var sawGap = false
        let halves = s.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func parse(_ h: String) -> [UInt16]? {
            if h.isEmpty { return [] }
            var out: [UInt16] = []
            let parts = h.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if i == parts.count - 1, p.contains("."), let v4 = parseV4(p) {
                    out.append(UInt16(v4 >> 16)); out.append(UInt16(v4 & 0xffff)); continue
                }
                guard !p.isEmpty, p.count <= 4, let n = UInt16(p, radix: 16) else { return nil }
                out.append(n)
            }
            return out
        }
        guard let a = parse(halves[0]) else { return nil }
        groups = a
        if halves.count == 2 { sawGap = true; guard let b = parse(halves[1]) else { return nil }; tail = b }
        let fill = 8 - groups.count - tail.count
        if sawGap { guard fill >= 1 else { return nil }; groups += [UInt16](repeating: 0, count: fill) + tail }
        guard groups.count == 8 else { return nil }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(groups[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(groups[i]) }
        return (hi, lo)
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
    func components(separatedBy sep: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.range(of: sep) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
}

extension Substring {
    func components(separatedBy sep: String) -> [String] { String(self).components(separatedBy: sep) }
    func range(of needle: String) -> Range<Index>? {
        guard !needle.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<(index(i, offsetBy: needle.count)) }
            i = index(after: i)
        }
        return nil
    }
}
