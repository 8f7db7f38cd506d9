/// The literal prefilter: most rules look for words or punctuation a benign value never
/// contains. At load, every rule whose operator is a positive @rx with required literals
/// (`RegexLiterals`) or a positive @pm gets a bit; rules that share a transformation chain
/// share one Aho–Corasick automaton over all their literals. At run time each (chain, source)
/// pair — "ARGS values after t:urlDecodeUni,t:lowercase", say — is scanned once, which sets the
/// bits of every rule with a literal in some value of that source. A rule none of whose
/// sources has its bit set cannot match and is skipped without touching its values.
///
/// Most values are left as they are by most chains (a plain word has nothing to decode or
/// lowercase), so one value would be scanned byte for byte by twenty automata. Instead a value
/// a chain leaves unchanged is scanned once, by one automaton over the literals of every group
/// (`shared`), and each group takes the bits of its own rules from that (`groupMasks`); only a
/// value a chain changes is scanned by the group's automaton.
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
        /// REQUEST_HEADERS:User-Agent and :Referer, which many rules read alone: scanning every
        /// header for them would let a browser's `Accept: …xhtml+xml` wake the XSS rules.
        case userAgent, referer
        case requestBody

        /// Slots whose values arrive with the request body (rescanned for phase 2).
        static let bodySlots: [Slot] = [.argsPostValues, .argsPostNames, .fileValues, .fileNames, .requestBody]
    }
    static let slotCount = Slot.allCases.count
    static let userAgentKey = Array("user-agent".utf8), refererKey = Array("referer".utf8)

    /// The rules of one transformation chain.
    /// A class: the per-(group, source) scan reads one reference instead of copying three.
    final class Group: Sendable {
        let transforms: [Transform]
        let scanner: LiteralScanner
        /// The chain the scan applies: `transforms` without trailing `t:lowercase` steps (the
        /// scanner folds ASCII case as `t:lowercase` does, so they cannot change what it
        /// finds), and its chain id. A User-Agent that only lowercasing would change is then
        /// one shared scan instead of one scan per lowercasing chain.
        let scanChainID: Int
        let scanTransforms: [Transform]

        init(transforms: [Transform], scanner: LiteralScanner, chainID: ([Transform]) -> Int) {
            self.transforms = transforms
            self.scanner = scanner
            var scan = transforms
            while scan.last == .lowercase { scan.removeLast() }
            scanTransforms = scan
            scanChainID = chainID(scan)
        }
    }

    let groups: [Group]
    /// UInt64 words in one bitset (one bit per prefiltered rule).
    let words: Int
    /// Every group's literals in one automaton: scans a value once for all the chains that
    /// leave it unchanged.
    let shared: LiteralScanner
    /// Per group, `words` words: the bits of its rules.
    let groupMasks: [UInt64]

    /// What `literals(for:)` found for a rule link: its literals and the sources it reads (bit n:
    /// `Slot(rawValue: n)`), plus whether it also reads XML.
    struct Candidate {
        var literals: [Bytes]
        var slots: UInt32
        var xml: Bool
    }

    /// Rules that get a prefilter bit, with what `literals(for:)` found; sets their
    /// `Rule.prefilter`. `chainID` numbers a transformation chain (the loader's numbering,
    /// adding chains it has not seen).
    static func build(_ candidates: [(Rule, Candidate)], chainID: ([Transform]) -> Int) -> Prefilter? {
        if candidates.isEmpty { return nil }
        var groupOf: [Int: Int] = [:]
        var members: [[(Bytes, Int32)]] = []
        var chains: [[Transform]] = []
        for (bit, (r, c)) in candidates.enumerated() {
            let g: Int
            if let known = groupOf[r.transformChainID] { g = known } else {
                g = members.count
                groupOf[r.transformChainID] = g
                members.append([])
                chains.append(r.transforms)
            }
            r.prefilter = PrefilterProbe(bit: Int32(bit), group: Int32(g), slots: c.slots, xml: c.xml)
            for l in c.literals { members[g].append((l, Int32(bit))) }
        }
        let words = (candidates.count + 63) / 64
        var groups: [Group] = []
        var masks = [UInt64](repeating: 0, count: members.count * words)
        for g in members.indices {
            guard let scanner = LiteralScanner(members[g], words: words) else { return nil }  // too large to pack: no prefilter at all
            groups.append(Group(transforms: chains[g], scanner: scanner, chainID: chainID))
            for (_, bit) in members[g] { masks[g * words + Int(bit) >> 6] |= 1 << UInt64(bit & 63) }
        }
        guard let shared = LiteralScanner(members.flatMap { $0 }, words: words) else { return nil }
        return Prefilter(groups: groups, words: words, shared: shared, groupMasks: masks)
    }

    private init(groups: [Group], words: Int, shared: LiteralScanner, groupMasks: [UInt64]) {
        self.groups = groups
        self.words = words
        self.shared = shared
        self.groupMasks = groupMasks
    }

    /// The literals of a rule link and the sources it reads, or nil when it cannot be
    /// prefiltered: a negated operator, multiMatch, an operator other than @rx / @pm, a regex
    /// with no required literal, or a target the prefilter does not scan (TX, counts).
    static func literals(for r: Rule) -> Candidate? {
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
            case .headers:
                if !t.names, t.selector.kind == 1, let k = t.selector.exact.baseAddress {
                    let key = UnsafeBufferPointer(start: k, count: t.selector.exact.count)
                    if key.elementsEqual(Prefilter.userAgentKey) { add(.userAgent); continue }
                    if key.elementsEqual(Prefilter.refererKey) { add(.referer); continue }
                }
                add(t.names ? .headerNames : .headerValues)
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
            case .requestBody: add(.requestBody)
            case .xml: xml = true
            case .tx: return nil
            }
        }
        let lits: [Bytes]?
        switch r.op.kind {
        case .rx(let re): lits = RegexLiterals.required(re.pattern.latin1)
        case .pm(let ac): lits = ac.patterns.isEmpty ? nil : ac.patterns.map { $0.map(lowerByte) }
        default: lits = nil
        }
        guard let lits, !lits.contains(where: \.isEmpty) else { return nil }
        return Candidate(literals: lits, slots: mask, xml: xml)
    }
}

