/// The literal prefilter: most rules look for words or punctuation a benign value never
/// contains. At load, every rule whose operator is a positive @rx with required literals
/// (`RegexLiterals`) or a positive @pm gets a bit; rules that share a transformation chain
/// share one Aho–Corasick automaton over all their literals. At run time each (chain, source)
/// pair — "ARGS values after t:urlDecodeUni,t:lowercase", say — is scanned once, which sets the
/// bits of every rule with a literal in some value of that source. A rule none of whose
/// sources has its bit set cannot match and is skipped without touching its values.
///
/// Like `FastPlan` it is only a filter: a set bit means "maybe" and the rule runs as before.
/// It may over-approximate (a value the rule's key selector or exclusions leave out still
/// counts), never under-approximate: the scan sees exactly the transformed bytes the operator
/// would see, and the literal sets are required by construction.
final class Prefilter: @unchecked Sendable {
    /// Where a rule's values come from, as far as the prefilter is concerned.
    enum Slot: Int, CaseIterable {
        case argsGetValues, argsGetNames, argsPostValues, argsPostNames, headerValues, headerNames
        case cookieValues, cookieNames, fileValues, fileNames
        case filename, basename, uri, uriRaw, requestLine, method, proto, queryString

        /// Slots whose values arrive with the request body (rescanned for phase 2).
        static let bodySlots: [Slot] = [.argsPostValues, .argsPostNames, .fileValues, .fileNames]
    }
    static let slotCount = Slot.allCases.count

    /// The rules of one transformation chain.
    struct Group {
        let chainID: Int
        let transforms: [Transform]
        let scanner: LiteralScanner
    }

    let groups: [Group]
    /// UInt64 words in one bitset (one bit per prefiltered rule).
    let words: Int

    /// Rules that get a prefilter bit, with their literals: (rule, literals).
    static func build(_ candidates: [(Rule, [Bytes])]) -> Prefilter? {
        if candidates.isEmpty { return nil }
        var groupOf: [Int: Int] = [:]
        var members: [[(Bytes, Int32)]] = []
        var chains: [(Int, [Transform])] = []
        for (bit, (r, literals)) in candidates.enumerated() {
            let g: Int
            if let known = groupOf[r.transformChainID] { g = known } else {
                g = members.count
                groupOf[r.transformChainID] = g
                members.append([])
                chains.append((r.transformChainID, r.transforms))
            }
            r.prefilterBit = Int32(bit)
            r.prefilterGroup = Int32(g)
            for l in literals { members[g].append((l, Int32(bit))) }
        }
        let groups = members.indices.map { g in
            Group(chainID: chains[g].0, transforms: chains[g].1, scanner: LiteralScanner(members[g]))
        }
        return Prefilter(groups: groups, words: (candidates.count + 63) / 64)
    }

    private init(groups: [Group], words: Int) {
        self.groups = groups
        self.words = words
    }

    /// The literals of a rule link, or nil when it cannot be prefiltered: a negated operator, multiMatch,
    /// an operator other than @rx / @pm, a regex with no required literal, or a target the
    /// prefilter does not scan (TX, counts, REQUEST_BODY, …). Sets `prefilterSlots`.
    static func literals(for r: Rule) -> [Bytes]? {
        guard let plan = r.fast, !plan.negated, !plan.multiMatch else { return nil }
        var mask: UInt32 = 0
        var xml = false
        for t in plan.targets {
            if t.count { return nil }
            func add(_ s: Slot) { mask |= 1 << UInt32(s.rawValue) }
            switch t.source {
            case .argsGet:
                add(t.names ? .argsGetNames : .argsGetValues)
                if t.alsoPost { add(t.names ? .argsPostNames : .argsPostValues) }
            case .argsPost: add(t.names ? .argsPostNames : .argsPostValues)
            case .headers: add(t.names ? .headerNames : .headerValues)
            case .cookies: add(t.names ? .cookieNames : .cookieValues)
            case .files: add(t.names ? .fileNames : .fileValues)
            case .filename: add(.filename)
            case .basename: add(.basename)
            case .uri: add(.uri)
            case .uriRaw: add(.uriRaw)
            case .requestLine: add(.requestLine)
            case .method: add(.method)
            case .proto: add(.proto)
            case .queryString: add(.queryString)
            case .xml: xml = true
            case .requestBody, .tx: return nil
            }
        }
        let lits: [Bytes]?
        switch r.op.kind {
        case .rx(let re): lits = RegexLiterals.required(re.pattern.latin1)
        case .pm(let ac): lits = ac.patterns.isEmpty ? nil : ac.patterns.map { $0.map(lowerByte) }
        default: lits = nil
        }
        guard let lits, !lits.contains(where: \.isEmpty) else { return nil }
        r.prefilterSlots = mask
        r.prefilterXML = xml
        return lits
    }
}

