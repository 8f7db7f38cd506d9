import CInjection

/// What a rule decided for the request: ModSecurity's intervention.
public struct Intervention: Sendable, Equatable {
    public var status: Int
    public var redirect: String?
    public var drop: Bool
    public var ruleID: Int
    public var phase: Int
}

/// One matched rule, for the audit log, metrics and span events.
public struct RuleMatch: Sendable {
    public var id: Int
    public var phase: Int
    public var msg: String
    public var data: String
    public var severity: Int?
    public var tags: [String]
    public var ver: String?
    public var rev: String?
    public var maturity: String?
    public var accuracy: String?
    public var file: String
    public var line: Int
    public var matchedVarName: String
    public var matchedVar: String
    public var operatorName: String
    public var operatorParam: String
    /// Whether this match disrupted the request (enforced deny/drop/redirect).
    public var disruptive: Bool
    public var log: Bool

    /// ModSecurity's message text: `... [id "942100"] [msg "..."] [data "..."] [severity "2"] ...`.
    public func modsecText(uri: String, uniqueID: String, hostname: String) -> String {
        var s = disruptive ? "ModSecurity: Access denied. " : "ModSecurity: Warning. "
        if operatorName == "unconditionalMatch" || matchedVarName.isEmpty {
            s += "Unconditional match in SecAction. "
        } else {
            s += "Matched \"Operator `\(operatorName)' with parameter `\(RuleMatch.clip(operatorParam, 200))' against variable `\(matchedVarName)' (Value: `\(RuleMatch.clip(matchedVar, 200))' ) "
        }
        s += "[file \"\(file)\"] [line \"\(line)\"] [id \"\(id)\"] [rev \"\(rev ?? "")\"] [msg \"\(RuleMatch.esc(msg))\"] [data \"\(RuleMatch.esc(data))\"] "
        s += "[severity \"\(severity.map(String.init) ?? "0")\"] [ver \"\(ver ?? "")\"] [maturity \"\(maturity ?? "0")\"] [accuracy \"\(accuracy ?? "0")\"] "
        for t in tags { s += "[tag \"\(RuleMatch.esc(t))\"] " }
        s += "[hostname \"\(hostname)\"] [uri \"\(RuleMatch.esc(uri))\"] [unique_id \"\(uniqueID)\"]"
        return s
    }

    static func clip(_ s: String, _ n: Int) -> String { s.count > n ? String(s.prefix(n)) + "..." : s }
    static func esc(_ s: String) -> String { s.contains("\"") ? s.replacingAll("\"", "\\\"") : s }
}

