import CInjection
import CPCRE2
#if canImport(Glibc)
import Glibc
#endif

/// A rule's "can this match at all?" test, compiled at load for the common shape of CRS rules
/// (one operator over request lists and scalars). Most rules match nothing on most requests;
/// answering that through the general evaluator (closures, enum payloads, class fields) costs
/// more in reference counting than the regexes themselves. The fast test reads only plain
/// values: raw PCRE2 code pointers, unmanaged references, key bytes owned by the plan.
///
/// It is a filter, never a decision: when it says "maybe", the rule runs through the general
/// evaluator, which performs every side effect (captures, setvar, MATCHED_VARS). So the fast
/// test must only be exact about "no value matches", and it is: it runs the same transformation
/// chain (through the same cache) and the same operator on the same values.
final class FastPlan: @unchecked Sendable {
    enum Source: UInt8 {
        case argsGet, argsPost, headers, cookies, files
        case filename, basename, uri, uriRaw, requestLine, method, proto, queryString, requestBody
        /// XML:/* and XML:@: nothing without an XML body, else "maybe".
        case xml
        /// TX:key (exact key; `txKey` holds it).
        case tx
    }

    struct Selector {
        /// 0: all keys, 1: exact key, 2: key regex.
        var kind: UInt8
        var exact: UnsafeBufferPointer<UInt8>
        var regex: OpaquePointer?
    }

    struct FastTarget {
        var source: Source
        /// For `.argsGet` + `.argsPost` (ARGS): both lists.
        var alsoPost: Bool
        var names: Bool
        var selector: Selector
        /// The collection the values are reported as (for exclusions).
        var collection: Collection
        /// `&TARGET`: the number of selected values instead of the values.
        var count: Bool = false
        /// For `.tx`: the index of the key in `txKeys`.
        var txKey: Int = 0
    }

    struct FastExclusion {
        var collection: Collection
        var selector: Selector
    }

    enum Op {
        case rx(OpaquePointer)
        case pm(Unmanaged<AhoCorasick>)
        case byteRange(UnsafePointer<Bool>)
        case sqli, xss
        /// @eq @ge @gt @le @lt with a constant parameter.
        case eq(Int), ge(Int), gt(Int), le(Int), lt(Int)
        /// @streq @within @contains @beginsWith @endsWith with a constant parameter.
        case streq(UnsafeBufferPointer<UInt8>), within(UnsafeBufferPointer<UInt8>), contains(UnsafeBufferPointer<UInt8>)
        case beginsWith(UnsafeBufferPointer<UInt8>), endsWith(UnsafeBufferPointer<UInt8>)
    }

    let targets: [FastTarget]
    let txKeys: [String]
    /// The keys' interned ids (`Transaction.txRead`).
    let txKeyIDs: [Int]
    let exclusions: [FastExclusion]
    let op: Op
    let negated: Bool
    /// multiMatch: the operator runs on the value and after every transformation that changed it.
    let multiMatch: Bool
    /// Key bytes the selectors point into (kept alive with the plan).
    private let keyStore: KeyStore