/// Aho–Corasick over the literals of many rules: for a value, sets the bit of every rule that
/// has a literal in it (ASCII case folded, as the literals are).
final class LiteralScanner: @unchecked Sendable {
    private let rootNext: [Int32]
    private let edgeStart: [Int32]
    private let edgeBytes: [UInt8]
    private let edgeTargets: [Int32]
    private let fail: [Int32]
    /// Node n reports the rule bits outBits[outStart[n] ..< outStart[n + 1]] (its own literals
    /// and those ending at its dictionary suffixes).
    private let outStart: [Int32]
    private let outBits: [Int32]

    init(_ literals: [(Bytes, Int32)]) {
        var edges: [[(UInt8, Int32)]] = [[]]
        var direct: [[Int32]] = [[]]
        func child(_ node: Int32, _ c: UInt8) -> Int32? {
            for (k, v) in edges[Int(node)] where k == c { return v }
            return nil
        }
        for (lit, bit) in literals where !lit.isEmpty {
            var node: Int32 = 0
            for raw in lit {
                let c = lowerByte(raw)
                if let nx = child(node, c) { node = nx; continue }
                let n = Int32(edges.count)
                edges.append([]); direct.append([])
                edges[Int(node)].append((c, n))
                node = n
            }
            if !direct[Int(node)].contains(bit) { direct[Int(node)].append(bit) }
        }
        var fail = [Int32](repeating: 0, count: edges.count)
        var out = direct
        var queue: [Int32] = edges[0].map { $0.1 }
        var qi = 0
        while qi < queue.count {
            let u = queue[qi]; qi += 1
            for (c, v) in edges[Int(u)] {
                var f = fail[Int(u)]
                while f != 0, child(f, c) == nil { f = fail[Int(f)] }
                var target = child(f, c) ?? 0
                if target == v { target = 0 }
                fail[Int(v)] = target
                // BFS order: the suffix's outputs are complete before v's are merged.
                for b in out[Int(target)] where !out[Int(v)].contains(b) { out[Int(v)].append(b) }
                queue.append(v)
            }
        }
        var root = [Int32](repeating: 0, count: 256)
        for (c, n) in edges[0] { root[Int(c)] = n }
        var start: [Int32] = [0], bytes: [UInt8] = [], targets: [Int32] = []
        var oStart: [Int32] = [0], oBits: [Int32] = []
        for n in edges.indices {
            for (c, t) in edges[n] { bytes.append(c); targets.append(t) }
            start.append(Int32(bytes.count))
            oBits.append(contentsOf: out[n])
            oStart.append(Int32(oBits.count))
        }
        rootNext = root; edgeStart = start; edgeBytes = bytes; edgeTargets = targets
        self.fail = fail; outStart = oStart; outBits = oBits
    }

    /// ORs into `bits` the bit of every rule with a literal in `s`.
    func scan(_ s: UnsafeBufferPointer<UInt8>, into bits: UnsafeMutablePointer<UInt64>) {
        rootNext.withUnsafeBufferPointer { root in
        edgeStart.withUnsafeBufferPointer { start in
        edgeBytes.withUnsafeBufferPointer { eb in
        edgeTargets.withUnsafeBufferPointer { et in
        fail.withUnsafeBufferPointer { fail in
        outStart.withUnsafeBufferPointer { os in
        outBits.withUnsafeBufferPointer { ob in
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
                var o = Int(os[Int(node)])
                let oe = Int(os[Int(node) + 1])
                while o < oe {
                    let b = Int(ob[o])
                    bits[b >> 6] |= 1 << UInt64(b & 63)
                    o += 1
                }
            }
        }}}}}}}
    }
}