/// Aho–Corasick over the literals of many rules: for a value, sets the bit of every rule that
/// has a literal in it (ASCII case folded, as the literals are). Laid out so that a step
/// touches one cache line: the scan walks the automaton of a value per byte, and in the proxy
/// it starts each request with cold caches (a full rule set's automata are megabytes).
///
/// - Bytes are numbered by class: 0 for a byte no literal contains (the scan goes back to the
///   root without looking anything up), 1… for the others, upper case folded.
/// - A state is a handle: its kind and index, and whether it reports. Nodes with many edges
///   (the root and the shallow ones ordinary text keeps passing through) are dense: a row of
///   transitions per class, the failure chain already followed. The others have at most
///   `denseFrom - 1` edges, kept inline in their 16-byte record with the failure handle.
/// - What a state reports is one bitset (its literals' rules and those of its dictionary
///   suffixes, deduplicated across states), read only when the handle says it reports.
final class LiteralScanner: @unchecked Sendable {
    struct Sparse {
        var t0: UInt32 = 0, t1: UInt32 = 0
        var fail: UInt32 = 0
        /// The classes of the edges to `t0`, `t1` (0: no edge).
        var c0: UInt16 = 0, c1: UInt16 = 0
    }
    static let reportBit: UInt32 = 1 << 31
    static let denseBit: UInt32 = 1 << 30
    static let indexMask: UInt32 = (1 << 30) - 1
    /// Nodes with at least this many edges get a dense row (the root always does); a sparse
    /// record holds `denseFrom - 1` edges.
    static let denseFrom = 3

    private let classOf: UnsafeMutableBufferPointer<UInt16>
    /// Row width: the number of classes (class 0 included).
    private let classes: Int
    private let dense: UnsafeMutableBufferPointer<UInt32>
    private let sparse: UnsafeMutableBufferPointer<Sparse>
    /// The bitset (index into `sets`, in units of `words`) a reporting dense row / sparse record reports.
    private let denseOut: UnsafeMutableBufferPointer<UInt32>
    private let sparseOut: UnsafeMutableBufferPointer<UInt32>
    private let sets: UnsafeMutableBufferPointer<UInt64>
    /// The root's handle (dense row 0).
    private let root = LiteralScanner.denseBit
    /// Words in a rule bitset.
    let words: Int

