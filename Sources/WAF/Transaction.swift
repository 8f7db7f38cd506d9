import CInjection
import CPCRE2

/// What a rule decided for the request: ModSecurity's intervention.
public struct Intervention: Sendable, Equatable {
    public var status: Int
    public var redirect: String?
    public var drop: Bool
    public var ruleID: Int
    public var phase: Int
}

/// A run of bytes in the transaction's arena (`count < 0`: absent). Plain integers, so the
/// values rules look at move through the evaluator without reference counting.
struct Span: Equatable {
    var start: Int
    var count: Int
    static let none = Span(start: 0, count: -1)
    static let empty = Span(start: 0, count: 0)
    @inline(__always) var exists: Bool { count >= 0 }
}

/// One argument, header, cookie or file entry; its bytes live in the arena.
struct Entry {
    var key: Span
    /// The key in ASCII lowercase (keys compare case-insensitively, as in ModSecurity).
    var keyLower: Span
    var value: Span
    /// Transformation cache id of the value (the name's is `id + 1`).
    var id: Int
}

/// A value a target produced, before transformation.
struct Value {
    var collection: Collection
    /// The key (`none` for scalars).
    var key: Span
    var value: Span
    /// Transformation cache id (-1: not cached).
    var id: Int
}

/// Keyed variable store (TX, IP, …): case-insensitive keys, original spelling kept.
///
/// The TX keys a rule set names (`TxKeyTable`, interned at load) live in `fixed`, indexed by
/// their id: the hundred-odd setvars, macro expansions and TX reads of a CRS request then
/// index an array instead of hashing a string. Keys built at run time (`tx.header_name_%{tx.0}`)
/// and the keys of persistent collections live in `map`. Every id-based call also gets the
/// lowercase key, so a store without the table (a collection loaded by initcol) still works.
struct VarStore {
    struct Slot {
        var key: Bytes = []
        var value: Bytes = []
        var isSet = false
        /// Which write set this slot (readers cache by it; 0: never written).
        var stamp: UInt32 = 0
    }
    let table: TxKeyTable?
    private(set) var map: [String: (key: Bytes, value: Bytes)] = [:]
    private(set) var fixed: [Slot] = []
    private var writes: UInt32 = 0

    init(table: TxKeyTable? = nil, reserve: Int = 0) {
        self.table = table
        if let table, table.count > 0 { fixed = [Slot](repeating: Slot(), count: table.count) }
        if reserve > 0 { map.reserveCapacity(reserve) }
    }

    /// The slot of a key: `id` when it is one of this store's slots, the interned id of `kl`
    /// when `id` is negative (a key computed at run time may still be a named one), else nil.
    @inline(__always) private func slotIndex(_ id: Int, _ kl: String) -> Int? {
        if id >= 0 { return id < fixed.count ? id : nil }
        guard let table, let i = table.ids[kl], i < fixed.count else { return nil }
        return i
    }

    /// The entry under lowercase key `kl`, interned as `id` (negative: not interned at load).
    @inline(__always) func entry(id: Int = -1, _ kl: String) -> (key: Bytes, value: Bytes)? {
        if let i = slotIndex(id, kl) { let s = fixed[i]; return s.isSet ? (s.key, s.value) : nil }
        return map[kl]
    }

    /// Whether `id` (or -1) is below the number of this store's slots.
    @inline(__always) func hasSlot(_ id: Int) -> Bool { id < fixed.count }

    /// Appends the value of slot `i` (nothing when unset), read in place.
    @inline(__always) func appendValue(slot i: Int, to out: inout Bytes) {
        guard i >= 0, i < fixed.count, fixed[i].isSet else { return }
        fixed[i].value.withUnsafeBufferPointer { out.append(contentsOf: $0) }
    }

    /// Whether slot `id` is set and which write set it, without copying its bytes; nil when
    /// `id` is not one of this store's slots.
    @inline(__always) func slotState(id: Int) -> (isSet: Bool, stamp: UInt32)? {
        id >= 0 && id < fixed.count ? (fixed[id].isSet, fixed[id].stamp) : nil
    }

    mutating func set(id: Int = -1, lower kl: String, _ key: Bytes, _ v: Bytes) {
        if let i = slotIndex(id, kl) {
            writes &+= 1
            fixed[i] = Slot(key: key, value: v, isSet: true, stamp: writes)
        } else {
            map[kl] = (key, v)
        }
    }

    /// The leading integer of the value under `kl` (nil: unset), read in place.
    @inline(__always) func number(id: Int = -1, _ kl: String) -> Int? {
        if let i = slotIndex(id, kl) {
            guard fixed[i].isSet else { return nil }
            return fixed[i].value.withUnsafeBufferPointer { parseLeadingInt($0) }
        }
        return map[kl].map { parseLeadingInt($0.value) }
    }

    /// `setvar:c.key=+n` / `=-n`: the stored number (0 if unset) plus or minus `delta`, wrapping.
    mutating func add(id: Int = -1, lower kl: String, _ key: Bytes, _ delta: Int, subtract: Bool) {
        let cur = number(id: id, kl) ?? 0
        let n = subtract ? cur.subtractingReportingOverflow(delta).partialValue : cur.addingReportingOverflow(delta).partialValue
        set(id: id, lower: kl, key, n.bytes)
    }

    mutating func remove(id: Int = -1, lower kl: String) {
        if let i = slotIndex(id, kl) {
            writes &+= 1
            fixed[i] = Slot(key: [], value: [], isSet: false, stamp: writes)
        } else {
            map[kl] = nil
        }
    }

    /// Every set entry with its lowercase key: interned keys in id order, then the others.
    /// `candidates` (ascending ids): of the interned keys, only these.
    func forEach(candidates: [Int]? = nil, _ body: (String, (key: Bytes, value: Bytes)) -> Void) {
        if let table {
            for j in 0..<(candidates?.count ?? fixed.count) {
                let i = candidates?[j] ?? j
                if i < fixed.count && fixed[i].isSet { body(table.names[i], (fixed[i].key, fixed[i].value)) }
            }
        }
        for (kl, kv) in map { body(kl, kv) }
    }
}

/// The TX keys a rule set names (setvar targets, `%{tx.x}` macros, `TX:x` targets), lowercase,
/// numbered at load. Filled only while its `Loader` runs, read-only once the rule set exists.
final class TxKeyTable: @unchecked Sendable {
    private(set) var ids: [String: Int] = [:]
    private(set) var names: [String] = []
    var count: Int { names.count }

    /// The id of lowercase key `kl`, numbering it if new. Load time only.
    func intern(_ kl: String) -> Int {
        if let id = ids[kl] { return id }
        ids[kl] = names.count
        names.append(kl)
        return names.count - 1
    }
}

/// The fixed scalars whose transformations are cached (id = 2 * case + 2).
enum Scalar: Int, CaseIterable {
    case filename, basename, uri, uriRaw, requestLine, method, proto, queryString, requestBody, xmlText, responseBody
    static let count = allCases.count
    var id: Int { 2 * rawValue + 2 }
}

/// Per-collection variable stores, indexed by collection case (no hashing). Every write
/// goes through a subscript setter, which counts it in `writes` (a persistent collection
/// nobody wrote to is not saved back).
struct CollectionMap {
    static let size = Collection.allCases.count
    private(set) var slots = [VarStore](repeating: VarStore(), count: CollectionMap.size)
    private(set) var writes = [UInt32](repeating: 0, count: CollectionMap.size)
    subscript(_ c: Collection) -> VarStore? {
        get { slots[c.ordinal] }
        set { writes[c.ordinal] &+= 1; slots[c.ordinal] = newValue ?? VarStore() }
    }
    subscript(_ c: Collection, default d: @autoclosure () -> VarStore) -> VarStore {
        get { slots[c.ordinal] }
        _modify { writes[c.ordinal] &+= 1; yield &slots[c.ordinal] }
    }
    /// Counts a change that is not a variable write (an expirevar deadline).
    mutating func touch(_ c: Collection) { writes[c.ordinal] &+= 1 }
}

/// One request's evaluation state (ModSecurity's Transaction). Confined to one thread.
public final class Transaction {
    let rs: RuleSet
    @exclusivity(unchecked) public private(set) var mode: EngineMode
    public let requestID: String
    let clientAddress: String
    let clientPort: Int
    let serverAddress: String
    let serverPort: Int
    let startNanos: UInt64