extension Transaction {
    /// False when the rule link has a prefilter bit and no source it reads contains one of
    /// its literals (after its transformations): the link cannot match.
    @inline(__always)
    func prefilterMayMatch(_ r: Rule) -> Bool {
        guard let pf = rs.prefilter else { return true }
        if r.prefilterXML, xmlText != nil || !xmlAttributes.isEmpty { return true }
        let bit = Int(r.prefilterBit)
        let word = bit >> 6, mask: UInt64 = 1 << UInt64(bit & 63)
        var slots = r.prefilterSlots
        while slots != 0 {
            let s = slots.trailingZeroBitCount
            slots &= slots - 1
            let off = prefilterBits(pf, group: Int(r.prefilterGroup), slot: s)
            if prefilterPool[off + word] & mask != 0 { return true }
        }
        return false
    }

    /// The offset in `prefilterPool` of the rule bits for (group, slot), scanning on first use.
    private func prefilterBits(_ pf: Prefilter, group: Int, slot: Int) -> Int {
        if prefilterOffsets.isEmpty {
            prefilterOffsets = [Int32](repeating: -1, count: pf.groups.count * Prefilter.slotCount)
        }
        let key = group * Prefilter.slotCount + slot
        let known = prefilterOffsets[key]
        if known >= 0 { return Int(known) }
        let off = prefilterPool.count
        for _ in 0..<pf.words { prefilterPool.append(0) }
        prefilterOffsets[key] = Int32(off)
        let g = pf.groups[group]
        func scan(_ value: Span, _ id: Int) {
            let tv = g.transforms.isEmpty ? value : transformed(value, id: id, chainID: g.chainID, transforms: g.transforms)
            let buf = buffer(tv)
            prefilterPool.withUnsafeMutableBufferPointer { p in
                if let base = p.baseAddress { g.scanner.scan(buf, into: base + off) }
            }
        }
        func list(_ l: [Entry], names: Bool) {
            for e in l { scan(names ? e.key : e.value, names ? e.id &+ 1 : e.id) }
        }
        func scalar(_ k: Scalar, _ bytes: Bytes) {
            var s = scalarSpans[k.rawValue]
            if !s.exists { s = store(bytes); scalarSpans[k.rawValue] = s }
            scan(s, k.id)
        }
        switch Prefilter.Slot(rawValue: slot) {
        case .argsGetValues?: list(argsGet, names: false)
        case .argsGetNames?: list(argsGet, names: true)
        case .argsPostValues?: list(argsPost, names: false)
        case .argsPostNames?: list(argsPost, names: true)
        case .headerValues?: list(headers, names: false)
        case .headerNames?: list(headers, names: true)
        case .cookieValues?: list(cookies, names: false)
        case .cookieNames?: list(cookies, names: true)
        case .fileValues?: list(files, names: false)
        case .fileNames?: list(files, names: true)
        case .filename?: scalar(.filename, filename)
        case .basename?: scalar(.basename, basename)
        case .uri?: scalar(.uri, uri)
        case .uriRaw?: scalar(.uriRaw, uriRaw)
        case .requestLine?: scalar(.requestLine, requestLine)
        case .method?: scalar(.method, method)
        case .proto?: scalar(.proto, proto)
        case .queryString?: scalar(.queryString, queryString)
        case nil: break
        }
        return off
    }

    /// The body arrived: its slots are scanned again when next asked for.
    func resetBodyPrefilter() {
        guard let pf = rs.prefilter, !prefilterOffsets.isEmpty else { return }
        for g in pf.groups.indices {
            for s in Prefilter.Slot.bodySlots { prefilterOffsets[g * Prefilter.slotCount + s.rawValue] = -1 }
        }
    }
}