    /// Owns the exact-key bytes and the byte-range table for the plan's lifetime.
    final class KeyStore: @unchecked Sendable {
        var blocks: [UnsafeMutableBufferPointer<UInt8>] = []
        var tables: [UnsafeMutablePointer<Bool>] = []
        func keep(_ b: Bytes) -> UnsafeBufferPointer<UInt8> {
            let p = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(1, b.count))
            _ = p.initialize(from: b)
            blocks.append(p)
            return UnsafeBufferPointer(start: p.baseAddress, count: b.count)
        }
        func keep(_ t: [Bool]) -> UnsafePointer<Bool> {
            let p = UnsafeMutablePointer<Bool>.allocate(capacity: 256)
            p.initialize(repeating: false, count: 256)
            for i in 0..<min(256, t.count) { p[i] = t[i] }
            tables.append(p)
            return UnsafePointer(p)
        }
        deinit {
            for b in blocks { b.deallocate() }
            for t in tables { t.deallocate() }
        }
    }

    /// The plan for a rule, or nil when the rule has a shape the fast test does not cover.
    init?(targets ts: [Target], exclusions xs: [Exclusion], op o: Operator, multiMatch: Bool, intern: (String) -> Int) {
        if ts.isEmpty { return nil }
        let store = KeyStore()
        func selector(_ k: KeySelector) -> Selector {
            switch k {
            case .all: return Selector(kind: 0, exact: UnsafeBufferPointer(start: nil, count: 0), regex: nil)
            case .exact(let s): return Selector(kind: 1, exact: store.keep(Array(s.utf8)), regex: nil)
            case .regex(let r): return Selector(kind: 2, exact: UnsafeBufferPointer(start: nil, count: 0), regex: r.codePointer)
            }
        }
        var out: [FastTarget] = []
        var keys: [String] = []
        for t in ts {
            let sel = selector(t.key)
            let c = t.collection
            func list(_ s: Source, post: Bool = false, names: Bool = false) -> FastTarget {
                FastTarget(source: s, alsoPost: post, names: names, selector: sel, collection: c, count: t.count)
            }
            if t.count {
                // Counts the fast test covers: &TX:key and &REQUEST_HEADERS:name / &ARGS:name.
                switch (c, t.key) {
                case (.tx, .exact(let k)): var f = list(.tx); f.txKey = keys.count; keys.append(k); out.append(f)
                case (.requestHeaders, .exact): out.append(list(.headers))
                case (.args, .exact): out.append(list(.argsGet, post: true))
                default: return nil
                }
                continue
            }
            func scalar(_ s: Source) -> FastTarget? {
                if case .all = t.key { return list(s) }
                return nil  // REQUEST_URI:x selects nothing in ModSecurity either; leave it to the evaluator
            }
            switch c {
            case .args: out.append(list(.argsGet, post: true))
            case .argsGet: out.append(list(.argsGet))
            case .argsPost: out.append(list(.argsPost))
            case .argsNames: out.append(list(.argsGet, post: true, names: true))
            case .argsGetNames: out.append(list(.argsGet, names: true))
            case .argsPostNames: out.append(list(.argsPost, names: true))
            case .requestHeaders: out.append(list(.headers))
            case .requestHeadersNames: out.append(list(.headers, names: true))
            case .requestCookies: out.append(list(.cookies))
            case .requestCookiesNames: out.append(list(.cookies, names: true))
            case .files: out.append(list(.files))
            case .filesNames: out.append(list(.files, names: true))
            case .requestFilename: guard let f = scalar(.filename) else { return nil }; out.append(f)
            case .requestBasename: guard let f = scalar(.basename) else { return nil }; out.append(f)
            case .requestURI: guard let f = scalar(.uri) else { return nil }; out.append(f)
            case .requestURIRaw: guard let f = scalar(.uriRaw) else { return nil }; out.append(f)
            case .requestLine: guard let f = scalar(.requestLine) else { return nil }; out.append(f)
            case .requestMethod: guard let f = scalar(.method) else { return nil }; out.append(f)
            case .requestProtocol: guard let f = scalar(.proto) else { return nil }; out.append(f)
            case .queryString: guard let f = scalar(.queryString) else { return nil }; out.append(f)
            case .requestBody: guard let f = scalar(.requestBody) else { return nil }; out.append(f)
            case .xml: out.append(list(.xml))
            case .tx:
                guard case .exact(let k) = t.key else { return nil }
                var f = list(.tx); f.txKey = keys.count; keys.append(k); out.append(f)
            default: return nil
            }
        }
        var ex: [FastExclusion] = []
        for x in xs { ex.append(FastExclusion(collection: x.collection, selector: selector(x.key))) }
        switch o.kind {
        case .rx(let r): op = .rx(r.codePointer)
        case .pm(let a): op = .pm(Unmanaged.passUnretained(a))
        case .validateByteRange(let t): op = .byteRange(store.keep(t))
        case .detectSQLi: op = .sqli
        case .detectXSS: op = .xss
        case .eq, .ge, .gt, .le, .lt, .streq, .within, .contains, .beginsWith, .endsWith:
            guard o.param.isConstant else { return nil }
            let p = o.param.constant
            switch o.kind {
            case .eq: op = .eq(parseLeadingInt(p))
            case .ge: op = .ge(parseLeadingInt(p))
            case .gt: op = .gt(parseLeadingInt(p))
            case .le: op = .le(parseLeadingInt(p))
            case .lt: op = .lt(parseLeadingInt(p))
            case .streq: op = .streq(store.keep(p))
            case .within: op = .within(store.keep(p))
            case .contains: op = .contains(store.keep(p))
            case .beginsWith: op = .beginsWith(store.keep(p))
            default: op = .endsWith(store.keep(p))
            }
        default: return nil
        }
        targets = out
        txKeys = keys
        txKeyIDs = keys.map(intern)
        exclusions = ex
        negated = o.negated
        self.multiMatch = multiMatch
        keyStore = store
    }
}