extension String {
    func replacingAll(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}

/// One argument, header, cookie or file entry.
struct Entry {
    var key: Bytes
    var keyLower: String
    var value: Bytes
    var id: Int
}

/// A value a target produced, before transformation.
struct Value {
    var collection: Collection
    var key: Bytes?
    var value: Bytes
    /// Transformation cache id (-1: not cached; ≤ -3: the name of entry -2 - id).
    var id: Int
    var name: Bytes {
        guard let key else { return collection.rawValue.latin1 }
        return collection.rawValue.latin1 + [58] + key
    }
}

/// Keyed variable store (TX, IP, …): case-insensitive keys, original spelling kept.
struct VarStore {
    var map: [String: (key: Bytes, value: Bytes)] = [:]
    subscript(_ k: String) -> Bytes? { map[k]?.value }
    mutating func set(_ key: Bytes, _ v: Bytes) { map[keyString(key)] = (key, v) }
    mutating func set(lower kl: String, _ key: Bytes, _ v: Bytes) { map[kl] = (key, v) }
    /// `setvar:c.key=+n` / `=-n`: the stored number (0 if unset) plus or minus `delta`, wrapping.
    mutating func add(lower kl: String, _ key: Bytes, _ delta: Int, subtract: Bool) {
        let cur = map[kl].map { parseLeadingInt($0.value) } ?? 0
        let n = subtract ? cur.subtractingReportingOverflow(delta).partialValue : cur.addingReportingOverflow(delta).partialValue
        map[kl] = (key, n.bytes)
    }
    mutating func remove(_ key: Bytes) { map[keyString(key)] = nil }
}

/// One value's transformation results by chain id (chain ids apart so the scan touches no references).
struct TransformSlot {
    var chains: [Int] = []
    var results: [Bytes] = []
    @inline(__always) func lookup(_ chain: Int) -> Bytes? {
        chains.withUnsafeBufferPointer { c in
            for i in 0..<c.count where c[i] == chain { return results[i] }
            return nil
        }
    }
    mutating func add(_ chain: Int, _ b: Bytes) {
        if chains.isEmpty { chains.reserveCapacity(16); results.reserveCapacity(16) }
        chains.append(chain); results.append(b)
    }
}

/// Per-collection variable stores, indexed by collection case (no hashing).
struct CollectionMap {
    static let size = Collection.allCases.count
    var slots = [VarStore](repeating: VarStore(), count: CollectionMap.size)
    subscript(_ c: Collection) -> VarStore? {
        get { slots[c.ordinal] }
        set { slots[c.ordinal] = newValue ?? VarStore() }
    }
    subscript(_ c: Collection, default d: @autoclosure () -> VarStore) -> VarStore {
        get { slots[c.ordinal] }
        _modify { yield &slots[c.ordinal] }
    }
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
    @exclusivity(unchecked) var matchedVar: Bytes = []
    /// The last matched value; its name (MATCHED_VAR_NAME) is built only when asked for.
    @exclusivity(unchecked) var matchedValue: Value?
    @exclusivity(unchecked) var matchedVarNameCache: Bytes?
    var matchedVarName: Bytes {
        if let n = matchedVarNameCache { return n }
        let n = matchedValue?.name ?? []
        matchedVarNameCache = n
        return n
    }
    /// MATCHED_VARS: matches not yet turned into entries (done when a rule reads the collection).
    @exclusivity(unchecked) var pendingMatchedVars: [(Value, Bytes)] = []
    @exclusivity(unchecked) var matchedVarsBuilt: [Entry] = []
    var matchedVars: [Entry] {
        if !pendingMatchedVars.isEmpty {
            for (v, tv) in pendingMatchedVars {
                let n = v.name
                matchedVarsBuilt.append(Entry(key: n, keyLower: keyString(n), value: tv, id: -1))
            }
            pendingMatchedVars.removeAll(keepingCapacity: true)
        }
        return matchedVarsBuilt
    }
    @exclusivity(unchecked) var currentRule: Rule?
    @exclusivity(unchecked) var lastOperatorParam: Bytes = []
    @exclusivity(unchecked) var lastOperatorParamText: String?
    @exclusivity(unchecked) var removedIDs: [ClosedRange<Int>] = []
    @exclusivity(unchecked) var removedTags: [String] = []
    @exclusivity(unchecked) var targetRemovalsByID: [([ClosedRange<Int>], Exclusion)] = []
    @exclusivity(unchecked) var targetRemovalsByTag: [(String, Exclusion)] = []
    @exclusivity(unchecked) var allowScope: AllowScope?
    @exclusivity(unchecked) public private(set) var intervention: Intervention?
    /// Every matched rule (chain starter) in order.
    @exclusivity(unchecked) public private(set) var matches: [RuleMatch] = []
    /// Transformation results per value id: small (chain id, result) lists, scanned linearly.
    @exclusivity(unchecked) var tcache: [TransformSlot] = []
    @exclusivity(unchecked) var tcacheFixed: [TransformSlot] = []
    /// Names of entries (value id -2 - entry id).
    @exclusivity(unchecked) var tcacheNames: [TransformSlot] = []
    @exclusivity(unchecked) var nextID = 0
    @exclusivity(unchecked) var phasesRun = Set<Int>()

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
    }