    /// `literals`: (literal, rule bit < 64 * words). Nil when the automaton would not fit the
    /// handles (2^30 states).
    init?(_ literals: [(Bytes, Int32)], words: Int) {
        let trie = AhoCorasickTrie(literals)
        let edgeLists = trie.edges, fail = trie.fail, out = trie.outputs
        guard edgeLists.count < 1 << 30, words > 0 else { return nil }
        self.words = words
        // Byte classes: every byte some literal contains (the trie folded case), both cases alike.
        var cls = [UInt16](repeating: 0, count: 256)
        var byteOfClass: [UInt8] = [0]
        for e in edgeLists {
            for (c, _) in e where cls[Int(c)] == 0 {
                cls[Int(c)] = UInt16(byteOfClass.count)
                byteOfClass.append(c)
            }
        }
        for c in 65...90 where cls[c + 32] != 0 { cls[c] = cls[c + 32] }
        classes = byteOfClass.count
        // Distinct output bitsets.
        var setIndex: [[UInt64]: Int] = [:]
        var setList: [[UInt64]] = []
        var nodeSet = [Int](repeating: -1, count: edgeLists.count)
        for n in edgeLists.indices where !out[n].isEmpty {
            var b = [UInt64](repeating: 0, count: words)
            for bit in out[n] where bit >= 0 && Int(bit) < 64 * words { b[Int(bit) >> 6] |= 1 << UInt64(bit & 63) }
            if let k = setIndex[b] { nodeSet[n] = k } else { setIndex[b] = setList.count; nodeSet[n] = setList.count; setList.append(b) }
        }
        // Handles, dense rows and sparse records each numbered breadth first: the shallow
        // states a scan of ordinary text keeps returning to sit together in memory.
        func isDense(_ n: Int) -> Bool { n == 0 || edgeLists[n].count >= LiteralScanner.denseFrom }
        var handle = [UInt32](repeating: 0, count: edgeLists.count)
        var denseNodes: [Int] = [], sparseNodes: [Int] = []
        for old in trie.order {
            let n = Int(old)
            let reports = nodeSet[n] >= 0 ? LiteralScanner.reportBit : 0
            if isDense(n) {
                handle[n] = LiteralScanner.denseBit | UInt32(denseNodes.count) | reports
                denseNodes.append(n)
            } else {
                handle[n] = UInt32(sparseNodes.count) | reports
                sparseNodes.append(n)
            }
        }
        classOf = .allocate(capacity: 256)
        _ = classOf.initialize(from: cls)
        dense = .allocate(capacity: max(1, denseNodes.count * classes))
        _ = dense.initialize(from: repeatElement(LiteralScanner.denseBit, count: dense.count))
        sparse = .allocate(capacity: max(1, sparseNodes.count))
        _ = sparse.initialize(from: repeatElement(Sparse(), count: sparse.count))
        denseOut = .allocate(capacity: max(1, denseNodes.count))
        _ = denseOut.initialize(from: repeatElement(0, count: denseOut.count))
        sparseOut = .allocate(capacity: max(1, sparseNodes.count))
        _ = sparseOut.initialize(from: repeatElement(0, count: sparseOut.count))
        sets = .allocate(capacity: max(1, setList.count * words))
        _ = sets.initialize(from: repeatElement(0, count: sets.count))
        for (i, b) in setList.enumerated() { for w in 0..<words { sets[i * words + w] = b[w] } }
        for (row, n) in denseNodes.enumerated() {
            for k in 1..<classes { dense[row * classes + k] = handle[Int(trie.step(Int32(n), byteOfClass[k]))] }
            denseOut[row] = UInt32(max(0, nodeSet[n]))
        }
        for (i, n) in sparseNodes.enumerated() {
            var r = Sparse(fail: handle[Int(fail[n])])
            let e = edgeLists[n]
            if e.count > 0 { r.c0 = cls[Int(e[0].0)]; r.t0 = handle[Int(e[0].1)] }
            if e.count > 1 { r.c1 = cls[Int(e[1].0)]; r.t1 = handle[Int(e[1].1)] }
            sparse[i] = r
            sparseOut[i] = UInt32(max(0, nodeSet[n]))
        }
    }

    deinit {
        classOf.deallocate(); dense.deallocate(); sparse.deallocate(); denseOut.deallocate(); sparseOut.deallocate(); sets.deallocate()
    }

    /// ORs into `bits` (`words` words) the bit of every rule with a literal in `s`.
    func scan(_ s: UnsafeBufferPointer<UInt8>, into bits: UnsafeMutablePointer<UInt64>) {
        var h = root
        for raw in s {
            let k = classOf[Int(raw)]
            if k == 0 { h = root; continue }
            while true {
                let i = Int(h & LiteralScanner.indexMask)
                if h & LiteralScanner.denseBit != 0 { h = dense[i &* classes &+ Int(k)]; break }
                let nd = sparse[i]
                if nd.c0 == k { h = nd.t0; break }
                if nd.c1 == k { h = nd.t1; break }
                h = nd.fail
            }
            if h & LiteralScanner.reportBit != 0 {
                let i = Int(h & LiteralScanner.indexMask)
                let base = Int(h & LiteralScanner.denseBit != 0 ? denseOut[i] : sparseOut[i]) * words
                for w in 0..<words { bits[w] |= sets[base + w] }
            }
        }
    }
}

