/// The compiled form of SecLang rules: what the parser produces and the evaluator walks.
/// Everything here is immutable after load and shared by every worker thread.

public typealias Bytes = [UInt8]

/// A problem in a rule file, with its position.
public struct RuleDiagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String
    public init(file: String, line: Int, message: String) {
        self.file = file; self.line = line; self.message = message
    }
    public var description: String { "\(file):\(line): \(message)" }
}

/// Every problem of a rule set that failed to load.
public struct RuleErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [RuleDiagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// SecRuleEngine.
public enum EngineMode: String, Sendable {
    case on = "On", detectionOnly = "DetectionOnly", off = "Off"
}

/// What ModSecurity does with a request body over SecRequestBodyLimit.
public enum BodyLimitAction: Sendable { case reject, processPartial }

/// The variables (collections and scalars) SecLang rules can target.
enum Collection: String, Sendable, CaseIterable {
    case args = "ARGS", argsGet = "ARGS_GET", argsPost = "ARGS_POST"
    case argsNames = "ARGS_NAMES", argsGetNames = "ARGS_GET_NAMES", argsPostNames = "ARGS_POST_NAMES"
    case argsCombinedSize = "ARGS_COMBINED_SIZE"
    case requestHeaders = "REQUEST_HEADERS", requestHeadersNames = "REQUEST_HEADERS_NAMES"
    case requestCookies = "REQUEST_COOKIES", requestCookiesNames = "REQUEST_COOKIES_NAMES"
    case requestFilename = "REQUEST_FILENAME", requestBasename = "REQUEST_BASENAME"
    case requestURI = "REQUEST_URI", requestURIRaw = "REQUEST_URI_RAW", requestLine = "REQUEST_LINE"
    case requestMethod = "REQUEST_METHOD", requestProtocol = "REQUEST_PROTOCOL", queryString = "QUERY_STRING"
    case requestBody = "REQUEST_BODY", requestBodyLength = "REQUEST_BODY_LENGTH"
    case files = "FILES", filesNames = "FILES_NAMES", filesSizes = "FILES_SIZES", filesCombinedSize = "FILES_COMBINED_SIZE"
    case multipartPartHeaders = "MULTIPART_PART_HEADERS"
    case multipartStrictError = "MULTIPART_STRICT_ERROR", multipartUnmatchedBoundary = "MULTIPART_UNMATCHED_BOUNDARY"
    case multipartBoundaryQuoted = "MULTIPART_BOUNDARY_QUOTED", multipartBoundaryWhitespace = "MULTIPART_BOUNDARY_WHITESPACE"
    case multipartDataBefore = "MULTIPART_DATA_BEFORE", multipartDataAfter = "MULTIPART_DATA_AFTER"
    case multipartHeaderFolding = "MULTIPART_HEADER_FOLDING", multipartLFLine = "MULTIPART_LF_LINE"
    case multipartMissingSemicolon = "MULTIPART_MISSING_SEMICOLON", multipartInvalidQuoting = "MULTIPART_INVALID_QUOTING"
    case multipartInvalidPart = "MULTIPART_INVALID_PART", multipartInvalidHeaderFolding = "MULTIPART_INVALID_HEADER_FOLDING"
    case multipartFileLimitExceeded = "MULTIPART_FILE_LIMIT_EXCEEDED", multipartCRLFLFLines = "MULTIPART_CRLF_LF_LINES"
    case multipartName = "MULTIPART_NAME", multipartFilename = "MULTIPART_FILENAME"
    case xml = "XML", tx = "TX", ip = "IP", global = "GLOBAL", session = "SESSION", user = "USER", resource = "RESOURCE", geo = "GEO", env = "ENV"
    case remoteAddr = "REMOTE_ADDR", remotePort = "REMOTE_PORT", remoteHost = "REMOTE_HOST"
    case serverAddr = "SERVER_ADDR", serverPort = "SERVER_PORT", serverName = "SERVER_NAME"
    case uniqueID = "UNIQUE_ID", duration = "DURATION"
    case reqbodyError = "REQBODY_ERROR", reqbodyErrorMsg = "REQBODY_ERROR_MSG", reqbodyProcessor = "REQBODY_PROCESSOR"
    case reqbodyProcessorError = "REQBODY_PROCESSOR_ERROR", inboundDataError = "INBOUND_DATA_ERROR", outboundDataError = "OUTBOUND_DATA_ERROR"
    case responseStatus = "RESPONSE_STATUS", responseProtocol = "RESPONSE_PROTOCOL", responseBody = "RESPONSE_BODY"
    case responseHeaders = "RESPONSE_HEADERS", responseHeadersNames = "RESPONSE_HEADERS_NAMES"
    case responseContentType = "RESPONSE_CONTENT_TYPE", responseContentLength = "RESPONSE_CONTENT_LENGTH"
    case matchedVar = "MATCHED_VAR", matchedVarName = "MATCHED_VAR_NAME", matchedVars = "MATCHED_VARS", matchedVarsNames = "MATCHED_VARS_NAMES"
    case rule = "RULE", highestSeverity = "HIGHEST_SEVERITY", statusLine = "STATUS_LINE", fullRequest = "FULL_REQUEST"
    case fullRequestLength = "FULL_REQUEST_LENGTH", pathInfo = "PATH_INFO", authType = "AUTH_TYPE", time = "TIME", timeEpoch = "TIME_EPOCH"
    case urlencodedError = "URLENCODED_ERROR", webAppID = "WEBAPPID"

    /// Dense case number (0..<allCases.count), for array-indexed per-collection state.
    /// (A payload-free enum of fewer than 256 cases is stored as its case number in one byte.)
    @inline(__always) var ordinal: Int { Int(unsafeBitCast(self, to: UInt8.self)) }

    /// Hash and compare by case, not by the raw String (the RawRepresentable defaults).
    func hash(into h: inout Hasher) { h.combine(ordinal) }
    @inline(__always) static func == (a: Collection, b: Collection) -> Bool { a.ordinal == b.ordinal }

    /// Collections with keys (REQUEST_HEADERS:Host); the others are scalars.
    var isKeyed: Bool {
        switch self {
        case .args, .argsGet, .argsPost, .argsNames, .argsGetNames, .argsPostNames, .requestHeaders, .requestHeadersNames,
             .requestCookies, .requestCookiesNames, .files, .filesNames, .filesSizes, .multipartPartHeaders, .xml, .tx, .ip,
             .global, .session, .user, .resource, .geo, .env, .responseHeaders, .responseHeadersNames, .matchedVars,
             .matchedVarsNames, .rule, .multipartName, .multipartFilename:
            return true
        default: return false
        }
    }
}

/// Which keys of a collection a target selects.
enum KeySelector: Sendable {
    case all
    /// Lowercased (keys compare case-insensitively, as in ModSecurity).
    case exact(String)
    case regex(Regex)

    /// For stored collections (TX, IP, …), whose keys are kept as lowercase Strings.
    func matchesStored(_ keyLower: String, _ key: Bytes) -> Bool {
        switch self {
        case .all: return true
        case .exact(let k): return k == keyLower
        case .regex(let r):
            var lower = keyLower
            if !lower.withUTF8({ r.mayMatch(lower: $0) }) { return false }
            return r.matches(key)
        }
    }
}

/// One target of a rule: `ARGS`, `&TX:foo`, `REQUEST_HEADERS:/^x-/`. A class, so evaluating
/// a rule hands out a reference instead of copying the selector and strings; filled in only
/// while the rule set loads.
final class Target: @unchecked Sendable {
    let collection: Collection
    let key: KeySelector
    let count: Bool
    /// The text as written, for diagnostics and ctl matching.
    let text: String
    /// `TX:key`: the key's id in the rule set's `TxKeyTable` (-1: none).
    var txKeyID: Int = -1
    /// `TX:/regex/`: the interned keys the regex may match (its literals occur in the name),
    /// ascending; the others are not looked at. Nil: not computed, look at every key.
    var txCandidates: [Int]?

    init(collection: Collection, key: KeySelector, count: Bool, text: String) {
        self.collection = collection; self.key = key; self.count = count; self.text = text
    }
}

/// An exclusion `!REQUEST_COOKIES:/__utm/` or one added by ctl/SecRuleUpdateTarget.
struct Exclusion: Sendable {
    var collection: Collection
    var key: KeySelector

}

/// A string with `%{collection.key}` macros, split at load. A class: setvars, operators and
/// messages pass it around per rule and per request, one reference instead of four.
final class Macro: Sendable {
    enum Part: Sendable {
        case literal(Bytes)
        /// The key lowercased; for TX keys, the id in the rule set's `TxKeyTable` (-1: none).
        case variable(Collection, String?, Int)
    }
    let parts: [Part]
    let text: String
    /// No macros: the expansion is `constant`, computed once at load.
    let isConstant: Bool
    /// The literal parts joined (the whole expansion when `isConstant`).
    let constant: Bytes
    /// `constant` lowercased as a collection key (setvar/TX keys written without macros).
    let constantKey: String
    /// The leading integer of `constant` (a setvar increment such as `=+5`).
    let constantNumber: Int
    /// A lone `%{tx.key}` with an interned key: its id (-1: another shape) and key.
    let loneTxID: Int
    let loneTxKey: String
    /// The expansion as plain data when every part is a literal or a TX variable with an
    /// interned key (`tx.header_name_%{tx.0}`, `/%{tx.0}/`), else nil: runs of `constant` and
    /// TX ids, in order. Expanding from it copies no `Part` (each copy retains its payload).
    let plan: [PlanStep]?
    /// The largest TX id in `plan`.
    let planMaxTxID: Int
    struct PlanStep {
        /// A run of `constant` (`txID` -1), or the value of TX variable `txID`.
        let start: Int32, count: Int32, txID: Int32
    }

    /// `txKeys`: the loading rule set's table, where TX keys get their ids.
    init(_ s: String, txKeys: TxKeyTable? = nil) {
        text = s
        var parts: [Part] = []
        let b = s.latin1
        var lit: Bytes = []
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 1 < b.count, b[i + 1] == UInt8(ascii: "{"),
               let close = b[(i + 2)...].firstIndex(of: UInt8(ascii: "}")) {
                let name = String(latin1: b[(i + 2)..<close])
                let (colName, key) = Macro.split(name)
                if let c = Collection(rawValue: colName.asciiUppercased) {
                    if !lit.isEmpty { parts.append(.literal(lit)); lit = [] }
                    let kl = key?.asciiLowercased
                    parts.append(.variable(c, kl, c == .tx ? kl.flatMap { txKeys?.intern($0) } ?? -1 : -1))
                    i = close + 1
                    continue
                }
            }
            lit.append(b[i]); i += 1
        }
        if !lit.isEmpty { parts.append(.literal(lit)) }
        self.parts = parts
        isConstant = parts.allSatisfy { if case .literal = $0 { return true } else { return false } }
        var c: Bytes = []
        for p in parts { if case .literal(let b) = p { c += b } }
        constant = c
        constantKey = keyString(c)
        constantNumber = parseLeadingInt(c)
        if parts.count == 1, case .variable(.tx, let key?, let id) = parts[0], id >= 0 {
            loneTxID = id; loneTxKey = key
        } else {
            loneTxID = -1; loneTxKey = ""
        }
        var steps: [PlanStep]? = []
        var offset = 0, maxID = -1
        for p in parts {
            switch p {
            case .literal(let b):
                steps?.append(PlanStep(start: Int32(clamping: offset), count: Int32(clamping: b.count), txID: -1))
                offset += b.count
            case .variable(.tx, _?, let id) where id >= 0 && id <= Int(Int32.max):
                steps?.append(PlanStep(start: 0, count: 0, txID: Int32(id)))
                maxID = max(maxID, id)
            default:
                steps = nil
            }
        }
        plan = offset <= Int(Int32.max) ? steps : nil
        planMaxTxID = maxID
    }

    static func split(_ name: String) -> (String, String?) {
        if let dot = name.firstIndex(where: { $0 == "." || $0 == ":" }) {
            return (String(name[..<dot]), String(name[name.index(after: dot)...]))
        }
        return (name, nil)
    }
}

