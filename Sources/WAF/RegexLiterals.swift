/// Required literals of a PCRE pattern: a set of byte strings such that every string the
/// pattern matches contains at least one of them (ASCII case folded). The prefilter uses them
/// to skip a regex without running it: no literal in the value, no match.
///
/// Soundness is the only hard rule here: whenever the analysis is unsure (an unknown escape,
/// a backreference, a conditional, extended mode), a node counts as "could be anything" and,
/// if that reaches the top, the pattern gets no literals at all. Lookarounds count as empty
/// (what they require need not be consumed), which only weakens the result.
enum RegexLiterals {
    /// Sets larger than this stop being tracked as exact alternatives.
    static let exactLimit = 64
    /// Required-literal sets larger than this are dropped (the regex is then always run).
    static let requiredLimit = 512
    /// Literals stop growing at this length (a long literal run is cut, not copied quadratically).
    static let literalLimit = 128

    /// The literals (lowercase), or nil when the pattern has no usable requirement.
    static func required(_ pattern: Bytes) -> [Bytes]? {
        var p = PatternScanner(b: pattern)
        let info = p.alternation()
        guard !p.bail, p.i == pattern.count, let req = info.asRequired, !req.isEmpty else { return nil }
        return req.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// What is known about the strings one node of the pattern matches.
    struct Info {
        /// Every string the node matches is one of these (nil: unknown or too many). `[]` is the empty string.
        var exact: Set<Bytes>?
        /// Every string the node matches contains one of these (nil: no requirement).
        var required: Set<Bytes>?

        static let anything = Info(exact: nil, required: nil)
        static let empty = Info(exact: [[]], required: nil)

        /// The best requirement the node implies.
        var asRequired: Set<Bytes>? {
            var e: Set<Bytes>?
            if let x = exact, !x.isEmpty, !x.contains([]) { e = x }
            return RegexLiterals.better(e, required)
        }
    }

    /// The more selective of two requirements: longer shortest literal first, then fewer literals.
    static func better(_ a: Set<Bytes>?, _ b: Set<Bytes>?) -> Set<Bytes>? {
        guard let a else { return b }
        guard let b else { return a }
        let la = a.map(\.count).min() ?? 0, lb = b.map(\.count).min() ?? 0
        if la != lb { return la > lb ? a : b }
        return a.count <= b.count ? a : b
    }

    static func alternation(_ branches: [Info]) -> Info {
        var exact: Set<Bytes>? = Set()
        var required: Set<Bytes>? = Set()
        for br in branches {
            if let e = exact, let x = br.exact, e.count + x.count <= exactLimit { exact = e.union(x) } else { exact = nil }
            if let r = required, let x = br.asRequired, r.count + x.count <= requiredLimit { required = r.union(x) } else { required = nil }
        }
        return Info(exact: exact, required: required)
    }

    static func repeated(_ a: Info, min: Int, max: Int?) -> Info {
        if min == 0 {
            if max == 1, let x = a.exact, x.count < exactLimit { return Info(exact: x.union([[]]), required: nil) }
            return .anything
        }
        if min == 1 && max == 1 { return a }
        return Info(exact: nil, required: a.asRequired)
    }
}

/// A recursive-descent reader of the PCRE syntax CRS uses, producing `RegexLiterals.Info`.
private struct PatternScanner {
    let b: Bytes
    var i = 0
    /// Set on syntax the analysis does not model; the whole pattern is then unconstrained.
    var bail = false
    /// Group nesting; deeper than `maxDepth` bails (the reader recurses once per level).
    var depth = 0
    static let maxDepth = 64

    init(b: Bytes) { self.b = b }

    typealias Info = RegexLiterals.Info

    mutating func alternation() -> Info {
        var branches = [sequence()]
        while !bail, i < b.count, b[i] == UInt8(ascii: "|") {
            i += 1
            branches.append(sequence())
        }
        return branches.count == 1 ? branches[0] : RegexLiterals.alternation(branches)
    }