    /// Forces DetectionOnly (shadow mode) whatever SecRuleEngine says.
    public func forceDetectionOnly() { if mode == .on { mode = .detectionOnly } }

    func newID() -> Int { nextID += 1; return nextID }

    func entry(_ k: Bytes, _ v: Bytes) -> Entry { Entry(key: k, keyLower: keyString(k), value: v, id: newID()) }

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
        for (name, value) in h {
            let e = entry(Array(name.utf8), Array(value.utf8))
            headers.append(e)
            if e.keyLower == "cookie" { cookies += parseCookies(e.value) }
            if e.keyLower == "host" { hostname = value }
        }
        if let ct = header("content-type") {
            let l = asciiLower(ct)
            if l.starts(with: Array("application/x-www-form-urlencoded".utf8)) { bodyProcessor = "URLENCODED" }
            else if l.starts(with: Array("multipart/form-data".utf8)) { bodyProcessor = "MULTIPART" }
        }
        var tx = VarStore()
        tx.map.reserveCapacity(256)  // CRS sets ~100 TX variables per request
        collections[.tx] = tx
        return runPhase(1)
    }

    func header(_ lower: String) -> Bytes? { headers.first { $0.keyLower == lower }?.value }

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
        return runPhase(2)
    }

    // MARK: response

    public func processResponseHeaders(status: Int, protocol p: String, headers h: [(String, String)]) -> Intervention? {
        responseStatus = status.bytes
        responseProtocol = Array(p.utf8)
        responseHeaders = h.map { entry(Array($0.0.utf8), Array($0.1.utf8)) }
        return runPhase(3)
    }

    /// Whether the response body should be buffered for phase 4 (access on, MIME type listed).
    public var wantsResponseBody: Bool {
        guard responseBodyAccess, mode != .off else { return false }
        guard let ct = responseHeaders.first(where: { $0.keyLower == "content-type" })?.value else { return false }
        let mime = String(latin1: asciiLower(Array(ct.prefix { $0 != 59 }))).trimmingSpaces
        return rs.settings.responseBodyMimeTypes.contains(mime)
    }

    public func appendResponseBody(_ bytes: UnsafeRawBufferPointer) {
        let room = rs.settings.responseBodyLimit - responseBody.count
        if room > 0 { responseBody.append(contentsOf: bytes.prefix(room)) }
    }

    public func processResponseBody() -> Intervention? { runPhase(4) }

    public func processLogging() { _ = runPhase(5) }

    // MARK: phases

    func runPhase(_ p: Int) -> Intervention? {
        guard !phasesRun.contains(p) else { return intervention }
        phasesRun.insert(p)
        if mode == .off || intervention != nil { return intervention }
        if let a = allowScope {
            if a == .all && p < 5 { return nil }
            if a == .request && p <= 2 { return nil }
        }
        let list = rs.phases[p]
        var i = 0
        while i < list.count {
            let r = list[i]
            i += 1
            if r.isMarker || isRemoved(r) { continue }
            guard evaluateChain(r) else { continue }
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
                          file: r.file, line: r.line, matchedVarName: String(latin1: matchedVarName), matchedVar: String(latin1: matchedVar),
                          operatorName: lastOperatorName, operatorParam: lastOperatorParamText ?? String(latin1: lastOperatorParam), disruptive: disruptive, log: log || disruptive)
        matches.append(m)
    }
    @exclusivity(unchecked) var lastOperatorName = ""

    // MARK: rule evaluation

    /// Evaluates a rule and its chain; on a full match runs the non-disruptive actions
    /// (last link first, as ModSecurity v3 does) and returns true.
    func evaluateChain(_ starter: Rule) -> Bool {
        var depth = 0
        var link: Rule? = starter
        while let l = link {
            guard evaluate(l, starter: starter) else { return false }
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

    func evaluate(_ r: Rule, starter: Rule) -> Bool {
        currentRule = starter
        if r.targets.isEmpty {
            lastOperatorName = "unconditionalMatch"
            let m = execute(r.op, [], capture: r.capture)
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
                    var cur = v.value
                    if execute(op, cur, capture: capture) { noteMatch(v, cur, r); matched = true; return }
                    var hit = false
                    for tr in transforms {
                        let next = tr.apply(cur)
                        if next == cur { continue }
                        cur = next
                        if execute(op, cur, capture: capture) { hit = true; break }
                    }
                    if hit { noteMatch(v, cur, r); matched = true }
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

    func noteMatch(_ v: Value, _ tv: Bytes, _ r: Rule) {
        matchedVar = tv
        matchedValue = v
        matchedVarNameCache = nil
        pendingMatchedVars.append((v, tv))
        lastOperatorName = r.op.name
        runSetVars(r)
    }

    func transformed(_ v: Value, _ r: Rule) -> Bytes {
        if r.transforms.isEmpty { return v.value }
        if v.id >= 0 {
            // Entries (ids 1..<1_000_000) in one table; scalars (1_000_000+k) and XML attributes (2_000_000+k) in the other.
            let fixed = v.id >= 1_000_000
            let slot = v.id < 1_000_000 ? v.id : v.id < 2_000_000 ? v.id - 1_000_000 : v.id - 2_000_000 + 64
            let chain = r.transformChainID
            if fixed {
                if slot < tcacheFixed.count {
                    if let hit = tcacheFixed[slot].lookup(chain) { return hit }
                } else {
                    tcacheFixed.append(contentsOf: repeatElement(TransformSlot(), count: slot + 1 - tcacheFixed.count))
                }
            } else {
                if slot < tcache.count {
                    if let hit = tcache[slot].lookup(chain) { return hit }
                } else {
                    tcache.append(contentsOf: repeatElement(TransformSlot(), count: slot + 1 - tcache.count))
                }
            }
            var cur = v.value
            for t in r.transforms { cur = t.apply(cur) }
            if fixed { tcacheFixed[slot].add(chain, cur) } else { tcache[slot].add(chain, cur) }
            return cur
        }
        if v.id <= -3 {
            let slot = -2 &- v.id
            let chain = r.transformChainID
            if slot < tcacheNames.count {
                if let hit = tcacheNames[slot].lookup(chain) { return hit }
            } else {
                tcacheNames.append(contentsOf: repeatElement(TransformSlot(), count: slot + 1 - tcacheNames.count))
            }
            var cur = v.value
            for t in r.transforms { cur = t.apply(cur) }
            tcacheNames[slot].add(chain, cur)
            return cur
        }
        var cur = v.value
        for t in r.transforms { cur = t.apply(cur) }
        return cur
    }

    // MARK: variables

    func collect(_ t: Target, exclusions: [Exclusion]) -> [Value] {
        var out: [Value] = []
        collect(t, exclusions: exclusions) { out.append($0) }
        return out
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
                    guard let kv = collections.slots[Collection.tx.ordinal].map[k] else { return }
                    if !exclusions.isEmpty, exclusions.contains(where: { $0.excludes(.tx, k, kv.key) }) { return }
                    visit(Value(collection: .tx, key: kv.key, value: kv.value, id: -1))
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
        for i in list.indices {
            if let exact, list[i].keyLower != exact { continue }
            if let regex, !regex.matches(list[i].key) { continue }
            if !exclusions.isEmpty, exclusions.contains(where: { $0.excludes(c, list[i].keyLower, list[i].key) }) { continue }
            visit(Value(collection: c, key: list[i].key, value: names ? list[i].key : list[i].value, id: names ? -2 &- list[i].id : list[i].id))
        }
    }

    func collectAny(_ t: Target, exclusions: [Exclusion], _ visit: (Value) -> Void) {
        var count = 0
        let counting = t.count
        func out(_ v: Value) { if counting { count += 1 } else { visit(v) } }
        func keyed(_ list: [Entry], _ c: Collection, names: Bool = false, reportAs: Collection? = nil) {
            let selector = t.key
            let all: Bool
            if case .all = selector { all = true } else { all = false }
            for i in list.indices {
                if !all {
                    if case .exact(let k) = selector, list[i].keyLower != k { continue }
                    guard selector.matches(list[i].keyLower, list[i].key) else { continue }
                }
                if !exclusions.isEmpty, exclusions.contains(where: { x in x.excludes(c, list[i].keyLower, list[i].key) || (reportAs.map { r in x.excludes(r, list[i].keyLower, list[i].key) } ?? false) }) { continue }
                out(Value(collection: reportAs ?? c, key: list[i].key, value: names ? list[i].key : list[i].value, id: names ? -2 &- list[i].id : list[i].id))
            }
        }
        func store(_ c: Collection) {
            guard let s = collections[c] else { return }
            if case .exact(let k) = t.key {
                if let kv = s.map[k], exclusions.isEmpty || !exclusions.contains(where: { $0.excludes(c, k, kv.key) }) {
                    out(Value(collection: c, key: kv.key, value: kv.value, id: -1))
                }
                return
            }
            for (kl, kv) in s.map {
                guard t.key.matches(kl, kv.key) else { continue }
                if !exclusions.isEmpty, exclusions.contains(where: { $0.excludes(c, kl, kv.key) }) { continue }
                out(Value(collection: c, key: kv.key, value: kv.value, id: -1))
            }
        }
        func scalar(_ v: Bytes, id: Int = -1) {
            if !exclusions.isEmpty, exclusions.contains(where: { $0.collection == t.collection }) { return }
            out(Value(collection: t.collection, key: nil, value: v, id: id))
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
            scalar((argsGet + argsPost).reduce(0) { $0 + $1.key.count + $1.value.count }.bytes)
        case .requestHeaders: keyed(headers, .requestHeaders)
        case .requestHeadersNames: keyed(headers, .requestHeadersNames, names: true)
        case .requestCookies: keyed(cookies, .requestCookies)
        case .requestCookiesNames: keyed(cookies, .requestCookiesNames, names: true)
        case .files: keyed(files, .files)
        case .filesNames: keyed(files, .filesNames, names: true)
        case .filesSizes: keyed(filesSizes, .filesSizes)
        case .filesCombinedSize: scalar(filesSizes.reduce(0) { $0 + parseLeadingInt($1.value) }.bytes)
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
                for (k, a) in xmlAttributes.enumerated() { out(Value(collection: .xml, key: Array("//@*".utf8), value: a, id: 2_000_000 + k)) }
            } else if let x = xmlText { scalar(x, id: 1_000_000) }
        case .rule:
            if let r = currentRule, case .exact(let k) = t.key {
                switch k {
                case "id": out(Value(collection: .rule, key: Array("id".utf8), value: r.id.bytes, id: -1))
                case "msg": out(Value(collection: .rule, key: Array("msg".utf8), value: r.msg.map { expand($0) } ?? [], id: -1))
                case "severity": out(Value(collection: .rule, key: Array("severity".utf8), value: (r.severity ?? 0).bytes, id: -1))
                default: break
                }
            }
        case .requestFilename: scalar(filename, id: 1_000_001)
        case .requestBasename: scalar(basename, id: 1_000_002)
        case .requestURI: scalar(uri, id: 1_000_003)
        case .requestURIRaw: scalar(uriRaw, id: 1_000_004)
        case .requestLine: scalar(requestLine, id: 1_000_005)
        case .requestMethod: scalar(method, id: 1_000_006)
        case .requestProtocol: scalar(proto, id: 1_000_007)
        case .queryString: scalar(queryString, id: 1_000_008)
        case .requestBody:
            if bodyProcessor == nil || bodyProcessor == "URLENCODED" || forceRequestBodyVariable { scalar(requestBody, id: 1_000_009) }
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
        case .responseBody: if !responseBody.isEmpty { scalar(responseBody, id: 1_000_010) }
        case .responseContentType: if let v = responseHeaders.first(where: { $0.keyLower == "content-type" })?.value { scalar(v) }
        case .responseContentLength: if let v = responseHeaders.first(where: { $0.keyLower == "content-length" })?.value { scalar(v) }
        case .matchedVar: scalar(matchedVar)
        case .matchedVarName: scalar(matchedVarName)
        case .highestSeverity: scalar((matches.compactMap(\.severity).min() ?? 255).bytes)
        case .statusLine: scalar(responseProtocol + [32] + responseStatus)
        case .fullRequest: scalar(requestLine + [13, 10] + headers.flatMap { $0.key + [58, 32] + $0.value + [13, 10] } + [13, 10] + requestBody)
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
        if counting { visit(Value(collection: t.collection, key: nil, value: count.bytes, id: -1)) }
    }

    // MARK: macros

    func expand(_ m: Macro, rule: Rule? = nil) -> Bytes {
        if m.isConstant { return m.constant }
        var out = Bytes()
        for p in m.parts {
            switch p {
            case .literal(let b): out += b
            case .variable(let c, let key):
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
                        if let kv = collections.slots[c.ordinal].map[key] { out += kv.value }
                        continue
                    }
                default: break
                }
                let t = Target(collection: c, key: key.map { .exact($0) } ?? .all, count: false, text: "")
                if let v = collect(t, exclusions: []).first { out += v.value }
            }
        }
        return out
    }

    // MARK: actions

    /// setvar runs for every matched value as soon as it matches (ModSecurity v3's
    /// "independent of the chained rule result"); the rest after the whole chain matched.
    func runSetVars(_ r: Rule) {
        for sv in r.setvars {
            let key: Bytes, kl: String
            if sv.key.isConstant { key = sv.key.constant; kl = sv.key.constantKey } else { key = expand(sv.key, rule: r); kl = keyString(key) }
            let c = sv.collection
            switch sv.op {
            case .set(let m):
                let v = expand(m, rule: r)
                collections.slots[c.ordinal].set(lower: kl, key, v)
            case .add(let m):
                let d = parseLeadingInt(expand(m, rule: r))
                collections.slots[c.ordinal].add(lower: kl, key, d, subtract: false)
            case .sub(let m):
                let d = parseLeadingInt(expand(m, rule: r))
                collections.slots[c.ordinal].add(lower: kl, key, d, subtract: true)
            case .delete: collections.slots[c.ordinal].map[kl] = nil
            }
        }
    }

    func runActions(_ r: Rule, setvars: Bool = true) {
        if setvars { runSetVars(r) }
        for (c, m) in r.initcols {
            if collections[c] == nil { collections[c] = VarStore() }
            _ = m
        }
        for c in r.ctls {
            switch c {
            case .ruleEngine(let m): if mode != .off || m == .off { mode = (mode == .detectionOnly && m == .on && forcedShadow) ? .detectionOnly : m }
            case .ruleRemoveById(let ids): removedIDs += ids
            case .ruleRemoveByTag(let t): removedTags.append(t)
            case .ruleRemoveTargetById(let ids, let e): targetRemovalsByID.append((ids, e))
            case .ruleRemoveTargetByTag(let t, let e): targetRemovalsByTag.append((t, e))
            case .requestBodyProcessor(let p): bodyProcessor = p
            case .forceRequestBodyVariable(let b): forceRequestBodyVariable = b
            case .requestBodyAccess(let b): requestBodyAccess = b
            case .requestBodyLimit(let n): requestBodyLimit = n
            case .ignored: break
            }
        }
    }

    @exclusivity(unchecked) var forcedShadow = false
    public func setShadow() { forcedShadow = true; forceDetectionOnly() }

    // MARK: operators

    func execute(_ op: Operator, _ v: Bytes, capture: Bool) -> Bool {
        let param: Bytes
        switch op.kind {
        case .rx, .pm, .validateByteRange, .ipMatch, .detectSQLi, .detectXSS, .unconditional, .noMatch, .unsupported, .validateUrlEncoding, .validateUtf8Encoding:
            param = []
        default:
            param = op.param.isConstant ? op.param.constant : expand(op.param)  // constant: stored at load
        }
        var r: Bool
        switch op.kind {
        case .rx(let re):
            if capture {
                if let groups = re.firstMatch(v, groups: 9) {
                    for (i, g) in groups.enumerated() { collections[.tx, default: VarStore()].set(Transaction.digits[i], g) }
                    r = true
                } else { r = false }
            } else { r = re.matches(v) }
        case .pm(let ac):
            if let idx = ac.search(v) {
                r = true
                if capture { collections[.tx, default: VarStore()].set([48], ac.patterns[idx]) }
            } else { r = false }
        case .rxMacro:
            if let re = RegexCache.shared.regex(String(latin1: param)) {
                if capture, let groups = re.firstMatch(v, groups: 9) {
                    for (i, g) in groups.enumerated() { collections[.tx, default: VarStore()].set(Transaction.digits[i], g) }
                    r = true
                } else { r = re.matches(v) }
            } else { r = false }
        case .eq: r = parseLeadingInt(v) == parseLeadingInt(param)
        case .ge: r = parseLeadingInt(v) >= parseLeadingInt(param)
        case .gt: r = parseLeadingInt(v) > parseLeadingInt(param)
        case .le: r = parseLeadingInt(v) <= parseLeadingInt(param)
        case .lt: r = parseLeadingInt(v) < parseLeadingInt(param)
        case .streq: r = v == param
        case .contains: r = bytesContains(v, param)
        case .containsWord: r = containsWord(v, param)
        case .beginsWith: r = v.starts(with: param)
        case .endsWith: r = v.count >= param.count && Array(v.suffix(param.count)) == param
        case .within: r = v.isEmpty ? false : bytesContains(param, v)
        case .strmatch: r = bytesContains(v, param)
        case .validateByteRange(let allowed): r = v.contains { !allowed[Int($0)] }
        case .validateUrlEncoding: r = !Transaction.validURLEncoding(v)
        case .validateUtf8Encoding: r = !Transaction.validUTF8(v)
        case .ipMatch(let m): r = m.contains(String(latin1: v))
        case .detectSQLi:
            var fp = [CChar](repeating: 0, count: 8)
            let res = v.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { c in fp.withUnsafeMutableBufferPointer { cinjection_sqli(c.baseAddress, c.count, $0.baseAddress) } }
            }
            r = res == 1
            if r, capture {
                let f = fp.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                collections[.tx, default: VarStore()].set([48], f)
            }
        case .detectXSS:
            let res = v.withUnsafeBufferPointer { b in b.withMemoryRebound(to: CChar.self) { cinjection_xss($0.baseAddress, $0.count) } }
            r = res == 1
            if r, capture { collections[.tx, default: VarStore()].set([48], v) }
        case .unconditional: r = true
        case .noMatch, .unsupported: r = false
        }
        if r != op.negated {
            switch op.kind {
            case .rx(let re): lastOperatorParamText = re.pattern
            case .pm: lastOperatorParamText = op.param.text
            default: lastOperatorParamText = nil; lastOperatorParam = param
            }
        }
        return op.negated ? !r : r
    }

    static let digits: [Bytes] = (0...9).map { [UInt8(48 + $0)] }

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

    static func validURLEncoding(_ v: Bytes) -> Bool {
        var i = 0
        while i < v.count {
            if v[i] == 37 {
                guard i + 2 < v.count, isHex(v[i + 1]), isHex(v[i + 2]) else { return false }
                i += 3
            } else { i += 1 }
        }
        return true
    }

    static func validUTF8(_ v: Bytes) -> Bool {
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

func wallNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(max(0, ts.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, ts.tv_nsec))
}