enum OperatorKind: Sendable {
    case rx(Regex)
    /// @rx whose pattern has macros: compiled per distinct expansion, cached.
    case rxMacro
    case pm(AhoCorasick)
    case eq, ge, gt, le, lt
    case streq, contains, beginsWith, endsWith, within, containsWord
    case strmatch
    case validateByteRange([Bool])
    case validateUrlEncoding, validateUtf8Encoding
    case ipMatch(IPMatcher)
    case detectSQLi, detectXSS
    case unconditional, noMatch
    /// Operators we accept but cannot run here (@rbl, @geoLookup): never match.
    case unsupported(String)
}

/// A class so that evaluating a rule passes one reference instead of copying the payloads.
final class Operator: Sendable {
    let kind: OperatorKind
    let negated: Bool
    /// The parameter (macros expanded per request when not constant).
    let param: Macro
    let name: String
    /// The compiled regex of `@rx` (read without matching on `kind`, which copies the payload).
    let regex: Regex?
    /// Whether the operator reads its parameter at run time (the comparison operators).
    let usesParam: Bool
    init(kind: OperatorKind, negated: Bool, param: Macro, name: String) {
        self.kind = kind; self.negated = negated; self.param = param; self.name = name
        switch kind {
        case .rx(let r): regex = r; usesParam = false
        case .pm, .validateByteRange, .ipMatch, .detectSQLi, .detectXSS, .unconditional, .noMatch, .unsupported,
             .validateUrlEncoding, .validateUtf8Encoding:
            regex = nil; usesParam = false
        default: regex = nil; usesParam = true
        }
    }
}