    /// A concatenation. Adjacent exactly-known atoms are joined into runs ("sel" "ect" →
    /// "select"); where a run is broken by an unknown atom (`\\s+`, `.*`), the best run so
    /// far is kept as the requirement.
    mutating func sequence() -> Info {
        var run = Info.empty
        var best: Set<Bytes>?
        var broken = false
        while !bail, i < b.count, b[i] != UInt8(ascii: "|"), b[i] != UInt8(ascii: ")") {
            let a = quantified(atom())
            if bail { return .anything }
            if let x = run.exact, let y = a.exact, x.count * y.count <= RegexLiterals.exactLimit,
               (x.map(\.count).max() ?? 0) + (y.map(\.count).max() ?? 0) <= RegexLiterals.literalLimit {
                var s = Set<Bytes>()
                for p in x { for q in y { s.insert(p + q) } }
                run = Info(exact: s, required: RegexLiterals.better(run.required, a.required))
                continue
            }
            broken = true
            best = RegexLiterals.better(best, run.asRequired)
            if a.exact != nil { run = a } else { best = RegexLiterals.better(best, a.required); run = .empty }
        }
        if !broken { return run }
        return Info(exact: nil, required: RegexLiterals.better(best, run.asRequired))
    }

    /// Reads an optional quantifier after an atom.
    mutating func quantified(_ a: Info) -> Info {
        guard i < b.count else { return a }
        var lo = 1, hi: Int? = 1
        switch b[i] {
        case UInt8(ascii: "*"): lo = 0; hi = nil; i += 1
        case UInt8(ascii: "+"): lo = 1; hi = nil; i += 1
        case UInt8(ascii: "?"): lo = 0; hi = 1; i += 1
        case UInt8(ascii: "{"):
            guard let (l, h, end) = braces(i) else { return a }  // not a quantifier: a literal `{` follows
            lo = l; hi = h; i = end
        default: return a
        }
        if i < b.count, b[i] == UInt8(ascii: "?") || b[i] == UInt8(ascii: "+") { i += 1 }  // lazy / possessive
        if i < b.count, b[i] == UInt8(ascii: "*") || b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "?") { bail = true }
        return RegexLiterals.repeated(a, min: lo, max: hi)
    }

    /// `{n}`, `{n,}`, `{n,m}` at `at`: (min, max, index after `}`), or nil when it is not a quantifier.
    func braces(_ at: Int) -> (Int, Int?, Int)? {
        var j = at + 1
        func number() -> Int? {
            var n = 0, digits = 0
            while j < b.count, b[j] >= 48, b[j] <= 57, digits < 6 { n = n * 10 + Int(b[j] - 48); j += 1; digits += 1 }
            return digits > 0 ? n : nil
        }
        guard let lo = number() else { return nil }
        var hi: Int? = lo
        if j < b.count, b[j] == UInt8(ascii: ",") {
            j += 1
            hi = number()
        }
        guard j < b.count, b[j] == UInt8(ascii: "}") else { return nil }
        if let h = hi, h < lo { return nil }
        return (lo, hi, j + 1)
    }

    static func literal(_ c: UInt8) -> Info {
        let l = lowerByte(c)
        return Info(exact: [[l]], required: nil)
    }

    mutating func atom() -> Info {
        let c = b[i]
        switch c {
        case UInt8(ascii: "("): return group()
        case UInt8(ascii: "["): return characterClass()
        case UInt8(ascii: "."): i += 1; return .anything
        case UInt8(ascii: "^"), UInt8(ascii: "$"): i += 1; return .empty
        case UInt8(ascii: "\\"): return escape()
        case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"):
            bail = true; return .anything
        default: i += 1; return PatternScanner.literal(c)
        }
    }