    // Request line and headers.
    @exclusivity(unchecked) var method: Bytes = []
    @exclusivity(unchecked) var uriRaw: Bytes = []
    @exclusivity(unchecked) var uri: Bytes = []
    @exclusivity(unchecked) var filename: Bytes = []
    @exclusivity(unchecked) var basename: Bytes = []
    @exclusivity(unchecked) var queryString: Bytes = []
    @exclusivity(unchecked) var proto: Bytes = []
    @exclusivity(unchecked) var requestLine: Bytes = []
    @exclusivity(unchecked) var hostname = ""
    @exclusivity(unchecked) var headers: [Entry] = []
    @exclusivity(unchecked) var cookies: [Entry] = []
    @exclusivity(unchecked) var argsGet: [Entry] = []
    @exclusivity(unchecked) var argsPost: [Entry] = []
    @exclusivity(unchecked) var files: [Entry] = []
    @exclusivity(unchecked) var filesSizes: [Entry] = []
    @exclusivity(unchecked) var partHeaders: [Entry] = []
    @exclusivity(unchecked) var partHeadersPending: [(Bytes, Bytes)] = []
    @exclusivity(unchecked) var xmlText: Bytes?
    @exclusivity(unchecked) var xmlAttributes: [Bytes] = []
    @exclusivity(unchecked) var requestBody: Bytes = []
    @exclusivity(unchecked) var requestBodyLength = 0
    @exclusivity(unchecked) var bodyProcessor: String?
    @exclusivity(unchecked) var forceRequestBodyVariable = false
    /// Whether rules see REQUEST_BODY: raw and urlencoded bodies, others only when forced.
    var requestBodyVisible: Bool { bodyProcessor == nil || bodyProcessor == "URLENCODED" || forceRequestBodyVariable }
    @exclusivity(unchecked) public private(set) var requestBodyAccess: Bool
    @exclusivity(unchecked) public private(set) var requestBodyLimit: Int
    @exclusivity(unchecked) var bodyLimitExceeded = false
    @exclusivity(unchecked) var flags: [Collection: Int] = [:]
    @exclusivity(unchecked) var reqbodyErrorMsg: Bytes = []
    @exclusivity(unchecked) var collections = CollectionMap()

    // Response.
    @exclusivity(unchecked) var responseStatus: Bytes = []
    @exclusivity(unchecked) var responseProtocol: Bytes = []
    @exclusivity(unchecked) var responseHeaders: [Entry] = []
    @exclusivity(unchecked) var responseBody: Bytes = []
    @exclusivity(unchecked) public private(set) var responseBodyAccess: Bool

    // Match state.
    /// MATCHED_VAR: the last matched value after transformation.
    @exclusivity(unchecked) var matchedVar: Span = .empty
    /// The last matched value; its name (MATCHED_VAR_NAME) is built only when asked for.
    @exclusivity(unchecked) var matchedValue: Value?
    @exclusivity(unchecked) var matchedVarNameCache: Bytes?
    var matchedVarName: Bytes {
        if let n = matchedVarNameCache { return n }
        let n = matchedValue.map { name($0) } ?? []
        matchedVarNameCache = n
        return n
    }
    /// MATCHED_VARS: matches not yet turned into entries (done when a rule reads the collection).
    @exclusivity(unchecked) var pendingMatchedVars: [(Value, Span)] = []
    @exclusivity(unchecked) var matchedVarsBuilt: [Entry] = []
    var matchedVars: [Entry] {
        if !pendingMatchedVars.isEmpty {
            for (v, tv) in pendingMatchedVars {
                let n = name(v)
                matchedVarsBuilt.append(Entry(key: store(n), keyLower: store(asciiLower(n)), value: tv, id: -1))
            }
            pendingMatchedVars.removeAll(keepingCapacity: true)
        }
        return matchedVarsBuilt
    }
    /// The chain starter being evaluated. Unowned: the rule set (`rs`) keeps every rule alive
    /// for the transaction's life, and setting it per rule then costs no reference counting.
    @exclusivity(unchecked) unowned(unsafe) var currentRule: Rule?
    /// The operator whose parameter an audit line shows (the last that matched), kept as a
    /// reference instead of a copy of its text per match. Unowned: `rs` keeps it alive.
    @exclusivity(unchecked) unowned(unsafe) var lastParamOperator: Operator?
    /// Its parameter as expanded at run time (nil: the operator's own text).
    @exclusivity(unchecked) var lastParamExpanded: Bytes?
    /// The parameter text of `lastParamOperator`, as ModSecurity logs it.
    var lastOperatorParamText: String {
        if let b = lastParamExpanded { return String(latin1: b) }
        guard let op = lastParamOperator else { return "" }
        if let re = op.regex { return re.pattern }
        if case .pm = op.kind { return op.param.text }
        return op.usesParam ? String(latin1: op.param.constant) : ""
    }
    @exclusivity(unchecked) var removedIDs: [ClosedRange<Int>] = []
    @exclusivity(unchecked) var removedTags: [String] = []
    @exclusivity(unchecked) var targetRemovalsByID: [([ClosedRange<Int>], Exclusion)] = []
    @exclusivity(unchecked) var targetRemovalsByTag: [(String, Exclusion)] = []
    @exclusivity(unchecked) var allowScope: AllowScope?
    @exclusivity(unchecked) public private(set) var intervention: Intervention?
    /// Every matched rule (chain starter) in order.
    @exclusivity(unchecked) public private(set) var matches: [RuleMatch] = []
    /// Transformation results by (value id << 16 | chain id), open addressing.
    /// Slots of `cacheCapacity` (a power of two, 0 until first use); key -1 marks an empty slot.
    @exclusivity(unchecked) var cacheSlots: UnsafeMutablePointer<CacheSlot>?
    @exclusivity(unchecked) var cacheCapacity = 0
    @exclusivity(unchecked) var cacheUsed = 0
    /// Literal prefilter state: per (chain group, slot) the offset of its rule bits in the pool (-1: not scanned yet).
    @exclusivity(unchecked) var prefilterOffsets: [Int32] = []
    /// Per prefilter slot: the OR of its values' byte summaries and the offset in
    /// `prefilterPool` of the OR of their shared scans (-1: not computed yet).
    struct SlotUnion { var summary: UInt32 = 0; var bits: Int32 = -1 }
    @exclusivity(unchecked) var slotUnions: [SlotUnion] = []
    /// The rule bitsets, `prefilterPoolCount` words in use of `prefilterPoolCapacity`: a
    /// bump allocator (a bitset is taken per scan, ~150 per request, never freed alone).
    @exclusivity(unchecked) var prefilterPool: UnsafeMutablePointer<UInt64>?
    @exclusivity(unchecked) var prefilterPoolCount = 0
    @exclusivity(unchecked) var prefilterPoolCapacity = 0
    /// TX reads by interned key (`RuleSet.txKeys`), one record per key (one cache line per
    /// read): the arena spans of the slot's key and value and the value's leading integer, as
    /// of the write stamped `stamp` (0: never read).
    struct TxReadCache { var stamp: UInt32 = 0; var key = Span.none; var value = Span.none; var number = 0 }
    @exclusivity(unchecked) var txReads: [TxReadCache] = []
    /// `ByteSummary.packed` of values by id (0: not computed yet).
    @exclusivity(unchecked) var summaries: [UInt32] = []
    /// Per value id, the offset in `prefilterPool` of its shared scan (-1: not scanned yet).
    @exclusivity(unchecked) var sharedScanOffsets: [Int32] = []
    /// Off only to compare the shared scan with per-group scans (tests).
    @exclusivity(unchecked) var usePrefilterSharing = true
    /// Off only to compare decisions with the prefilter and pre-test against the general
    /// evaluator alone (tests).
    @exclusivity(unchecked) var useFastPath = true
    /// Off only to compare decisions with and without the prefilter (tests).
    @exclusivity(unchecked) var usePrefilter = true
    /// This thread's PCRE2 match data and JIT stack.
    let scratch: UnsafeMutablePointer<cpcre2_scratch>?
    /// Entry ids are even and start above the ids of the fixed scalars (`Scalar`).
    @exclusivity(unchecked) var nextID = 64
    /// Fixed scalars (REQUEST_URI, …) copied into the arena on first use.
    @exclusivity(unchecked) var scalarSpans = [Span](repeating: .none, count: Scalar.count)
    /// XML attribute values as entries, built on first use.
    @exclusivity(unchecked) var xmlAttributeEntries: [Entry]?

    /// The arena: every value, key and transformation result of this request, appended and
    /// never moved within a rule evaluation's borrow (see `buffer`). Freed with the transaction.
    @exclusivity(unchecked) var arenaBase: UnsafeMutablePointer<UInt8>
    @exclusivity(unchecked) var arenaCount = 0
    @exclusivity(unchecked) var arenaCapacity = 8192
    /// Bit p: phase p has run (phases are 1…5).
    @exclusivity(unchecked) var phasesRun: UInt8 = 0
    /// Collections opened with initcol (written back after phase 5) and expirevar deadlines.
    /// `opened`: the collection's write count once loaded (unchanged: nothing to save).
    @exclusivity(unchecked) var persisted: [(collection: Collection, key: Bytes, opened: UInt32)] = []
    @exclusivity(unchecked) var expiries: [Int: [String: UInt64]] = [:]

    public init(ruleSet: RuleSet, requestID: String, clientAddress: String, clientPort: Int = 0,
                serverAddress: String = "", serverPort: Int = 0, startNanos: UInt64 = 0) {
        rs = ruleSet
        mode = ruleSet.settings.ruleEngine
        self.requestID = requestID
        self.clientAddress = clientAddress
        self.clientPort = clientPort
        self.serverAddress = serverAddress
        self.serverPort = serverPort
        self.startNanos = startNanos
        requestBodyAccess = ruleSet.settings.requestBodyAccess
        requestBodyLimit = ruleSet.settings.requestBodyLimit
        responseBodyAccess = ruleSet.settings.responseBodyAccess
        arenaBase = .allocate(capacity: 8192)
        scratch = RegexScratch.current
    }