enum Disruptive: Sendable, Equatable {
    case pass, deny, block, drop, allow(AllowScope), redirect(String)
}
enum AllowScope: Sendable, Equatable { case all, phase, request }

enum SetVarOp: Sendable {
    case set(Macro), add(Macro), sub(Macro), delete
}
struct SetVar: Sendable {
    enum Kind: UInt8 { case set, add, sub, delete }
    var collection: Collection
    var key: Macro     // lowercased at run time
    /// `op` as plain fields, read by `runSetVars` without copying the enum's payload.
    let kind: Kind
    /// The value (`set`) or the amount (`add`, `sub`); nil for `delete`.
    let value: Macro?
    /// A constant TX key's id in the rule set's `TxKeyTable` (-1: none).
    var keyID: Int = -1

    init(collection: Collection, key: Macro, op: SetVarOp) {
        self.collection = collection
        self.key = key
        switch op {
        case .set(let m): kind = .set; value = m
        case .add(let m): kind = .add; value = m
        case .sub(let m): kind = .sub; value = m
        case .delete: kind = .delete; value = nil
        }
    }
}

enum CtlAction: Sendable {
    case ruleEngine(EngineMode)
    case ruleRemoveById([ClosedRange<Int>])
    case ruleRemoveByTag(String)
    case ruleRemoveTargetById([ClosedRange<Int>], Exclusion)
    case ruleRemoveTargetByTag(String, Exclusion)
    case requestBodyProcessor(String)
    case forceRequestBodyVariable(Bool)
    case requestBodyAccess(Bool)
    case requestBodyLimit(Int)
    case ignored
}