extension Transaction {
    /// False when no value the rule targets can match (the rule is skipped); true: maybe.
    /// Not used while ctl has removed targets for this request (evaluateChain checks).
    func fastMayMatch(_ r: Rule, _ plan: FastPlan) -> Bool {
        let transforms = !r.transforms.isEmpty
        let hasExclusions = !plan.exclusions.isEmpty
        for ti in plan.targets.indices {
            let t = plan.targets[ti]
            switch t.source {
            case .argsGet:
                if fastList(argsGet, t, plan, r, transforms, hasExclusions) { return true }
                if t.alsoPost, fastList(argsPost, t, plan, r, transforms, hasExclusions) { return true }
            case .argsPost: if fastList(argsPost, t, plan, r, transforms, hasExclusions) { return true }
            case .headers: if fastList(headers, t, plan, r, transforms, hasExclusions) { return true }
            case .cookies: if fastList(cookies, t, plan, r, transforms, hasExclusions) { return true }
            case .files: if fastList(files, t, plan, r, transforms, hasExclusions) { return true }
            case .xml: if xmlText != nil || !xmlAttributes.isEmpty { return true }
            case .tx:
                if hasExclusions, plan.exclusions.contains(where: { $0.collection == .tx }) { return true }
                let kv = txRead(plan.txKeyIDs[t.txKey], plan.txKeys[t.txKey])
                if t.count {
                    if fastValue(store((kv == nil ? 0 : 1).bytes), -1, plan, r, transforms) { return true }
                } else if let kv, fastValue(kv.value, -1, plan, r, transforms) { return true }
            default:
                if hasExclusions, plan.exclusions.contains(where: { $0.collection == t.collection }) { return true }
                let k: Scalar
                let bytes: Bytes
                switch t.source {
                case .filename: k = .filename; bytes = filename
                case .basename: k = .basename; bytes = basename
                case .uri: k = .uri; bytes = uri
                case .uriRaw: k = .uriRaw; bytes = uriRaw
                case .requestLine: k = .requestLine; bytes = requestLine
                case .method: k = .method; bytes = method
                case .proto: k = .proto; bytes = proto
                case .queryString: k = .queryString; bytes = queryString
                default:
                    // REQUEST_BODY: only for the processors that expose it (as `collectAny` decides).
                    guard bodyProcessor == nil || bodyProcessor == "URLENCODED" || forceRequestBodyVariable else { continue }
                    k = .requestBody; bytes = requestBody
                }
                var s = scalarSpans[k.rawValue]
                if !s.exists { s = store(bytes); scalarSpans[k.rawValue] = s }
                if fastValue(s, k.id, plan, r, transforms) { return true }
            }
        }
        return false
    }

    @inline(__always)
    private func fastList(_ list: [Entry], _ t: FastPlan.FastTarget, _ plan: FastPlan, _ r: Rule,
                          _ transforms: Bool, _ hasExclusions: Bool) -> Bool {
        if t.count {
            // &COLLECTION:key: a count the evaluator takes after exclusions; with exclusions, "maybe".
            if hasExclusions, plan.exclusions.contains(where: { $0.collection == t.collection }) { return true }
            var n = 0
            for i in list.indices where selects(t.selector, list[i]) { n += 1 }
            if t.alsoPost { for i in argsPost.indices where selects(t.selector, argsPost[i]) { n += 1 } }
            return fastValue(store(n.bytes), -1, plan, r, transforms)
        }
        if list.isEmpty { return false }
        let checkEx = hasExclusions && plan.exclusions.contains { $0.collection == t.collection }
        for i in list.indices {
            let e = list[i]
            if t.selector.kind != 0, !selects(t.selector, e) { continue }
            if checkEx {
                var skip = false
                for x in plan.exclusions where x.collection == t.collection && selects(x.selector, e) { skip = true; break }
                if skip { continue }
            }
            if fastValue(t.names ? e.key : e.value, t.names ? e.id &+ 1 : e.id, plan, r, transforms) { return true }
        }
        return false
    }