    mutating func group() -> Info {
        i += 1  // (
        depth += 1
        defer { depth -= 1 }
        if depth > PatternScanner.maxDepth { bail = true; return .anything }
        var zeroWidth = false
        if i < b.count, b[i] == UInt8(ascii: "*") { bail = true; return .anything }  // (*VERB)
        if i < b.count, b[i] == UInt8(ascii: "?") {
            i += 1
            guard i < b.count else { bail = true; return .anything }
            switch b[i] {
            case UInt8(ascii: ":"), UInt8(ascii: ">"), UInt8(ascii: "|"): i += 1
            case UInt8(ascii: "="), UInt8(ascii: "!"): i += 1; zeroWidth = true
            case UInt8(ascii: "#"):
                while i < b.count, b[i] != UInt8(ascii: ")") { i += 1 }
                guard i < b.count else { bail = true; return .anything }
                i += 1
                return .empty
            case UInt8(ascii: "<"):
                if i + 1 < b.count, b[i + 1] == UInt8(ascii: "=") || b[i + 1] == UInt8(ascii: "!") {
                    i += 2; zeroWidth = true
                } else if !skipName(close: UInt8(ascii: ">")) { return .anything }
            case UInt8(ascii: "P"):
                i += 1
                guard i < b.count, b[i] == UInt8(ascii: "<"), skipName(close: UInt8(ascii: ">")) else { bail = true; return .anything }
            case UInt8(ascii: "'"):
                if !skipName(close: UInt8(ascii: "'")) { return .anything }
            default:
                // Option letters: `(?i)` applies to the rest of the group, `(?i:...)` is a group.
                var j = i
                while j < b.count, isOptionLetter(b[j]) { j += 1 }
                guard j > i || (j < b.count && b[j] == UInt8(ascii: ")")), j < b.count else { bail = true; return .anything }
                if b[i..<j].contains(UInt8(ascii: "x")) { bail = true; return .anything }  // extended mode: whitespace and comments
                if b[j] == UInt8(ascii: ")") { i = j + 1; return .empty }
                guard b[j] == UInt8(ascii: ":") else { bail = true; return .anything }
                i = j + 1
            }
        }
        let inner = alternation()
        guard !bail, i < b.count, b[i] == UInt8(ascii: ")") else { bail = true; return .anything }
        i += 1
        return zeroWidth ? .empty : inner
    }