/// One SecRule / SecAction / SecMarker (chained links hang off `chained`).
///
/// Stored properties are laid out in declaration order: what the rule loop reads for every
/// rule it visits comes first, so a visit touches the first few cache lines of the object
/// (a request visits hundreds of rules; the audit and log fields are read only on a match).
final class Rule: @unchecked Sendable {
    // Read on every visit.
    @exclusivity(unchecked) var marker: String?
    /// Set when the link is a plain numeric test of TX variables (see `TxCompare`).
    @exclusivity(unchecked) var txCompare: TxCompare? { didSet { txCompareRef = txCompare.map { Unmanaged.passUnretained($0) } } }
    /// The "can it match at all?" pre-test, for rules of the shape it covers (set at finish).
    @exclusivity(unchecked) var fast: FastPlan? { didSet { fastRef = fast.map { Unmanaged.passUnretained($0) } } }
    /// `fast` and `txCompare` as unmanaged references (the properties keep them alive): the
    /// rule loop reads them without reference counting.
    @exclusivity(unchecked) private(set) var fastRef: Unmanaged<FastPlan>?
    @exclusivity(unchecked) private(set) var txCompareRef: Unmanaged<TxCompare>?
    /// The literal prefilter's facts for this link: its bit (-1: none), chain group and sources
    /// (set by `Prefilter.build`).
    @exclusivity(unchecked) var prefilter = PrefilterProbe()
    @exclusivity(unchecked) var capture = false
    @exclusivity(unchecked) var multiMatch = false
    @exclusivity(unchecked) var chained: Rule?
    @exclusivity(unchecked) var id: Int = 0
    // Read when the rule matches (control flow first).
    /// Index of the `skipAfter` marker in this rule's phase list (set at finalize; nil: not found).
    @exclusivity(unchecked) var skipAfterIndex: Int?
    @exclusivity(unchecked) var skip = 0
    @exclusivity(unchecked) var skipAfter: String?
    @exclusivity(unchecked) var disruptive: Disruptive?
    @exclusivity(unchecked) var log: Bool?
    // Read when the rule is evaluated or matches.
    @exclusivity(unchecked) var targets: [Target] = []
    @exclusivity(unchecked) var exclusions: [Exclusion] = []
    @exclusivity(unchecked) var op = Operator(kind: .unconditional, negated: false, param: Macro(""), name: "unconditionalMatch")
    @exclusivity(unchecked) var transforms: [Transform] = []
    @exclusivity(unchecked) var transformChainID = 0
    @exclusivity(unchecked) var setvars: [SetVar] = []
    @exclusivity(unchecked) var initcols: [(Collection, Macro)] = []
    /// expirevar: collection, variable name, seconds (macros allowed in both).
    @exclusivity(unchecked) var expirevars: [(Collection, Macro, Macro)] = []
    @exclusivity(unchecked) var ctls: [CtlAction] = []
    @exclusivity(unchecked) var status: Int?
    // Read at load, or for the audit text of a match.
    @exclusivity(unchecked) var phase: Int = 2
    @exclusivity(unchecked) var hasTNone = false
    @exclusivity(unchecked) var msg: Macro?
    @exclusivity(unchecked) var logdata: Macro?
    @exclusivity(unchecked) var tags: [String] = []
    @exclusivity(unchecked) var severity: Int?
    @exclusivity(unchecked) var ver: String?
    @exclusivity(unchecked) var rev: String?
    @exclusivity(unchecked) var maturity: String?
    @exclusivity(unchecked) var accuracy: String?
    @exclusivity(unchecked) var auditlog: Bool?
    @exclusivity(unchecked) var chain = false
    @exclusivity(unchecked) var file = ""
    /// The fixed parts of this rule's audit text (`RuleMatch.headText`/`tailText`), JSON-escaped
    /// at load: every match of the rule copies them instead of escaping them again.
    @exclusivity(unchecked) var auditHead: [UInt8] = []
    @exclusivity(unchecked) var auditTail: [UInt8] = []
    @exclusivity(unchecked) var line = 0
    @exclusivity(unchecked) var isChainLink = false
    /// Index of this rule in its phase list (set at finalize).
    @exclusivity(unchecked) var index = 0
    @exclusivity(unchecked) var idString = "0"