    @inline(__always) private func selects(_ s: FastPlan.Selector, _ e: Entry) -> Bool {
        switch s.kind {
        case 0: return true
        case 1:
            let n = e.keyLower.count
            guard n == s.exact.count else { return false }
            guard n > 0, let q = s.exact.baseAddress else { return true }
            return memcmp(arenaBase + e.keyLower.start, q, n) == 0
        default:
            guard let code = s.regex, let scratch else { return false }
            let k = buffer(e.key)
            return cpcre2_match(code, k.baseAddress, k.count, scratch) >= 0
        }
    }

    @inline(__always)
    private func fastValue(_ span: Span, _ id: Int, _ plan: FastPlan, _ r: Rule, _ transforms: Bool) -> Bool {
        if plan.multiMatch { return fastMultiMatch(span, id, plan, r) }
        return fastOperator(buffer(transforms ? transformed(span, id: id, r) : span), plan)
    }

    /// multiMatch as the evaluator runs it: the raw value, then each transformation result
    /// that differs from the one before. The intermediates come from the transformation cache
    /// by (value, path) (`Transaction.applyTransforms`), which chains sharing a prefix share.
    private func fastMultiMatch(_ span: Span, _ id: Int, _ plan: FastPlan, _ r: Rule) -> Bool {
        if fastOperator(buffer(span), plan) { return true }
        var summary = self.summary(span, id: id)
        var step = PathStep(value: span)
        for t in r.transforms {
            if t.unchanged(summary) { continue }
            let before = step.value
            pathStep(t, &step, id: id)
            if step.value == before { continue }
            summary = ByteSummary(buffer(step.value))
            if fastOperator(buffer(step.value), plan) { return true }
        }
        return false
    }

    /// The plan's operator on one value, negation included.
    @inline(__always)
    private func fastOperator(_ v: UnsafeBufferPointer<UInt8>, _ plan: FastPlan) -> Bool {
        let m: Bool
        switch plan.op {
        case .rx(let code):
            guard let scratch else { return true }
            m = cpcre2_match(code, v.baseAddress, v.count, scratch) >= 0
        case .pm(let ac): m = ac._withUnsafeGuaranteedRef { $0.search(v) } != nil
        case .byteRange(let allowed): m = v.contains { !allowed[Int($0)] }
        case .sqli:
            var fp = (0, 0) as (Int, Int)  // 16 bytes: libinjection writes up to 8 fingerprint bytes
            m = withUnsafeMutableBytes(of: &fp) { f in
                v.withMemoryRebound(to: CChar.self) { c in
                    cinjection_sqli(c.baseAddress, c.count, f.baseAddress?.assumingMemoryBound(to: CChar.self))
                }
            } == 1
        case .xss: m = Transaction.detectXSS(v)
        case .eq(let p): m = parseLeadingInt(v) == p
        case .ge(let p): m = parseLeadingInt(v) >= p
        case .gt(let p): m = parseLeadingInt(v) > p
        case .le(let p): m = parseLeadingInt(v) <= p
        case .lt(let p): m = parseLeadingInt(v) < p
        case .streq(let p): m = v.elementsEqual(p)
        case .within(let p): m = v.isEmpty ? false : bytesFind(p, v) != nil
        case .contains(let p): m = bytesFind(v, p) != nil
        case .beginsWith(let p): m = v.starts(with: p)
        case .endsWith(let p): m = v.count >= p.count && v[(v.count - p.count)...].elementsEqual(p)
        }
        return m != plan.negated
    }
}