    deinit {
        arenaBase.deallocate()
        cacheSlots?.deallocate()
        prefilterPool?.deallocate()
    }

    // MARK: arena

    /// Appends bytes to the arena. Pointers from `buffer` are invalid after this call.
    func store(_ p: UnsafeBufferPointer<UInt8>) -> Span {
        let n = p.count
        if n == 0 { return .empty }
        reserveArena(n)
        if let src = p.baseAddress { (arenaBase + arenaCount).update(from: src, count: n) }
        let s = Span(start: arenaCount, count: n)
        arenaCount += n
        return s
    }

    func store(_ b: Bytes) -> Span { b.withUnsafeBufferPointer { store($0) } }

    /// Room for `n` more bytes (the arena may move: no span's buffer may be held across).
    private func reserveArena(_ n: Int) {
        guard arenaCount + n > arenaCapacity else { return }
        let cap = max(arenaCapacity * 2, arenaCount + n)
        let nb = UnsafeMutablePointer<UInt8>.allocate(capacity: cap)
        nb.update(from: arenaBase, count: arenaCount)
        arenaBase.deallocate()
        arenaBase = nb
        arenaCapacity = cap
    }

    /// `T.formDecode` of `p` (which must not point into the arena), written into the arena.
    func storeFormDecoded(_ p: UnsafeBufferPointer<UInt8>) -> Span {
        if p.isEmpty { return .empty }
        reserveArena(p.count)  // decoding never lengthens
        let n = T.formDecode(p, into: arenaBase + arenaCount)
        let s = Span(start: arenaCount, count: n)
        arenaCount += n
        return s
    }

    /// `s` ASCII-lowercased: `s` itself when it has no upper-case letter, else a lowered copy.
    func storeLowercased(_ s: Span) -> Span {
        guard s.count > 0, buffer(s).contains(where: { $0 >= 65 && $0 <= 90 }) else { return s }
        reserveArena(s.count)
        let src = arenaBase + s.start, dst = arenaBase + arenaCount
        for i in 0..<s.count { dst[i] = lowerByte(src[i]) }
        let out = Span(start: arenaCount, count: s.count)
        arenaCount += s.count
        return out
    }