    var isMarker: Bool { marker != nil }
}

enum Severity {
    static let names = ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"]
    static func parse(_ s: String) -> Int? {
        if let n = Int(s), (0...7).contains(n) { return n }
        return names.firstIndex(of: s.uppercased())
    }
}

/// Engine settings from Sec* directives.
public struct EngineSettings: Sendable {
    public var ruleEngine: EngineMode = .on
    public var requestBodyAccess = true
    public var requestBodyLimit = 13_107_200
    public var requestBodyNoFilesLimit = 131_072
    public var requestBodyLimitAction: BodyLimitAction = .reject
    public var responseBodyAccess = false
    public var responseBodyLimit = 524_288
    public var responseBodyLimitAction: BodyLimitAction = .processPartial
    public var responseBodyMimeTypes: [String] = ["text/plain", "text/html"]
    public var argumentSeparator: UInt8 = UInt8(ascii: "&")
    public var pcreMatchLimit: UInt32 = 100_000
    public var collectionTimeout = 3600
    public var componentSignatures: [String] = []
}

/// A rule link of the shapes CRS uses for control flow and set-up, `SecRule
/// TX:EXECUTING_PARANOIA_LEVEL "@lt 2" "...,skipAfter:..."`, `SecRule &TX:x "@eq 0"
/// "...,setvar:tx.x=5"`, `SecRule &TX:x|TX:x "@eq 0"` (the application exclusion switches)
/// and `SecRule TX:ANOMALY_SCORE "@ge %{tx.threshold}"`: exact TX keys (or their counts), no
/// exclusions or transformations, a numeric operator whose operand is a constant or one TX
/// variable, no capture. About 130 such links run per request; they are decided from cached
/// TX reads instead of the general evaluator (each match then runs the same `noteMatch`,
/// setvars included, in target order).
final class TxCompare: Sendable {
    enum Kind { case eq, ge, gt, le, lt }
    /// One target: `TX:key`, or `&TX:key` (`count`: the operator sees 1 or 0, set or not).
    struct Operand: Sendable {
        let keyID: Int
        let key: String
        let count: Bool
    }
    // Stored properties in declaration order: what every comparison reads fits in the
    // object's first cache line (the header takes 16 bytes).
    /// The first target, inline (most links have one).
    let keyID: Int
    /// The constant operand (when `operandKeyID` is -1).
    let operand: Int
    /// `@ge %{tx.key}`: the interned id of the TX variable whose value is the operand, read
    /// when the link runs (-1: the operand is constant).
    let operandKeyID: Int
    let kind: Kind
    let count: Bool
    let negated: Bool
    let key: String
    // Read on a match, or for the rare link with more than one target.
    let more: [Operand]
    let param: Bytes
    let operandKey: String?

    init?(_ r: Rule, intern: (String) -> Int) {
        guard !r.targets.isEmpty, r.exclusions.isEmpty, r.transforms.isEmpty, !r.capture, !r.multiMatch else { return nil }
        var operandKey: String?
        var operandKeyID = -1
        if !r.op.param.isConstant {
            guard r.op.param.parts.count == 1, case .variable(.tx, let ok?, let oid) = r.op.param.parts[0], oid >= 0 else { return nil }
            operandKey = ok
            operandKeyID = oid
        }
        self.operandKey = operandKey
        self.operandKeyID = operandKeyID
        var targets: [Operand] = []
        for t in r.targets {
            guard t.collection == .tx, case .exact(let k) = t.key else { return nil }
            targets.append(Operand(keyID: intern(k), key: k, count: t.count))
        }
        guard let first = targets.first else { return nil }
        keyID = first.keyID
        key = first.key
        count = first.count
        more = Array(targets.dropFirst())
        switch r.op.kind {
        case .eq: kind = .eq
        case .ge: kind = .ge
        case .gt: kind = .gt
        case .le: kind = .le
        case .lt: kind = .lt
        default: return nil
        }
        param = r.op.param.constant
        operand = parseLeadingInt(param)
        negated = r.op.negated
    }
}