    func isOptionLetter(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "i"), UInt8(ascii: "m"), UInt8(ascii: "s"), UInt8(ascii: "x"), UInt8(ascii: "n"),
             UInt8(ascii: "U"), UInt8(ascii: "J"), UInt8(ascii: "-"), UInt8(ascii: "^"):
            return true
        default: return false
        }
    }

    /// Skips `<name>` / `'name'` of a named group (i at the opening delimiter).
    mutating func skipName(close: UInt8) -> Bool {
        i += 1
        while i < b.count, b[i] != close {
            let c = b[i]
            guard c == 95 || (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) else { bail = true; return false }
            i += 1
        }
        guard i < b.count else { bail = true; return false }
        i += 1
        return true
    }

    /// One byte a `\x..`, `\n`-style or punctuation escape stands for; nil for anything else.
    /// `i` is at the byte after the backslash; advances past the escape when it returns a byte.
    mutating func escapedByte() -> UInt8? {
        guard i < b.count else { return nil }
        let c = b[i]
        switch c {
        case UInt8(ascii: "n"): i += 1; return 10
        case UInt8(ascii: "r"): i += 1; return 13
        case UInt8(ascii: "t"): i += 1; return 9
        case UInt8(ascii: "f"): i += 1; return 12
        case UInt8(ascii: "e"): i += 1; return 27
        case UInt8(ascii: "a"): i += 1; return 7
        case UInt8(ascii: "x"):
            var j = i + 1
            var v = 0
            if j < b.count, b[j] == UInt8(ascii: "{") {
                j += 1
                var n = 0
                while j < b.count, let d = hexValue(b[j]), n < 4 { v = v * 16 + d; j += 1; n += 1 }
                guard n > 0, j < b.count, b[j] == UInt8(ascii: "}"), v < 256 else { return nil }
                i = j + 1
                return UInt8(v)
            }
            var n = 0
            while j < b.count, n < 2, let d = hexValue(b[j]) { v = v * 16 + d; j += 1; n += 1 }
            i = j
            return UInt8(v)  // `\x` with no digits is NUL in PCRE
        default:
            let alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
            if alnum { return nil }
            i += 1
            return c
        }
    }

    func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 48...57: return Int(c - 48)
        case 65...70: return Int(c - 55)
        case 97...102: return Int(c - 87)
        default: return nil
        }
    }

    mutating func escape() -> Info {
        i += 1  // backslash
        guard i < b.count else { bail = true; return .anything }
        switch b[i] {
        case UInt8(ascii: "b"), UInt8(ascii: "B"), UInt8(ascii: "A"), UInt8(ascii: "z"), UInt8(ascii: "Z"),
             UInt8(ascii: "G"), UInt8(ascii: "K"):
            i += 1; return .empty
        case UInt8(ascii: "d"), UInt8(ascii: "D"), UInt8(ascii: "w"), UInt8(ascii: "W"), UInt8(ascii: "s"),
             UInt8(ascii: "S"), UInt8(ascii: "h"), UInt8(ascii: "H"), UInt8(ascii: "v"), UInt8(ascii: "V"),
             UInt8(ascii: "N"), UInt8(ascii: "R"), UInt8(ascii: "X"), UInt8(ascii: "C"):
            i += 1; return .anything
        case UInt8(ascii: "p"), UInt8(ascii: "P"):
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "{") {
                while i < b.count, b[i] != UInt8(ascii: "}") { i += 1 }
                guard i < b.count else { bail = true; return .anything }
            }
            i += 1
            return .anything
        case 48:
            // \0, \0o, \0oo: an octal byte.
            var j = i + 1, v = 0, n = 0
            while j < b.count, n < 2, b[j] >= 48, b[j] <= 55 { v = v * 8 + Int(b[j] - 48); j += 1; n += 1 }
            i = j
            return PatternScanner.literal(UInt8(v))
        case 49...57:
            // A backreference (or an octal escape): matches some string, unknown here.
            while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
            return .anything
        default:
            if let byte = escapedByte() { return PatternScanner.literal(byte) }
            bail = true
            return .anything
        }
    }

    /// `[...]`: a small set of bytes is kept as single-byte alternatives; large or negated sets match "anything".
    mutating func characterClass() -> Info {
        i += 1  // [
        var negated = false
        if i < b.count, b[i] == UInt8(ascii: "^") { negated = true; i += 1 }
        var set = Set<UInt8>()
        var large = false
        var first = true
        while i < b.count {
            var c = b[i]
            if c == UInt8(ascii: "]") && !first { break }
            first = false
            if c == UInt8(ascii: "["), i + 1 < b.count, b[i + 1] == UInt8(ascii: ":") {
                // [:alpha:] and friends
                guard let close = findPosixEnd(i + 2) else { bail = true; return .anything }
                i = close
                large = true
                continue
            }
            var lo: UInt8
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < b.count else { bail = true; return .anything }
                switch b[i] {
                case UInt8(ascii: "d"), UInt8(ascii: "D"), UInt8(ascii: "w"), UInt8(ascii: "W"), UInt8(ascii: "s"),
                     UInt8(ascii: "S"), UInt8(ascii: "h"), UInt8(ascii: "H"), UInt8(ascii: "v"), UInt8(ascii: "V"):
                    i += 1; large = true; continue
                case UInt8(ascii: "b"): i += 1; lo = 8
                default:
                    guard let byte = escapedByte() else { bail = true; return .anything }
                    lo = byte
                }
            } else {
                lo = c
                i += 1
            }
            // A range lo-hi (a `-` before `]` is a literal).
            if i + 1 < b.count, b[i] == UInt8(ascii: "-"), b[i + 1] != UInt8(ascii: "]") {
                i += 1
                c = b[i]
                var hi: UInt8
                if c == UInt8(ascii: "\\") {
                    i += 1
                    guard let byte = escapedByte() else { bail = true; return .anything }
                    hi = byte
                } else if c == UInt8(ascii: "[") {
                    bail = true; return .anything
                } else {
                    hi = c; i += 1
                }
                guard lo <= hi else { bail = true; return .anything }
                if Int(hi) - Int(lo) > 32 { large = true } else { for x in lo...hi { set.insert(lowerByte(x)) } }
            } else {
                set.insert(lowerByte(lo))
            }
        }
        guard i < b.count else { bail = true; return .anything }
        i += 1  // ]
        if negated || large || set.isEmpty || set.count > 16 { return .anything }
        return Info(exact: Set(set.map { [$0] }), required: nil)
    }

    func findPosixEnd(_ from: Int) -> Int? {
        var j = from
        while j + 1 < b.count {
            if b[j] == UInt8(ascii: ":") && b[j + 1] == UInt8(ascii: "]") { return j + 2 }
            let c = b[j]
            guard (c >= 97 && c <= 122) || c == UInt8(ascii: "^") else { return nil }
            j += 1
        }
        return nil
    }
}