    /// The bytes of a span, valid until the next `store`.
    @inline(__always) func buffer(_ s: Span) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: arenaBase + s.start, count: s.count > 0 ? s.count : 0)
    }

    func bytes(_ s: Span) -> Bytes { Array(buffer(s)) }
    func string(_ s: Span) -> String { String(latin1: buffer(s)) }

    /// Whether the span holds exactly `b`.
    func spanEquals(_ s: Span, _ b: Bytes) -> Bool {
        guard s.count == b.count else { return false }
        let p = buffer(s)
        return b.withUnsafeBufferPointer { q in
            guard let a = p.baseAddress, let c = q.baseAddress else { return true }
            return memcmp(a, c, b.count) == 0
        }
    }

    /// A value's name as rules and logs show it: `ARGS:id`, `REQUEST_URI`.
    func name(_ v: Value) -> Bytes {
        guard v.key.exists else { return v.collection.rawValue.latin1 }
        return v.collection.rawValue.latin1 + [58] + bytes(v.key)
    }

    /// Forces DetectionOnly (shadow mode) whatever SecRuleEngine says.
    public func forceDetectionOnly() { if mode == .on { mode = .detectionOnly } }

    func newID() -> Int { nextID += 2; return nextID }

    func entry(_ k: Bytes, _ v: Bytes) -> Entry {
        let key = store(k)
        return Entry(key: key, keyLower: storeLowercased(key), value: store(v), id: newID())
    }

    /// A header as an entry, stored straight from the Strings' bytes (no array per name and value).
    func entry(name: String, value: String) -> Entry {
        var name = name, value = value
        let key = name.withUTF8 { store($0) }
        return Entry(key: key, keyLower: storeLowercased(key), value: value.withUTF8 { store($0) }, id: newID())
    }

    /// Whether the entry's lowercased key is `lower`.
    @inline(__always) func keyIs(_ e: Entry, _ lower: Bytes) -> Bool { spanEquals(e.keyLower, lower) }

    // MARK: request

    /// Request line and headers; runs phase 1.
    public func processRequestHeaders(method m: String, target: String, protocol p: String, headers h: [(String, String)]) -> Intervention? {
        method = Array(m.utf8)
        uriRaw = Array(target.utf8)
        proto = Array(p.utf8)
        requestLine = method + [32] + uriRaw + [32] + proto
        var path = uriRaw
        if let q = uriRaw.firstIndex(of: 63) {
            path = Array(uriRaw[..<q])
            queryString = Array(uriRaw[(q + 1)...])
            argsGet = parseURLEncoded(queryString)
        }
        // Absolute-form: drop scheme and authority from the path variables.
        if path.first != 47, let r = bytesFind(path, Array("://".utf8)) {
            let after = path[(r + 3)...]
            path = after.firstIndex(of: 47).map { Array(path[$0...]) } ?? [47]
        }
        let decodedPath = T.uriDecode(path)
        filename = decodedPath
        basename = decodedPath.lastIndex(of: 47).map { Array(decodedPath[($0 + 1)...]) } ?? decodedPath
        uri = T.uriDecode(queryString.isEmpty && !uriRaw.contains(63) ? path : path + [63] + queryString)
        headers.reserveCapacity(h.count)
        for (name, value) in h {
            let e = entry(name: name, value: value)
            headers.append(e)
            if keyIs(e, Transaction.cookieKey) { cookies += parseCookies(Array(value.utf8)) }
            if keyIs(e, Transaction.hostKey) { hostname = value }
        }
        if let ct = header("content-type") {
            let l = asciiLower(ct)
            if l.starts(with: Array("application/x-www-form-urlencoded".utf8)) { bodyProcessor = "URLENCODED" }
            else if l.starts(with: Array("multipart/form-data".utf8)) { bodyProcessor = "MULTIPART" }
        }
        collections[.tx] = VarStore(table: rs.txKeys, reserve: 16)
        return runPhase(1)
    }

    static let cookieKey = Array("cookie".utf8), hostKey = Array("host".utf8)
    static let contentTypeKey = Array("content-type".utf8), contentLengthKey = Array("content-length".utf8)

    func header(_ lower: String) -> Bytes? {
        let k = Array(lower.utf8)
        return headers.first { keyIs($0, k) }.map { bytes($0.value) }
    }

    /// Appends request body bytes; false once the body exceeds the limit (bytes beyond are dropped).
    @discardableResult
    public func appendRequestBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        requestBodyLength &+= bytes.count
        guard requestBodyAccess else { return true }
        let room = requestBodyLimit - requestBody.count
        if room <= 0 { bodyLimitExceeded = bodyLimitExceeded || bytes.count > 0; return bytes.isEmpty }
        requestBody.append(contentsOf: bytes.prefix(room))
        if bytes.count > room { bodyLimitExceeded = true; return false }
        return true
    }

    public func appendRequestBody(_ bytes: Bytes) {
        bytes.withUnsafeBytes { _ = appendRequestBody($0) }
    }

    /// What SecRequestBodyLimitAction says for a body over the limit (nil: process the part).
    public var bodyLimitIntervention: Intervention? {
        guard rs.settings.requestBodyLimitAction == .reject, mode == .on else { return nil }
        return Intervention(status: 413, redirect: nil, drop: false, ruleID: 0, phase: 2)
    }

    /// Parses the body with its processor and runs phase 2.
    public func processRequestBody() -> Intervention? {
        if let i = intervention { return i }
        if requestBodyAccess && !requestBody.isEmpty {
            switch bodyProcessor {
            case "URLENCODED"?: argsPost = parseURLEncoded(requestBody)
            case "MULTIPART"?: parseMultipart()
            case "JSON"?: parseJSON()
            case "XML"?: parseXML()
            default: break
            }
        }
        if bodyLimitExceeded { flags[.inboundDataError] = 1 }
        resetScalar(.requestBody)
        resetScalar(.xmlText)
        xmlAttributeEntries = nil
        resetBodyPrefilter()
        return runPhase(2)
    }

    // MARK: response

    public func processResponseHeaders(status: Int, protocol p: String, headers h: [(String, String)]) -> Intervention? {
        responseStatus = status.bytes
        responseProtocol = Array(p.utf8)
        responseHeaders = h.map { entry(name: $0.0, value: $0.1) }
        return runPhase(3)
    }

    /// Whether the response body should be buffered for phase 4 (access on, MIME type listed).
    public var wantsResponseBody: Bool {
        guard responseBodyAccess, mode != .off else { return false }
        guard let ct = responseHeaders.first(where: { keyIs($0, Transaction.contentTypeKey) }).map({ bytes($0.value) }) else { return false }
        let mime = String(latin1: asciiLower(Array(ct.prefix { $0 != 59 }))).trimmingSpaces
        return rs.settings.responseBodyMimeTypes.contains(mime)
    }

    public func appendResponseBody(_ bytes: UnsafeRawBufferPointer) {
        let room = rs.settings.responseBodyLimit - responseBody.count
        if room > 0 { responseBody.append(contentsOf: bytes.prefix(room)) }
    }

    public func processResponseBody() -> Intervention? {
        resetScalar(.responseBody)
        return runPhase(4)
    }

    /// Phase 5, then the collections opened with initcol are written back.
    public func processLogging() {
        _ = runPhase(5)
        let now = wallSeconds()
        for (c, key, opened) in persisted where collections.writes[c.ordinal] != opened {
            PersistentStore.shared.save(c, key, collections[c] ?? VarStore(), expiry: expiries[c.ordinal] ?? [:], now: now)
        }
        persisted.removeAll()
    }

    // MARK: phases

    func runPhase(_ p: Int) -> Intervention? {
        let bit: UInt8 = p >= 0 && p < 8 ? 1 << UInt8(p) : 0
        guard phasesRun & bit == 0 else { return intervention }
        phasesRun |= bit
        if mode == .off || intervention != nil { return intervention }
        if let a = allowScope {
            if a == .all && p < 5 { return nil }
            if a == .request && p <= 2 { return nil }
        }
        let list = rs.phases[p], probes = rs.probes[p], refs = rs.phaseRefs[p]
        var i = 0
        while i < list.count {
            if probes[i].marker { i += 1; continue }
            // The starter's literals appear nowhere: the rule cannot match (what `linkMatches`
            // would find), decided without touching the rule.
            if probes[i].bit >= 0, useFastPath, usePrefilter, targetRemovalsByID.isEmpty, targetRemovalsByTag.isEmpty,
               !prefilterMayMatch(probes[i]) {
                i += 1
                continue
            }
            // Most rules evaluated here do not match: evaluated through the unmanaged
            // reference, they cost no reference counting. A match takes the rule.
            let matched = refs[i]._withUnsafeGuaranteedRef { r in !isRemoved(r) && evaluateChain(r) }
            let r = matched ? list[i] : nil
            i += 1
            guard let r else { continue }
            let d = resolveDisruptive(r, phase: p)
            let enforced = mode == .on
            var disrupted = false
            switch d {
            case .deny, .drop, .redirect:
                if enforced {
                    var status = r.status ?? 403
                    var redirect: String?
                    if case .redirect(let url) = d { redirect = String(latin1: expand(Macro(url))); status = r.status.map { [301, 302, 303, 307].contains($0) ? $0 : 302 } ?? 302 }
                    intervention = Intervention(status: status, redirect: redirect, drop: d == .drop, ruleID: r.id, phase: p)
                    disrupted = true
                }
            case .allow(let scope):
                if enforced { allowScope = scope }
            default: break
            }
            record(r, phase: p, disruptive: disrupted)
            if disrupted { return intervention }
            if enforced, case .allow = d { return nil }
            if r.skipAfter != nil {
                if let idx = r.skipAfterIndex, idx >= i { i = idx + 1 } else { return nil }
            } else if r.skip > 0 {
                var n = r.skip
                while n > 0, i < list.count { if !list[i].isMarker { n -= 1 }; i += 1 }
            }
        }
        return intervention
    }

    func resolveDisruptive(_ r: Rule, phase: Int) -> Disruptive {
        let d = r.disruptive ?? .pass
        if d == .block { return rs.defaultDisruptive[phase] }
        return d
    }

    func isRemoved(_ r: Rule) -> Bool {
        if !removedIDs.isEmpty, removedIDs.contains(where: { $0.contains(r.id) }) { return true }
        if !removedTags.isEmpty, removedTags.contains(where: { t in r.tags.contains { Loader.tagMatches(t, $0) } }) { return true }
        return false
    }

    func record(_ r: Rule, phase: Int, disruptive: Bool) {
        let log = r.log ?? rs.defaultLog[phase]
        guard log || disruptive else { return }
        let m = RuleMatch(id: r.id, phase: phase, msg: r.msg.map { String(latin1: expand($0, rule: r)) } ?? "",
                          data: r.logdata.map { String(latin1: expand($0, rule: r)) } ?? "",
                          severity: r.severity, tags: r.tags, ver: r.ver, rev: r.rev, maturity: r.maturity, accuracy: r.accuracy,
                          file: r.file, line: r.line, matchedVarName: String(latin1: matchedVarName), matchedVar: string(matchedVar),
                          operatorName: lastOperatorName, operatorParam: lastOperatorParamText, disruptive: disruptive, log: log || disruptive,
                          escapedHead: r.auditHead, escapedTail: r.auditTail)
        matches.append(m)
    }
    /// The operator of the last match (its name goes in the audit line); unowned as above.
    @exclusivity(unchecked) unowned(unsafe) var lastMatchedOperator: Operator?
    /// The last match was an action without targets (SecAction): "unconditionalMatch".
    @exclusivity(unchecked) var lastMatchUnconditional = false
    var lastOperatorName: String { lastMatchUnconditional ? "unconditionalMatch" : lastMatchedOperator?.name ?? "" }

    // MARK: rule evaluation

    /// Evaluates a rule and its chain; on a full match runs the non-disruptive actions
    /// (last link first, as ModSecurity v3 does) and returns true.
    func evaluateChain(_ starter: Rule) -> Bool {
        // The starter alone decides most rules: test it before walking the chain (this keeps
        // the common one-link case out of the Optional loop, measurably cheaper per rule).
        guard linkMatches(starter, starter: starter) else { return false }
        var depth = 1
        var link = starter.chained
        while let l = link {
            guard linkMatches(l, starter: starter) else { return false }
            depth += 1
            link = l.chained
        }
        // Last link first: walk to link k for k = depth-1 ... 0 (chains are short).
        var k = depth - 1
        while k >= 0 {
            var l: Rule? = starter
            var n = 0
            while n < k, let cur = l { l = cur.chained; n += 1 }
            if let l { runActions(l, setvars: false) }
            k -= 1
        }
        return true
    }

    /// One link: the TX comparison, the prefilter and the pre-test where they apply, then the
    /// general evaluator.
    @inline(__always)
    func linkMatches(_ l: Rule, starter: Rule) -> Bool {
        if targetRemovalsByID.isEmpty, targetRemovalsByTag.isEmpty {
            if useFastPath, let c = l.txCompareRef {
                return c._withUnsafeGuaranteedRef { txCompareMatches(l, c: $0, starter: starter) }
            }
            if useFastPath, let plan = l.fastRef {
                // A starter's prefilter bit was tested by the rule loop (`RuleSet.probes`).
                if l !== starter, l.prefilter.bit >= 0, usePrefilter, !prefilterMayMatch(l.prefilter) { return false }
                if !plan._withUnsafeGuaranteedRef({ fastMayMatch(l, $0) }) { return false }
            }
        }
        return evaluate(l, starter: starter)
    }

    func evaluate(_ r: Rule, starter: Rule) -> Bool {
        currentRule = starter
        if r.targets.isEmpty {
            lastMatchUnconditional = true
            let m = execute(r.op, .empty, capture: r.capture)
            if m { runSetVars(r) }
            return m
        }
        var exclusions = r.exclusions
        if !targetRemovalsByID.isEmpty {
            for (ids, e) in targetRemovalsByID where ids.contains(where: { $0.contains(starter.id) }) { exclusions.append(e) }
        }
        if !targetRemovalsByTag.isEmpty {
            for (t, e) in targetRemovalsByTag where starter.tags.contains(where: { Loader.tagMatches(t, $0) }) { exclusions.append(e) }
        }
        var matched = false
        let op = r.op, capture = r.capture
        if r.multiMatch {
            let transforms = r.transforms
            for t in r.targets {
                collect(t, exclusions: exclusions) { v in
                    if execute(op, v.value, capture: capture) { noteMatch(v, v.value, r); matched = true; return }
                    var cur = bytes(v.value)
                    for tr in transforms {
                        let next = tr.apply(cur)
                        if next == cur { continue }
                        cur = next
                        let s = store(cur)
                        if execute(op, s, capture: capture) { noteMatch(v, s, r); matched = true; return }
                    }
                }
            }
        } else if r.transforms.isEmpty {
            for t in r.targets {
                collect(t, exclusions: exclusions) { v in
                    if execute(op, v.value, capture: capture) { noteMatch(v, v.value, r); matched = true }
                }
            }
        } else {
            for t in r.targets {
                collect(t, exclusions: exclusions) { v in
                    let tv = transformed(v, r)
                    if execute(op, tv, capture: capture) { noteMatch(v, tv, r); matched = true }
                }
            }
        }
        return matched
    }

    /// A `TX:key @lt 2`-shaped link (see `TxCompare`): the same outcome and side effects as
    /// `evaluate` (MATCHED_VAR, MATCHED_VARS, the operator's parameter), without its generality.
    func txCompareMatches(_ r: Rule, c: TxCompare, starter: Rule) -> Bool {
        currentRule = starter
        var matched = txCompareTarget(c, c.keyID, c.key, c.count, r)
        for t in c.more where txCompareTarget(c, t.keyID, t.key, t.count, r) { matched = true }
        return matched
    }

    /// One target of a TX comparison: true (after `noteMatch`) when its value matches.
    @inline(__always)
    private func txCompareTarget(_ c: TxCompare, _ keyID: Int, _ key: String, _ count: Bool, _ r: Rule) -> Bool {
        guard let read = txRead(keyID, key) else {
            return count && txCompareMatched(c, n: 0, count: true, read: nil, r)
        }
        return txCompareMatched(c, n: count ? 1 : read.number, count: count, read: read, r)
    }

    private func txCompareMatched(_ c: TxCompare, n: Int, count: Bool, read: TxReadCache?, _ r: Rule) -> Bool {
        var operand = c.operand
        var param: Bytes?
        if c.operandKeyID >= 0, let ok = c.operandKey {
            // As the general evaluator expands it: an unset variable is an empty operand (0).
            let p = collections.slots[Collection.tx.ordinal].entry(id: c.operandKeyID, ok)?.value ?? []
            operand = parseLeadingInt(p)
            param = p
        }
        var m: Bool
        switch c.kind {
        case .eq: m = n == operand
        case .ge: m = n >= operand
        case .gt: m = n > operand
        case .le: m = n <= operand
        case .lt: m = n < operand
        }
        if c.negated { m = !m }
        guard m else { return false }
        lastParamOperator = r.op
        lastParamExpanded = param
        if count {
            let v = store(n.bytes)
            noteMatch(Value(collection: .tx, key: .none, value: v, id: -1), v, r)
        } else if let read {
            noteMatch(Value(collection: .tx, key: read.key, value: read.value, id: -1), read.value, r)
        }
        return true
    }

    /// TX:key by its interned id, or nil when unset: the key's and value's spans in the arena
    /// and the value's leading integer. Stored once per write of the slot (its stamp), not
    /// once per read.
    func txRead(_ id: Int, _ key: String) -> TxReadCache? {
        guard let state = collections.slots[Collection.tx.ordinal].slotState(id: id) else {
            guard let kv = collections.slots[Collection.tx.ordinal].entry(id: id, key) else { return nil }
            let v = store(kv.value)
            return TxReadCache(stamp: 0, key: store(kv.key), value: v, number: parseLeadingInt(buffer(v)))
        }
        guard state.isSet else { return nil }
        if txReads.isEmpty { txReads = [TxReadCache](repeating: TxReadCache(), count: rs.txKeys.count) }
        if txReads[id].stamp == state.stamp { return txReads[id] }
        guard let kv = collections.slots[Collection.tx.ordinal].entry(id: id, key) else { return nil }
        let v = store(kv.value)
        let read = TxReadCache(stamp: state.stamp, key: store(kv.key), value: v, number: parseLeadingInt(buffer(v)))
        txReads[id] = read
        return read
    }

    func noteMatch(_ v: Value, _ tv: Span, _ r: Rule) {
        matchedVar = tv
        matchedValue = v
        matchedVarNameCache = nil
        pendingMatchedVars.append((v, tv))
        lastMatchedOperator = r.op
        lastMatchUnconditional = false
        runSetVars(r)
    }

    /// The value after the rule's transformations, cached per (value id, transformation chain).
    @inline(__always) func transformed(_ v: Value, _ r: Rule) -> Span { transformed(v.value, id: v.id, r) }

    /// The same for a value given by its bytes and cache id (-1: not cached).
    @inline(__always) func transformed(_ value: Span, id: Int, _ r: Rule) -> Span {
        transformed(value, id: id, chainID: r.transformChainID, transforms: r.transforms)
    }

    /// The same for a transformation chain given by its id and steps.
    func transformed(_ value: Span, id: Int, chainID: Int, transforms: [Transform]) -> Span {
        guard id >= 0 else { return applyTransforms(value, transforms, id: -1) }
        // Most values pass most chains unchanged: one AND decides that, before the cache.
        if chainID < rs.chainTriggers.count, summary(value, id: id).packed & rs.chainTriggers[chainID] == 0 { return value }
        let key = id &<< 16 | chainID
        if let hit = cacheLookup(key) { return hit }
        let result = applyTransforms(value, transforms, id: id)
        cacheInsert(key, result)
        return result
    }

    struct CacheSlot { var key: Int; var span: Span }

    @inline(__always) static func cacheHash(_ key: Int) -> Int { (key &* -7046029254386353131) &>> 20 }

    /// Open addressing over (key, span) slots with linear probing.
    @inline(__always) func cacheLookup(_ key: Int) -> Span? {
        guard let t = cacheSlots else { return nil }
        let mask = cacheCapacity - 1
        var i = Transaction.cacheHash(key) & mask
        while true {
            let k = t[i].key
            if k == key { return t[i].span }
            if k == -1 { return nil }
            i = (i + 1) & mask
        }
    }

    func cacheInsert(_ key: Int, _ span: Span) {
        // 256 slots (6 KiB) hold the 50-100 results a CRS request caches (values a chain leaves
        // unchanged are not cached); a request with many arguments grows the table.
        if (cacheUsed + 1) * 2 > cacheCapacity { rebuildCache(capacity: max(256, cacheCapacity * 2), dropping: nil) }
        guard let t = cacheSlots else { return }
        let mask = cacheCapacity - 1
        var i = Transaction.cacheHash(key) & mask
        while t[i].key != -1 && t[i].key != key { i = (i + 1) & mask }
        if t[i].key == -1 { cacheUsed += 1 }
        t[i] = CacheSlot(key: key, span: span)
    }

    /// Moves the cache into a table of `capacity` slots, leaving out the results of value id `dropping`.
    func rebuildCache(capacity: Int, dropping id: Int?) {
        let old = cacheSlots, oldCapacity = cacheCapacity
        let t = UnsafeMutablePointer<CacheSlot>.allocate(capacity: capacity)
        t.initialize(repeating: CacheSlot(key: -1, span: .none), count: capacity)
        cacheSlots = t
        cacheCapacity = capacity
        cacheUsed = 0
        if let old {
            for j in 0..<oldCapacity where old[j].key != -1 && Transaction.cacheKeyID(old[j].key) != id { cacheInsert(old[j].key, old[j].span) }
            old.deallocate()
        }
    }

    /// Steps that leave the value as it is (by its `ByteSummary`) are skipped, before and after
    /// a step that changes it: a plain value is never copied, a changed one only by the steps
    /// that change it. `id` (-1: none) keys the summary of the untransformed value, which every
    /// chain over the same value shares.
    ///
    /// What a chain does to a value is the sequence of the steps that changed it — its path:
    /// `t:urlDecodeUni,t:lowercase` and `t:lowercase` do the same to a value without `%`. Each
    /// intermediate result is cached under (value id, path), so chains that differ only in
    /// steps that do nothing, or that share a prefix, transform a value once.
    func applyTransforms(_ s: Span, _ transforms: [Transform], id: Int) -> Span {
        var summary = self.summary(s, id: id)
        var k = 0
        while k < transforms.count, transforms[k].unchanged(summary) { k += 1 }
        if k == transforms.count { return s }
        var step = PathStep(value: s)
        while k < transforms.count {
            let t = transforms[k]
            k += 1
            if t.unchanged(summary) { continue }
            pathStep(t, &step, id: id)
            if k < transforms.count {
                summary = step.bytes.map { b in b.withUnsafeBufferPointer { ByteSummary($0) } } ?? ByteSummary(buffer(step.value))
            }
        }
        return step.value
    }

    /// Where a walk along a chain is: the value so far, the steps that were applied to it
    /// (packed six bits a step, next to the value id in a cache key), and its bytes as an array
    /// when the last step made them (saves copying them back out of the arena).
    struct PathStep {
        var value: Span
        var path = 0
        var depth = 0
        var bytes: Bytes?
    }

    /// Applies `t` at `step` (a step the value's summary cannot rule out): the result cached
    /// for (value id, path), else computed and cached. At most seven steps are keyed.
    @inline(__always) func pathStep(_ t: Transform, _ step: inout PathStep, id: Int) {
        step.depth += 1
        step.path = step.path << 6 | t.code
        let key = id >= 0 && id < Transaction.pathIDLimit && step.depth <= 7 ? Transaction.pathKey(id, step.path) : -1
        if key != -1, let hit = cacheLookup(key) {
            step.value = hit
            step.bytes = nil
            return
        }
        let before = step.bytes ?? bytes(step.value)
        let next = t.apply(before)
        if next != before { step.value = store(next) }
        step.bytes = next
        if key != -1 { cacheInsert(key, step.value) }
    }

    /// Value ids below this have their transformation paths cached.
    static let pathIDLimit = 1 << 20
    /// Cache key of (value id, path): bit 62 set, apart from the (id << 16 | chain) keys.
    @inline(__always) static func pathKey(_ id: Int, _ path: Int) -> Int { 1 << 62 | id << 42 | path }
    /// The value id a cache key belongs to.
    @inline(__always) static func cacheKeyID(_ key: Int) -> Int { key & (1 << 62) != 0 ? (key & ~(1 << 62)) >> 42 : key >> 16 }

    /// The byte summary of a value, computed once per value id.
    @inline(__always) func summary(_ s: Span, id: Int) -> ByteSummary {
        guard id >= 0 else { return ByteSummary(buffer(s)) }
        if id >= summaries.count { summaries.append(contentsOf: repeatElement(0, count: id + 64 - summaries.count)) }
        let p = summaries[id]
        if p != 0 { return ByteSummary(packed: p) }
        let sm = ByteSummary(buffer(s))
        summaries[id] = sm.packed
        return sm
    }

    /// Forgets a fixed scalar and its cached transformations (its bytes changed: the request body arrived).
    func resetScalar(_ k: Scalar) {
        // Cached results exist only for a scalar that was copied into the arena.
        guard scalarSpans[k.rawValue].exists else { return }
        scalarSpans[k.rawValue] = .none
        if k.id < summaries.count { summaries[k.id] = 0 }
        if k.id < sharedScanOffsets.count { sharedScanOffsets[k.id] = -1 }
        // Rare (once per body): drop every cached result of this scalar.
        if cacheSlots != nil { rebuildCache(capacity: cacheCapacity, dropping: k.id) }
    }

    // MARK: variables

    func collect(_ t: Target, exclusions: [Exclusion]) -> [Value] {
        var out: [Value] = []
        collect(t, exclusions: exclusions) { out.append($0) }
        return out
    }

    /// Whether the key selector selects the entry.
    @inline(__always) func selects(_ sel: KeySelector, _ e: Entry) -> Bool {
        switch sel {
        case .all: return true
        case .exact(let k): return keyIs(e, k)
        case .regex(let r): return r.mayMatch(lower: buffer(e.keyLower)) && r.matches(buffer(e.key))
        }
    }

    /// Whether the entry's lowercased key is `lower` (a lowercase String).
    @inline(__always) func keyIs(_ e: Entry, _ lower: String) -> Bool {
        let n = e.keyLower.count
        guard n == lower.utf8.count else { return false }
        if n == 0 { return true }
        let p = arenaBase + e.keyLower.start
        return lower.utf8.withContiguousStorageIfAvailable { q in memcmp(p, q.baseAddress!, n) == 0 } ?? false
    }

    @inline(__always) func excluded(_ exclusions: [Exclusion], _ c: Collection, _ e: Entry) -> Bool {
        for x in exclusions where x.collection == c && selects(x.key, e) { return true }
        return false
    }

    /// Calls `visit` with every value the target selects (no list built), or once with the count for `&`.
    func collect(_ t: Target, exclusions: [Exclusion], _ visit: (Value) -> Void) {
        // Fast paths for what CRS targets most (lists of entries, TX:key): no nested closures.
        if !t.count {
            switch t.collection {
            case .args:
                visitEntries(argsGet, t.key, exclusions, .args, false, visit)
                visitEntries(argsPost, t.key, exclusions, .args, false, visit)
                return
            case .argsNames:
                visitEntries(argsGet, t.key, exclusions, .argsNames, true, visit)
                visitEntries(argsPost, t.key, exclusions, .argsNames, true, visit)
                return
            case .argsGet: visitEntries(argsGet, t.key, exclusions, .argsGet, false, visit); return
            case .argsPost: visitEntries(argsPost, t.key, exclusions, .argsPost, false, visit); return
            case .argsGetNames: visitEntries(argsGet, t.key, exclusions, .argsGetNames, true, visit); return
            case .argsPostNames: visitEntries(argsPost, t.key, exclusions, .argsPostNames, true, visit); return
            case .requestHeaders: visitEntries(headers, t.key, exclusions, .requestHeaders, false, visit); return
            case .requestHeadersNames: visitEntries(headers, t.key, exclusions, .requestHeadersNames, true, visit); return
            case .requestCookies: visitEntries(cookies, t.key, exclusions, .requestCookies, false, visit); return
            case .requestCookiesNames: visitEntries(cookies, t.key, exclusions, .requestCookiesNames, true, visit); return
            case .tx:
                if case .exact(let k) = t.key {
                    guard let kv = collections.slots[Collection.tx.ordinal].entry(id: t.txKeyID, k) else { return }
                    if !exclusions.isEmpty, exclusions.contains(where: { $0.collection == .tx && $0.key.matchesStored(k, kv.key) }) { return }
                    visit(Value(collection: .tx, key: store(kv.key), value: store(kv.value), id: -1))
                    return
                }
            case .xml:
                if xmlText == nil && xmlAttributes.isEmpty { return }
            default: break
            }
        }
        collectAny(t, exclusions: exclusions, visit)
    }

    /// Entries of one list selected by key, minus exclusions, as `c` (values, or names when `names`).
    @inline(__always)
    func visitEntries(_ list: [Entry], _ sel: KeySelector, _ exclusions: [Exclusion], _ c: Collection, _ names: Bool, _ visit: (Value) -> Void) {
        if list.isEmpty { return }
        var exact: String?
        var regex: Regex?
        switch sel {
        case .all: break
        case .exact(let k): exact = k
        case .regex(let r): regex = r
        }
        let checkExclusions = !exclusions.isEmpty && exclusions.contains { $0.collection == c }
        for i in list.indices {
            let e = list[i]
            if let exact, !keyIs(e, exact) { continue }
            if let regex, !(regex.mayMatch(lower: buffer(e.keyLower)) && regex.matches(buffer(e.key))) { continue }
            if checkExclusions, excluded(exclusions, c, e) { continue }
            visit(Value(collection: c, key: e.key, value: names ? e.key : e.value, id: names ? e.id &+ 1 : e.id))
        }
    }

    func collectAny(_ t: Target, exclusions: [Exclusion], _ visit: (Value) -> Void) {
        var count = 0
        let counting = t.count
        func out(_ v: Value) { if counting { count += 1 } else { visit(v) } }
        func keyed(_ list: [Entry], _ c: Collection, names: Bool = false, reportAs: Collection? = nil) {
            let selector = t.key
            for e in list {
                guard selects(selector, e) else { continue }
                if !exclusions.isEmpty, excluded(exclusions, c, e) || (reportAs.map { excluded(exclusions, $0, e) } ?? false) { continue }
                out(Value(collection: reportAs ?? c, key: e.key, value: names ? e.key : e.value, id: names ? e.id &+ 1 : e.id))
            }
        }
        func store(_ c: Collection) {
            guard let s = collections[c] else { return }
            if case .exact(let k) = t.key {
                if let kv = s.entry(id: t.txKeyID, k), exclusions.isEmpty || !exclusions.contains(where: { $0.collection == c && $0.key.matchesStored(k, kv.key) }) {
                    out(Value(collection: c, key: self.store(kv.key), value: self.store(kv.value), id: -1))
                }
                return
            }
            s.forEach(candidates: c == .tx ? t.txCandidates : nil) { kl, kv in
                guard t.key.matchesStored(kl, kv.key) else { return }
                if !exclusions.isEmpty, exclusions.contains(where: { $0.collection == c && $0.key.matchesStored(kl, kv.key) }) { return }
                out(Value(collection: c, key: self.store(kv.key), value: self.store(kv.value), id: -1))
            }
        }
        func excludedScalar() -> Bool { !exclusions.isEmpty && exclusions.contains(where: { $0.collection == t.collection }) }
        func scalar(_ v: Bytes) {
            if excludedScalar() { return }
            out(Value(collection: t.collection, key: .none, value: self.store(v), id: -1))
        }
        func fixed(_ k: Scalar, _ v: @autoclosure () -> Bytes) {
            if excludedScalar() { return }
            var s = scalarSpans[k.rawValue]
            if !s.exists { s = self.store(v()); scalarSpans[k.rawValue] = s }
            out(Value(collection: t.collection, key: .none, value: s, id: k.id))
        }
        func flag(_ c: Collection) { scalar((flags[c] ?? 0).bytes) }
        switch t.collection {
        case .args: keyed(argsGet, .args); keyed(argsPost, .args)
        case .argsGet: keyed(argsGet, .argsGet)
        case .argsPost: keyed(argsPost, .argsPost)
        case .argsNames: keyed(argsGet, .argsNames, names: true); keyed(argsPost, .argsNames, names: true)
        case .argsGetNames: keyed(argsGet, .argsGetNames, names: true)
        case .argsPostNames: keyed(argsPost, .argsPostNames, names: true)
        case .argsCombinedSize:
            scalar((argsGet + argsPost).reduce(0) { $0 + max(0, $1.key.count) + max(0, $1.value.count) }.bytes)
        case .requestHeaders: keyed(headers, .requestHeaders)
        case .requestHeadersNames: keyed(headers, .requestHeadersNames, names: true)
        case .requestCookies: keyed(cookies, .requestCookies)
        case .requestCookiesNames: keyed(cookies, .requestCookiesNames, names: true)
        case .files: keyed(files, .files)
        case .filesNames: keyed(files, .filesNames, names: true)
        case .filesSizes: keyed(filesSizes, .filesSizes)
        case .filesCombinedSize: scalar(filesSizes.reduce(0) { $0 + parseLeadingInt(bytes($1.value)) }.bytes)
        case .multipartPartHeaders: keyed(partHeaders, .multipartPartHeaders)
        case .multipartName: keyed(argsPost, .multipartName, names: true)
        case .multipartFilename: for f in files { out(Value(collection: .multipartFilename, key: f.key, value: f.value, id: -1)) }
        case .responseHeaders: keyed(responseHeaders, .responseHeaders)
        case .responseHeadersNames: keyed(responseHeaders, .responseHeadersNames, names: true)
        case .matchedVars: keyed(matchedVars, .matchedVars)
        case .matchedVarsNames: keyed(matchedVars, .matchedVarsNames, names: true)
        case .tx, .ip, .global, .session, .user, .resource, .geo, .env: store(t.collection)
        case .xml:
            if case .exact("@") = t.key {
                if xmlAttributeEntries == nil {
                    let attrName = self.store(Array("//@*".utf8))
                    xmlAttributeEntries = xmlAttributes.map { Entry(key: attrName, keyLower: attrName, value: self.store($0), id: newID()) }
                }
                for e in xmlAttributeEntries ?? [] { out(Value(collection: .xml, key: e.key, value: e.value, id: e.id)) }
            } else if let x = xmlText { fixed(.xmlText, x) }
        case .rule:
            if let r = currentRule, case .exact(let k) = t.key {
                switch k {
                case "id": out(Value(collection: .rule, key: self.store(Array("id".utf8)), value: self.store(r.id.bytes), id: -1))
                case "msg": out(Value(collection: .rule, key: self.store(Array("msg".utf8)), value: self.store(r.msg.map { expand($0) } ?? []), id: -1))
                case "severity": out(Value(collection: .rule, key: self.store(Array("severity".utf8)), value: self.store((r.severity ?? 0).bytes), id: -1))
                default: break
                }
            }
        case .requestFilename: fixed(.filename, filename)
        case .requestBasename: fixed(.basename, basename)
        case .requestURI: fixed(.uri, uri)
        case .requestURIRaw: fixed(.uriRaw, uriRaw)
        case .requestLine: fixed(.requestLine, requestLine)
        case .requestMethod: fixed(.method, method)
        case .requestProtocol: fixed(.proto, proto)
        case .queryString: fixed(.queryString, queryString)
        case .requestBody:
            if requestBodyVisible { fixed(.requestBody, requestBody) }
        case .requestBodyLength: scalar(requestBodyLength.bytes)
        case .remoteAddr: scalar(Array(clientAddress.utf8))
        case .remotePort: scalar(clientPort.bytes)
        case .remoteHost: scalar(Array(clientAddress.utf8))
        case .serverAddr: scalar(Array(serverAddress.utf8))
        case .serverPort: scalar(serverPort.bytes)
        case .serverName: scalar(Array(hostname.utf8))
        case .uniqueID: scalar(Array(requestID.utf8))
        case .duration: scalar(Int((wallNanos() &- startNanos) / 1000).bytes)
        case .reqbodyError: flag(.reqbodyError)
        case .reqbodyErrorMsg: scalar(reqbodyErrorMsg)
        case .reqbodyProcessorError: flag(.reqbodyError)
        case .reqbodyProcessor: if let p = bodyProcessor { scalar(Array(p.utf8)) }
        case .responseStatus: scalar(responseStatus)
        case .responseProtocol: scalar(responseProtocol)
        case .responseBody: if !responseBody.isEmpty { fixed(.responseBody, responseBody) }
        case .responseContentType:
            if let e = responseHeaders.first(where: { keyIs($0, Transaction.contentTypeKey) }) { scalar(bytes(e.value)) }
        case .responseContentLength:
            if let e = responseHeaders.first(where: { keyIs($0, Transaction.contentLengthKey) }) { scalar(bytes(e.value)) }
        case .matchedVar:
            if !excludedScalar() { out(Value(collection: .matchedVar, key: .none, value: matchedVar, id: -1)) }
        case .matchedVarName: scalar(matchedVarName)
        case .highestSeverity: scalar((matches.compactMap(\.severity).min() ?? 255).bytes)
        case .statusLine: scalar(responseProtocol + [32] + responseStatus)
        case .fullRequest:
            var full = requestLine + [13, 10]
            for h in headers { full += bytes(h.key) + [58, 32] + bytes(h.value) + [13, 10] }
            scalar(full + [13, 10] + requestBody)
        case .fullRequestLength: scalar((requestLine.count + requestBody.count).bytes)
        case .pathInfo: scalar([])
        case .authType: break
        case .time, .timeEpoch: scalar(Int(wallNanos() / 1_000_000_000).bytes)
        case .webAppID: scalar(Array("default".utf8))
        case .multipartStrictError, .multipartUnmatchedBoundary, .multipartBoundaryQuoted, .multipartBoundaryWhitespace,
             .multipartDataBefore, .multipartDataAfter, .multipartHeaderFolding, .multipartLFLine, .multipartMissingSemicolon,
             .multipartInvalidQuoting, .multipartInvalidPart, .multipartInvalidHeaderFolding, .multipartFileLimitExceeded,
             .multipartCRLFLFLines, .inboundDataError, .outboundDataError, .urlencodedError:
            flag(t.collection)
        }
        if counting { visit(Value(collection: t.collection, key: .none, value: self.store(count.bytes), id: -1)) }
    }

    // MARK: macros

    func expand(_ m: Macro, rule: Rule? = nil) -> Bytes {
        if m.isConstant { return m.constant }
        // A lone `%{tx.key}` (scores, thresholds): the stored value itself, not a copy.
        if m.loneTxID >= 0 {
            return collections.slots[Collection.tx.ordinal].entry(id: m.loneTxID, m.loneTxKey)?.value ?? []
        }
        if let plan = m.plan, collections.slots[Collection.tx.ordinal].hasSlot(m.planMaxTxID) {
            var out = Bytes()
            out.reserveCapacity(m.constant.count + 32)
            m.constant.withUnsafeBufferPointer { lit in
                plan.withUnsafeBufferPointer { steps in
                    for step in steps {
                        if step.txID < 0 {
                            out.append(contentsOf: UnsafeBufferPointer(rebasing: lit[Int(step.start)..<Int(step.start) + Int(step.count)]))
                        } else {
                            collections.slots[Collection.tx.ordinal].appendValue(slot: Int(step.txID), to: &out)
                        }
                    }
                }
            }
            return out
        }
        var out = Bytes()
        for p in m.parts {
            switch p {
            case .literal(let b): out += b
            case .variable(let c, let key, let keyID):
                if c == .rule, let r = rule ?? currentRule {
                    switch key ?? "" {
                    case "id": out += r.id.bytes
                    case "msg": if let mm = r.msg, mm.text != m.text { out += expand(mm, rule: r) }
                    case "severity": out += (r.severity ?? 0).bytes
                    case "ver": out += (r.ver ?? "").latin1
                    default: break
                    }
                    continue
                }
                switch c {
                case .tx, .ip, .global, .session, .user, .resource, .geo, .env:
                    if let key {
                        if let kv = collections.slots[c.ordinal].entry(id: keyID, key) { out += kv.value }
                        continue
                    }
                default: break
                }
                let t = Target(collection: c, key: key.map { .exact($0) } ?? .all, count: false, text: "")
                if let v = collect(t, exclusions: []).first { out += bytes(v.value) }
            }
        }
        return out
    }

    /// `parseLeadingInt(expand(m))`, reading a lone `%{tx.key}` (`=+%{tx.critical_anomaly_score}`)
    /// in place.
    func expandNumber(_ m: Macro, rule: Rule?) -> Int {
        if m.isConstant { return m.constantNumber }
        if m.loneTxID >= 0 { return collections.slots[Collection.tx.ordinal].number(id: m.loneTxID, m.loneTxKey) ?? 0 }
        return parseLeadingInt(expand(m, rule: rule))
    }

    // MARK: actions

    /// setvar runs for every matched value as soon as it matches (ModSecurity v3's
    /// "independent of the chained rule result"); the rest after the whole chain matched.
    func runSetVars(_ r: Rule) {
        if !r.initcols.isEmpty { openCollections(r) }
        // In place: a copy of a SetVar retains its macros.
        r.setvars.withUnsafeBufferPointer { setvars in
            for k in setvars.indices {
                let key: Bytes, kl: String
                let km = setvars[k].key
                if km.isConstant { key = km.constant; kl = km.constantKey } else { key = expand(km, rule: r); kl = keyString(key) }
                let c = setvars[k].collection
                // A constant TX key has its slot; a computed one is looked up by name (`keyID` -1).
                let id = setvars[k].keyID
                switch setvars[k].kind {
                case .set:
                    let v = setvars[k].value.map { expand($0, rule: r) } ?? []
                    collections[c, default: VarStore()].set(id: id, lower: kl, key, v)
                case .add, .sub:
                    let d = setvars[k].value.map { expandNumber($0, rule: r) } ?? 0
                    collections[c, default: VarStore()].add(id: id, lower: kl, key, d, subtract: setvars[k].kind == .sub)
                case .delete:
                    collections[c, default: VarStore()].remove(id: id, lower: kl)
                }
            }
        }
    }

    /// initcol: loads the stored record before this rule's setvars touch it. The first initcol
    /// of a collection in a transaction wins, as in ModSecurity.
    func openCollections(_ r: Rule) {
        for (c, m) in r.initcols where !persisted.contains(where: { $0.collection == c }) {
            let key = expand(m, rule: r)
            let (store, expiry) = PersistentStore.shared.load(c, key, now: wallSeconds())
            collections[c] = store
            expiries[c.ordinal] = expiry
            persisted.append((c, key, collections.writes[c.ordinal]))
        }
    }

    func runActions(_ r: Rule, setvars: Bool = true) {
        if setvars { runSetVars(r) }
        for (c, name, seconds) in r.expirevars {
            let s = parseLeadingInt(expand(seconds, rule: r))
            expiries[c.ordinal, default: [:]][keyString(expand(name, rule: r))] = wallSeconds() &+ UInt64(max(0, s))
            collections.touch(c)
        }
        for c in r.ctls {
            switch c {
            case .ruleEngine(let m): if mode != .off || m == .off { mode = (mode == .detectionOnly && m == .on && forcedShadow) ? .detectionOnly : m }
            case .ruleRemoveById(let ids): removedIDs += ids
            case .ruleRemoveByTag(let t): removedTags.append(t)
            case .ruleRemoveTargetById(let ids, let e): targetRemovalsByID.append((ids, e))
            case .ruleRemoveTargetByTag(let t, let e): targetRemovalsByTag.append((t, e))
            case .requestBodyProcessor(let p): bodyProcessor = p; resetPrefilterSlot(.requestBody)
            case .forceRequestBodyVariable(let b): forceRequestBodyVariable = b; resetPrefilterSlot(.requestBody)
            case .requestBodyAccess(let b): requestBodyAccess = b
            case .requestBodyLimit(let n): requestBodyLimit = n
            case .ignored: break
            }
        }
    }

    @exclusivity(unchecked) var forcedShadow = false
    public func setShadow() { forcedShadow = true; forceDetectionOnly() }

    // MARK: operators

    /// Runs the operator on a value in the arena. The parameter is expanded first: expansion
    /// may store into the arena, which would move the bytes under `v`'s pointer.
    func execute(_ op: Operator, _ span: Span, capture: Bool) -> Bool {
        // The common case first: a plain @rx that does not match.
        if !capture, let re = op.regex {
            let m = re.matches(buffer(span), scratch)
            if m != op.negated { lastParamOperator = op; lastParamExpanded = nil }
            return m != op.negated
        }
        let param: Bytes = !op.usesParam ? [] : op.param.isConstant ? op.param.constant : expand(op.param)
        let v = buffer(span)
        var r: Bool
        switch op.kind {
        case .rx(let re):
            if capture {
                if let groups = re.firstMatch(v, groups: 9) {
                    for (i, g) in groups.enumerated() { setCapture(i, g) }
                    r = true
                } else { r = false }
            } else { r = re.matches(v) }
        case .pm(let ac):
            if let idx = ac.search(v) {
                r = true
                if capture { setCapture(0, ac.patterns[idx]) }
            } else { r = false }
        case .rxMacro:
            if let re = RegexCache.shared.regex(String(latin1: param)) {
                if capture, let groups = re.firstMatch(v, groups: 9) {
                    for (i, g) in groups.enumerated() { setCapture(i, g) }
                    r = true
                } else { r = re.matches(v) }
            } else { r = false }
        case .eq: r = parseLeadingInt(v) == parseLeadingInt(param)
        case .ge: r = parseLeadingInt(v) >= parseLeadingInt(param)
        case .gt: r = parseLeadingInt(v) > parseLeadingInt(param)
        case .le: r = parseLeadingInt(v) <= parseLeadingInt(param)
        case .lt: r = parseLeadingInt(v) < parseLeadingInt(param)
        case .streq: r = v.elementsEqual(param)
        case .contains, .strmatch: r = param.withUnsafeBufferPointer { bytesFind(v, $0) } != nil
        case .containsWord: r = containsWord(Array(v), param)
        case .beginsWith: r = v.starts(with: param)
        case .endsWith: r = v.count >= param.count && v[(v.count - param.count)...].elementsEqual(param)
        case .within: r = v.isEmpty ? false : param.withUnsafeBufferPointer { bytesFind($0, v) } != nil
        case .validateByteRange(let allowed): r = v.contains { !allowed[Int($0)] }
        case .validateUrlEncoding: r = !Transaction.validURLEncoding(v)
        case .validateUtf8Encoding: r = !Transaction.validUTF8(v)
        case .ipMatch(let m): r = m.contains(v)
        case .detectSQLi:
            var fp = [CChar](repeating: 0, count: 8)
            let res = v.withMemoryRebound(to: CChar.self) { c in fp.withUnsafeMutableBufferPointer { cinjection_sqli(c.baseAddress, c.count, $0.baseAddress) } }
            r = res == 1
            if r, capture {
                let f = fp.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                setCapture(0, f)
            }
        case .detectXSS:
            r = Transaction.detectXSS(v)
            if r, capture { setCapture(0, Array(v)) }
        case .unconditional: r = true
        case .noMatch, .unsupported: r = false
        }
        if r != op.negated {
            lastParamOperator = op
            // Only an expanded parameter needs keeping; the others are the operator's text.
            lastParamExpanded = op.usesParam && !op.param.isConstant ? param : nil
        }
        return op.negated ? !r : r
    }

    static let digits: [Bytes] = (0...9).map { [UInt8(48 + $0)] }
    static let digitKeys: [String] = (0...9).map { String($0) }

    /// TX:0 … TX:9 (capture), by their interned ids.
    func setCapture(_ i: Int, _ value: Bytes) {
        collections[.tx, default: VarStore()].set(id: rs.captureKeyIDs[i], lower: Transaction.digitKeys[i], Transaction.digits[i], value)
    }

    /// libinjection's XSS test. It reports only tags, comments and doctypes (all need `<`) and
    /// attribute values after a dangerous attribute name (a value needs `=`), so text without
    /// either cannot be XSS for it and is not handed to its HTML5 tokenizer, the costliest
    /// operator CRS runs on every value (a unit test holds the linked libinjection to this).
    static func detectXSS(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        guard v.contains(where: { $0 == 60 || $0 == 61 }) else { return false }
        return v.withMemoryRebound(to: CChar.self) { cinjection_xss($0.baseAddress, $0.count) } == 1
    }

    func containsWord(_ v: Bytes, _ w: Bytes) -> Bool {
        if w.isEmpty { return true }
        var start = 0
        while start <= v.count - w.count, let i = bytesFind(Array(v[start...]), w) {
            let a = start + i, b = a + w.count
            let beforeOK = a == 0 || !Transaction.isWordByte(v[a - 1])
            let afterOK = b >= v.count || !Transaction.isWordByte(v[b])
            if beforeOK && afterOK { return true }
            start = a + 1
        }
        return false
    }
    static func isWordByte(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 }

    static func validURLEncoding(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < v.count {
            if v[i] == 37 {
                guard i + 2 < v.count, isHex(v[i + 1]), isHex(v[i + 2]) else { return false }
                i += 3
            } else { i += 1 }
        }
        return true
    }

    static func validUTF8(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < v.count {
            let c = v[i]
            if c < 0x80 { i += 1; continue }
            var n = 0
            var min: UInt32 = 0
            var cp: UInt32 = 0
            if c & 0xe0 == 0xc0 { n = 1; cp = UInt32(c & 0x1f); min = 0x80 }
            else if c & 0xf0 == 0xe0 { n = 2; cp = UInt32(c & 0x0f); min = 0x800 }
            else if c & 0xf8 == 0xf0 { n = 3; cp = UInt32(c & 0x07); min = 0x10000 }
            else { return false }
            guard i + n < v.count else { return false }
            for k in 1...n {
                let d = v[i + k]
                guard d & 0xc0 == 0x80 else { return false }
                cp = cp << 6 | UInt32(d & 0x3f)
            }
            if cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) { return false }
            i += n + 1
        }
        return true
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Regexes built from macro expansions at run time (bounded).
final class RegexCache: Sendable {
    static let shared = RegexCache()
    private let map = Mutex<[String: Regex]>([:])
    func regex(_ p: String) -> Regex? {
        if let r = map.withLock({ $0[p] }) { return r }
        guard let r = try? Regex(p) else { return nil }
        map.withLock { m in
            if m.count > 1000 { m.removeAll() }
            m[p] = r
        }
        return r
    }
}

func wallSeconds() -> UInt64 { wallNanos() / 1_000_000_000 }

func wallNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(max(0, ts.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, ts.tv_nsec))
}