/// A rule link's prefilter facts as plain data (`Rule.prefilter`). The rule loop keeps the
/// starters' in one array per phase (`RuleSet.probes`), so it rejects most rules of a
/// benign request without touching the rules themselves: no reference counting, and a few
/// contiguous bytes per rule instead of several cache lines of a rule object.
struct PrefilterProbe {
    /// The link's bit (-1: not prefiltered, also when the bit or group would not fit here:
    /// the rule is then evaluated as if it had no prefilter bit).
    let bit: Int16
    let group: UInt16
    /// The sources (bit n: `Prefilter.Slot(rawValue: n)`), plus `xmlFlag` and `markerFlag`.
    private let packed: UInt32
    static let xmlFlag: UInt32 = 1 << 30
    /// A SecMarker: every phase's list holds every marker (skipAfter targets), and visiting
    /// one does nothing, so the loop passes over it without touching it either.
    static let markerFlag: UInt32 = 1 << 31

    init(bit: Int32 = -1, group: Int32 = 0, slots: UInt32 = 0, xml: Bool = false, marker: Bool = false) {
        let fits = bit >= 0 && bit <= Int32(Int16.max) && group >= 0 && group <= Int32(UInt16.max) && slots < PrefilterProbe.xmlFlag
        self.bit = fits ? Int16(bit) : -1
        self.group = fits ? UInt16(group) : 0
        packed = (fits ? slots : 0) | (xml ? PrefilterProbe.xmlFlag : 0) | (marker ? PrefilterProbe.markerFlag : 0)
    }

    var slots: UInt32 { packed & (PrefilterProbe.xmlFlag - 1) }
    var xml: Bool { packed & PrefilterProbe.xmlFlag != 0 }
    var marker: Bool { packed & PrefilterProbe.markerFlag != 0 }
}

extension Transaction {
    /// False when the rule link has a prefilter bit and no source it reads contains one of
    /// its literals (after its transformations): the link cannot match.
    @inline(__always)
    func prefilterMayMatch(_ probe: PrefilterProbe) -> Bool {
        guard let pf = rs.prefilter, probe.bit >= 0 else { return true }
        if probe.xml, xmlText != nil || !xmlAttributes.isEmpty { return true }
        let bit = Int(probe.bit)
        let word = bit >> 6, mask: UInt64 = 1 << UInt64(bit & 63)
        var slots = probe.slots
        let group = Int(probe.group)
        while slots != 0 {
            let s = slots.trailingZeroBitCount
            slots &= slots - 1
            // The (group, slot) pair is usually scanned already: look its offset up here.
            let key = group * Prefilter.slotCount + s
            let known = key < prefilterOffsets.count ? Int(prefilterOffsets[key]) : -1
            let off = known >= 0 ? known : prefilterBits(pf, group: group, slot: s)
            if let pool = prefilterPool, pool[off + word] & mask != 0 { return true }
        }
        return false
    }

    /// The offset in `prefilterPool` of the rule bits for (group, slot), scanning on first use.
    func prefilterBits(_ pf: Prefilter, group: Int, slot: Int) -> Int {
        if prefilterOffsets.isEmpty {
            prefilterOffsets = [Int32](repeating: -1, count: pf.groups.count * Prefilter.slotCount)
            slotUnions = [SlotUnion](repeating: SlotUnion(), count: Prefilter.slotCount)
        }
        let key = group * Prefilter.slotCount + slot
        let known = prefilterOffsets[key]
        if known >= 0 { return Int(known) }
        let off = newBits(pf)
        prefilterOffsets[key] = Int32(off)
        let g = pf.groups[group]
        let words = pf.words
        let triggers = g.scanChainID < rs.chainTriggers.count ? rs.chainTriggers[g.scanChainID] : ~0
        if usePrefilterSharing {
            // Every value of the slot passes this chain unchanged (one AND over the union of
            // their byte summaries): the slot's shared scans, this group's rules of them.
            let union = slotUnion(pf, slot)
            if union.summary & triggers == 0 {
                if let p = prefilterPool {
                    pf.groupMasks.withUnsafeBufferPointer { m in
                        for w in 0..<words { p[off + w] = p[Int(union.bits) + w] & m[group * words + w] }
                    }
                }
                return off
            }
        }
        forEachSlotValue(slot) { value, id in
            let tv = g.scanTransforms.isEmpty ? value : transformed(value, id: id, chainID: g.scanChainID, transforms: g.scanTransforms)
            if tv == value, usePrefilterSharing {
                // Unchanged by this chain: the value's shared scan, this group's rules of it.
                let raw = sharedBits(pf, value, id)
                guard let p = prefilterPool else { return }
                pf.groupMasks.withUnsafeBufferPointer { m in
                    for w in 0..<words { p[off + w] |= p[raw + w] & m[group * words + w] }
                }
                return
            }
            if let p = prefilterPool { g.scanner.scan(buffer(tv), into: p + off) }
        }
        return off
    }

    /// Per slot, once: the OR of its values' byte summaries and the offset of the OR of their
    /// shared scans.
    private func slotUnion(_ pf: Prefilter, _ slot: Int) -> SlotUnion {
        let known = slotUnions[slot]
        if known.bits >= 0 { return known }
        let off = newBits(pf)
        var summary: UInt32 = 0
        forEachSlotValue(slot) { value, id in
            summary |= self.summary(value, id: id).packed
            let raw = sharedBits(pf, value, id)
            if let p = prefilterPool { for w in 0..<pf.words { p[off + w] |= p[raw + w] } }
        }
        let u = SlotUnion(summary: summary, bits: Int32(off))
        slotUnions[slot] = u
        return u
    }

    /// Calls `body` with every value of slot `slot` and its cache id, as the rules reading
    /// that source see them before transformation.
    private func forEachSlotValue(_ slot: Int, _ body: (Span, Int) -> Void) {
        func list(_ l: [Entry], names: Bool) {
            for e in l { body(names ? e.key : e.value, names ? e.id &+ 1 : e.id) }
        }
        func header(_ lower: Bytes) {
            for e in headers where spanEquals(e.keyLower, lower) { body(e.value, e.id) }
        }
        func scalar(_ k: Scalar, _ bytes: Bytes) {
            var s = scalarSpans[k.rawValue]
            if !s.exists { s = store(bytes); scalarSpans[k.rawValue] = s }
            body(s, k.id)
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
        case .userAgent?: header(Prefilter.userAgentKey)
        case .referer?: header(Prefilter.refererKey)
        case .requestBody?:
            if requestBodyVisible { scalar(.requestBody, requestBody) }
            // Otherwise rules see no REQUEST_BODY (a JSON or multipart body): nothing to scan.
            // A ctl that changes that forgets this slot (`resetPrefilterSlot`).
        case nil: break
        }
    }

    /// The offset in `prefilterPool` of the shared scan of value `id` (untransformed), scanning
    /// on first use.
    private func sharedBits(_ pf: Prefilter, _ value: Span, _ id: Int) -> Int {
        if id >= sharedScanOffsets.count {
            sharedScanOffsets.append(contentsOf: repeatElement(-1, count: id + 64 - sharedScanOffsets.count))
        }
        let known = sharedScanOffsets[id]
        if known >= 0 { return Int(known) }
        let off = newBits(pf)
        sharedScanOffsets[id] = Int32(off)
        if let p = prefilterPool { pf.shared.scan(buffer(value), into: p + off) }
        return off
    }

    /// A zeroed rule bitset at the end of `prefilterPool`: its offset. The pool may move:
    /// pointers into it are taken after this call.
    private func newBits(_ pf: Prefilter) -> Int {
        let off = prefilterPoolCount, words = pf.words
        if off + words > prefilterPoolCapacity {
            let cap = max(prefilterPoolCapacity * 2, off + words, 256 * words)
            let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
            if let old = prefilterPool {
                grown.update(from: old, count: off)
                old.deallocate()
            }
            prefilterPool = grown
            prefilterPoolCapacity = cap
        }
        prefilterPool?.advanced(by: off).initialize(repeating: 0, count: words)
        prefilterPoolCount = off + words
        return off
    }

    /// Slot `s` changed (a ctl made REQUEST_BODY visible or hid it): scanned again when next asked for.
    func resetPrefilterSlot(_ s: Prefilter.Slot) {
        guard let pf = rs.prefilter, !prefilterOffsets.isEmpty else { return }
        for g in pf.groups.indices { prefilterOffsets[g * Prefilter.slotCount + s.rawValue] = -1 }
        slotUnions[s.rawValue] = SlotUnion()
    }

    /// The body arrived: its slots are scanned again when next asked for.
    func resetBodyPrefilter() {
        for s in Prefilter.Slot.bodySlots { resetPrefilterSlot(s) }
    }
}
