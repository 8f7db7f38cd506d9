#if canImport(Glibc)
import Glibc
#endif

/// A compiled rule set: settings plus rules per phase, immutable and shared by all workers.
public final class RuleSet: @unchecked Sendable {
    public let settings: EngineSettings
    /// Index 1...5; chain starters and markers in file order.
    let phases: [[Rule]]
    /// Per phase: marker name → index of the marker in that phase's list.
    let markers: [[String: Int]]
    let defaultDisruptive: [Disruptive]
    let defaultLog: [Bool]
    let rulesByID: [Int: Rule]
    public let ruleCount: Int
    /// Every file read (rule files, includes, data files), for reload watching.
    public let files: [String]
    public let warnings: [RuleDiagnostic]
    /// The literal prefilter over the rules that have required literals (nil: none do).
    let prefilter: Prefilter?
    /// Per phase, aligned with `phases`: each entry's prefilter facts (markers: none).
    let probes: [[PrefilterProbe]]
    /// `phases` as unmanaged references (`phases` keeps the rules alive): the rule loop
    /// evaluates a rule through one without reference counting it.
    let phaseRefs: [[Unmanaged<Rule>]]
    /// The TX keys the rules name, numbered at load (`VarStore.fixed`).
    let txKeys: TxKeyTable
    /// Per transformation chain (`Rule.transformChainID`), `Transform.triggers` of the chain.
    let chainTriggers: [UInt32]
    /// The ids of TX:0 … TX:9 (-1: no rule names it).
    let captureKeyIDs: [Int]

    init(settings: EngineSettings, phases: [[Rule]], markers: [[String: Int]], defaultDisruptive: [Disruptive],
         defaultLog: [Bool], rulesByID: [Int: Rule], files: [String], warnings: [RuleDiagnostic], prefilter: Prefilter?, txKeys: TxKeyTable, chainTriggers: [UInt32]) {
        self.settings = settings; self.phases = phases; self.markers = markers; self.prefilter = prefilter
        probes = phases.map { list in
            list.map { $0.isMarker ? PrefilterProbe(marker: true) : prefilter == nil ? PrefilterProbe() : $0.prefilter }
        }
        phaseRefs = phases.map { list in list.map { Unmanaged.passUnretained($0) } }
        self.txKeys = txKeys
        self.chainTriggers = chainTriggers
        captureKeyIDs = (0...9).map { txKeys.ids[String($0)] ?? -1 }
        self.defaultDisruptive = defaultDisruptive; self.defaultLog = defaultLog
        self.rulesByID = rulesByID; self.ruleCount = rulesByID.count; self.files = files; self.warnings = warnings
    }
}

/// The SecLang loader: directives, rules, includes. Errors carry file:line.
public enum SecLang {
    /// Loads rule files (globs allowed) in order.
    public static func load(files: [String]) -> Result<RuleSet, RuleErrors> {
        let l = Loader()
        for f in files { l.include(pattern: f, baseDir: nil, from: ("config", 0)) }
        return l.finish()
    }

    /// Loads rules from text (tests, inline rules); `name` is used in diagnostics and
    /// relative paths resolve against `baseDir`.
    public static func load(text: String, name: String = "<inline>", baseDir: String = ".") -> Result<RuleSet, RuleErrors> {
        let l = Loader()
        l.parse(bytes: Array(text.utf8), file: name, dir: baseDir)
        return l.finish()
    }
}

/// Directives ModSecurity accepts that do not change decisions here (logging, storage).
private let ignoredDirectives: Set<String> = [
    "secauditengine", "secauditlog", "secauditlog2", "secauditlogparts", "secauditlogrelevantstatus", "secauditlogstoragedir",
    "secauditlogtype", "secauditlogformat", "secauditlogdirmode", "secauditlogfilemode", "secdebuglog", "secdebugloglevel",
    "sectmpdir", "secdatadir", "secuploaddir", "secuploadkeepfiles", "secuploadfilemode", "secuploadfilelimit", "sectmpsaveuploadedfiles",
    "seccookieformat", "secunicodemapfile", "secstatusengine", "secpcrematchlimitrecursion", "secserversignature", "secwebappid",
    "secxmlexternalentity", "sechttpblkey", "secrequestbodyinmemorylimit", "secconnengine", "secremoterules", "secremoterulesfailaction",
    "secgeolookupdb", "secguardianlog", "secsensorid", "secstreaminbodyinspection", "secstreamoutbodyinspection", "secresponsebodymimetypesclear",
    "secargumentslimit", "seccontentinjection", "secdisablebackendcompression", "secinterceptonerror", "secruleperftime", "secrulescript", "seccachetransformations",
]

final class Loader {
    var settings = EngineSettings()
    var rules: [Rule] = []            // chain starters and markers, file order
    var errors: [RuleDiagnostic] = []
    var warnings: [RuleDiagnostic] = []
    var files: [String] = []
    var includeDepth = 0
    var defaultDisruptive: [Disruptive] = Array(repeating: .pass, count: 6)
    var defaultLog: [Bool] = Array(repeating: true, count: 6)
    var defaultTransforms: [[Transform]] = Array(repeating: [], count: 6)
    var chainTail: Rule?              // the last link of an open chain
    var removeByID: [ClosedRange<Int>] = []
    var removeByTag: [String] = []
    var removeByMsg: [String] = []
    var updateTargets: [(ids: [ClosedRange<Int>], tag: String?, spec: String, file: String, line: Int)] = []
    var updateActions: [(id: Int, actions: String, file: String, line: Int)] = []
    var pmCache: [String: AhoCorasick] = [:]
    /// TX key ids for this rule set (macros, setvars, pre-tests).
    let txKeys = TxKeyTable()

    func error(_ file: String, _ line: Int, _ m: String) { errors.append(RuleDiagnostic(file: file, line: line, message: m)) }

    // MARK: files

    func include(pattern: String, baseDir: String?, from: (String, Int), optional: Bool = false) {
        includeDepth += 1
        defer { includeDepth -= 1 }
        guard includeDepth < 20 else { error(from.0, from.1, "Include nested too deeply at \(pattern)"); return }
        var path = pattern
        if !path.hasPrefix("/"), let baseDir { path = baseDir + "/" + path }
        let matches: [String]
        if path.contains("*") || path.contains("?") || path.contains("[") {
            matches = Loader.glob(path)
            if matches.isEmpty && !optional { warnings.append(RuleDiagnostic(file: from.0, line: from.1, message: "Include \(pattern): no file matches")) }
        } else if optional && access(path, R_OK) != 0 { matches = [] } else { matches = [path] }
        for m in matches {
            guard let bytes = Loader.readFile(m) else { error(from.0, from.1, "cannot read rule file \(m)"); continue }
            files.append(m)
            parse(bytes: bytes, file: m, dir: Loader.dirname(m))
        }
    }

    static func dirname(_ p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return "." }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    static func glob(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard Glibc.glob(pattern, 0, nil, &g) == 0 else { return [] }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) { if let p = g.gl_pathv[i] { out.append(String(cString: p)) } }
        return out.sorted()
    }

    static func readFile(_ path: String) -> Bytes? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out = Bytes()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, 65536, f) }
            if n > 0 { out += buf[0..<n] }
            if n < 65536 { break }
            if out.count > 64 << 20 { return nil }
        }
        return out
    }

    // MARK: lines and tokens

    func parse(bytes: Bytes, file: String, dir: String) {
        let text = String(latin1: bytes)
        var physical = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> Substring in
            line.hasSuffix("\r") ? line.dropLast() : line
        }
        if physical.last == "" { physical.removeLast() }
        var i = 0
        while i < physical.count {
            let startLine = i + 1
            var line = String(physical[i])
            i += 1
            while line.hasSuffix("\\"), i < physical.count {
                line.removeLast()
                line += physical[i]
                i += 1
            }
            let trimmed = line.trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            directive(trimmed, file: file, line: startLine, dir: dir)
        }
    }

    /// Splits a directive line into its arguments (double or single quotes, `\"` escapes).
    static func tokenize(_ s: String) -> [String]? {
        var out: [String] = []
        let c = Array(s.unicodeScalars)
        var i = 0
        while i < c.count {
            while i < c.count, c[i] == " " || c[i] == "\t" { i += 1 }
            if i >= c.count { break }
            var tok = String.UnicodeScalarView()
            if c[i] == "\"" || c[i] == "'" {
                let q = c[i]
                i += 1
                var closed = false
                while i < c.count {
                    if c[i] == "\\", i + 1 < c.count {
                        // As Apache's ap_getword_conf (CRS is written for it): \\ and \" unescape.
                        if c[i + 1] == q || c[i + 1] == "\\" { tok.append(c[i + 1]) } else { tok.append(c[i]); tok.append(c[i + 1]) }
                        i += 2; continue
                    }
                    if c[i] == q { closed = true; i += 1; break }
                    tok.append(c[i]); i += 1
                }
                if !closed { return nil }
            } else {
                while i < c.count, c[i] != " ", c[i] != "\t" { tok.append(c[i]); i += 1 }
            }
            out.append(String(tok))
        }
        return out
    }

    // MARK: directives

    func directive(_ text: String, file: String, line: Int, dir: String) {
        guard let args = Loader.tokenize(text), let name = args.first else {
            error(file, line, "unterminated quoted string"); return
        }
        let rest = Array(args.dropFirst())
        let lname = name.asciiLowercased
        func one() -> String? {
            guard rest.count == 1 else { error(file, line, "\(name) takes one argument, got \(rest.count)"); return nil }
            return rest[0]
        }
        func onOff(_ set: (Bool) -> Void) {
            guard let v = one() else { return }
            switch v.asciiLowercased {
            case "on": set(true)
            case "off": set(false)
            default: error(file, line, "\(name) must be On or Off, got '\(v)'")
            }
        }
        func int(_ set: (Int) -> Void) {
            guard let v = one() else { return }
            if let n = Int(v), n >= 0 { set(n) } else { error(file, line, "\(name) must be a non-negative integer, got '\(v)'") }
        }
        switch lname {
        case "secrule":
            guard rest.count == 2 || rest.count == 3 else { error(file, line, "SecRule takes variables, operator and actions (got \(rest.count) arguments)"); return }
            rule(targets: rest[0], op: rest[1], actions: rest.count == 3 ? rest[2] : nil, file: file, line: line, dir: dir)
        case "secaction":
            guard let a = one() else { return }
            rule(targets: nil, op: nil, actions: a, file: file, line: line, dir: dir)
        case "secmarker":
            guard let m = one() else { return }
            let r = Rule()
            r.marker = m; r.file = file; r.line = line
            if chainTail != nil { error(file, line, "SecMarker inside an unfinished chain"); chainTail = nil }
            rules.append(r)
        case "secdefaultaction":
            guard let a = one() else { return }
            defaultAction(a, file: file, line: line)
        case "secruleengine":
            guard let v = one() else { return }
            switch v.asciiLowercased {
            case "on": settings.ruleEngine = .on
            case "off": settings.ruleEngine = .off
            case "detectiononly": settings.ruleEngine = .detectionOnly
            default: error(file, line, "SecRuleEngine must be On, Off or DetectionOnly, got '\(v)'")
            }
        case "secrequestbodyaccess": onOff { settings.requestBodyAccess = $0 }
        case "secresponsebodyaccess": onOff { settings.responseBodyAccess = $0 }
        case "secrequestbodylimit": int { settings.requestBodyLimit = $0 }
        case "secrequestbodynofileslimit": int { settings.requestBodyNoFilesLimit = $0 }
        case "secresponsebodylimit": int { settings.responseBodyLimit = $0 }
        case "seccollectiontimeout": int { settings.collectionTimeout = $0 }
        case "secpcrematchlimit": int { settings.pcreMatchLimit = UInt32(clamping: $0) }
        case "secrequestbodylimitaction", "secresponsebodylimitaction":
            guard let v = one() else { return }
            let a: BodyLimitAction
            switch v.asciiLowercased {
            case "reject": a = .reject
            case "processpartial": a = .processPartial
            default: error(file, line, "\(name) must be Reject or ProcessPartial, got '\(v)'"); return
            }
            if lname == "secrequestbodylimitaction" { settings.requestBodyLimitAction = a } else { settings.responseBodyLimitAction = a }
        case "secresponsebodymimetype":
            settings.responseBodyMimeTypes = rest.flatMap { $0.split(separator: " ").map { String($0).asciiLowercased } }
        case "secargumentseparator":
            guard let v = one() else { return }
            if v.utf8.count == 1, let b = v.utf8.first { settings.argumentSeparator = b } else { error(file, line, "SecArgumentSeparator must be one character") }
        case "seccomponentsignature":
            guard let v = one() else { return }
            settings.componentSignatures.append(v)
        case "include", "includeoptional":
            guard let v = one() else { return }
            include(pattern: v, baseDir: dir, from: (file, line), optional: lname == "includeoptional")
        case "secruleremovebyid":
            guard !rest.isEmpty else { error(file, line, "SecRuleRemoveById needs ids"); return }
            for a in rest.flatMap({ $0.split(separator: " ").map(String.init) }) {
                if let r = Loader.idRange(a) { removeByID.append(r) } else { error(file, line, "SecRuleRemoveById: bad id or range '\(a)'") }
            }
        case "secruleremovebytag":
            guard let v = one() else { return }
            removeByTag.append(v)
        case "secruleremovebymsg":
            guard let v = one() else { return }
            removeByMsg.append(v)
        case "secruleupdatetargetbyid", "secruleupdatetargetbytag", "secruleupdatetargetbymsg":
            guard rest.count >= 2 else { error(file, line, "\(name) takes a rule id and targets"); return }
            if lname == "secruleupdatetargetbyid" {
                let ids = rest[0].split(separator: ",").compactMap { Loader.idRange(String($0).trimmingSpaces) }
                guard !ids.isEmpty else { error(file, line, "\(name): bad id '\(rest[0])'"); return }
                updateTargets.append((ids, nil, rest[1], file, line))
            } else {
                updateTargets.append(([], rest[0], rest[1], file, line))
            }
        case "secruleupdateactionbyid":
            guard rest.count == 2, let id = Int(rest[0].split(separator: ":").first ?? "") else { error(file, line, "SecRuleUpdateActionById takes an id and actions"); return }
            updateActions.append((id, rest[1], file, line))
        default:
            if ignoredDirectives.contains(lname) {
                return
            }
            error(file, line, "unknown directive '\(name)'")
        }
    }

    static func idRange(_ s: String) -> ClosedRange<Int>? {
        if let dash = s.firstIndex(of: "-"), dash != s.startIndex {
            guard let a = Int(s[..<dash]), let b = Int(s[s.index(after: dash)...]), a <= b else { return nil }
            return a...b
        }
        guard let n = Int(s) else { return nil }
        return n...n
    }

    func defaultAction(_ text: String, file: String, line: Int) {
        let r = Rule()
        r.file = file; r.line = line
        guard let actions = Loader.splitActions(text) else { error(file, line, "malformed action list"); return }
        for (n, v) in actions { applyAction(r, n, v, file: file, line: line, dir: ".") }
        let phase = r.phase
        if let d = r.disruptive { defaultDisruptive[phase] = d == .block ? .pass : d }
        if let l = r.log { defaultLog[phase] = l }
        defaultTransforms[phase] = r.transforms
    }

    // MARK: rules

    func rule(targets: String?, op: String?, actions: String?, file: String, line: Int, dir: String) {
        let r = Rule()
        r.file = file; r.line = line
        if let targets {
            guard parseTargets(targets, into: r, file: file, line: line) else { return }
        }
        if let op {
            guard let o = parseOperator(op, file: file, line: line, dir: dir) else { return }
            r.op = o
        }
        if let actions {
            guard let list = Loader.splitActions(actions) else { error(file, line, "malformed action list: \(actions)"); return }
            for (n, v) in list { applyAction(r, n, v, file: file, line: line, dir: dir) }
        }
        if let tail = chainTail {
            r.isChainLink = true
            r.phase = tail.phase
            tail.chained = r
            chainTail = r.chain ? r : nil
            return
        }
        guard r.id > 0 else { error(file, line, "rule has no id action"); return }
        if !r.hasTNone { r.transforms = defaultTransforms[r.phase] + r.transforms }
        rules.append(r)
        chainTail = r.chain ? r : nil
    }

    /// `a,b:'c, d',e:f` → [(a,nil),(b,"c, d"),(e,"f")]
    static func splitActions(_ s: String) -> [(String, String?)]? {
        var out: [(String, String?)] = []
        let c = Array(s.unicodeScalars)
        var i = 0
        while i < c.count {
            while i < c.count, c[i] == " " || c[i] == "\t" || c[i] == "," { i += 1 }
            if i >= c.count { break }
            var name = String.UnicodeScalarView()
            while i < c.count, c[i] != ":", c[i] != "," { name.append(c[i]); i += 1 }
            let n = String(name).trimmingSpaces
            if i < c.count, c[i] == ":" {
                i += 1
                while i < c.count, c[i] == " " { i += 1 }
                var v = String.UnicodeScalarView()
                if i < c.count, c[i] == "'" {
                    i += 1
                    var closed = false
                    while i < c.count {
                        if c[i] == "\\", i + 1 < c.count, c[i + 1] == "'" { v.append("'"); i += 2; continue }
                        if c[i] == "'" { closed = true; i += 1; break }
                        v.append(c[i]); i += 1
                    }
                    if !closed { return nil }
                    while i < c.count, c[i] != "," { i += 1 }
                    out.append((n, String(v)))
                } else {
                    while i < c.count, c[i] != "," { v.append(c[i]); i += 1 }
                    out.append((n, String(v).trimmingSpaces))
                }
            } else {
                out.append((n, nil))
            }
        }
        return out
    }

    func parseTargets(_ s: String, into r: Rule, file: String, line: Int) -> Bool {
        guard let parts = Loader.splitTargets(s) else { error(file, line, "malformed variable list '\(s)'"); return false }
        for p in parts {
            guard let t = parseTarget(p, file: file, line: line) else { return false }
            switch t {
            case .target(let tt): r.targets.append(tt)
            case .exclusion(let e): r.exclusions.append(e)
            }
        }
        if r.targets.isEmpty { error(file, line, "rule has no variables"); return false }
        return true
    }

    enum ParsedTarget { case target(Target), exclusion(Exclusion) }

    func parseTarget(_ raw: String, file: String, line: Int) -> ParsedTarget? {
        var p = Substring(raw.trimmingSpaces)
        var negate = false, count = false
        if p.hasPrefix("!") { negate = true; p = p.dropFirst() }
        if p.hasPrefix("&") { count = true; p = p.dropFirst() }
        var name = p
        var keyText: Substring?
        if let colon = p.firstIndex(of: ":") { name = p[..<colon]; keyText = p[p.index(after: colon)...] }
        guard let col = Collection(rawValue: String(name).asciiUppercased) else {
            error(file, line, "unknown variable '\(name)'"); return nil
        }
        var key = KeySelector.all
        if var k = keyText {
            if k.count >= 2, k.hasPrefix("'"), k.hasSuffix("'") { k = k.dropFirst().dropLast() }
            if col == .xml {
                // XPath: `//@*` (attribute values) or the whole document's text (`/*`).
                key = k.contains("@") ? .exact("@") : .all
            } else if k.count >= 2, k.hasPrefix("/"), k.hasSuffix("/") {
                do { key = .regex(try Regex(String(k.dropFirst().dropLast()), caseless: true, literals: true)) }
                catch { self.error(file, line, "bad regex key in '\(raw)': \(error.message)"); return nil }
            } else if !k.isEmpty {
                key = .exact(String(k).asciiLowercased)
            }
        }
        if negate {
            return .exclusion(Exclusion(collection: col, key: key))
        }
        let t = Target(collection: col, key: key, count: count, text: raw)
        if col == .tx, case .exact(let k) = key { t.txKeyID = txKeys.intern(k) }
        return .target(t)
    }

    /// Splits at `|` outside `/regex/` keys and quotes.
    static func splitTargets(_ s: String) -> [String]? {
        var out: [String] = []
        let c = Array(s.unicodeScalars)
        var cur = String.UnicodeScalarView()
        var i = 0
        var afterColon = false
        while i < c.count {
            let ch = c[i]
            if ch == "|" { out.append(String(cur)); cur = .init(); afterColon = false; i += 1; continue }
            if ch == ":" && !afterColon {
                afterColon = true
                cur.append(ch); i += 1
                // A key in quotes or slashes runs to its closing delimiter.
                var quote: Unicode.Scalar?
                if i < c.count, c[i] == "'" { quote = "'"; cur.append(c[i]); i += 1 }
                if i < c.count, c[i] == "/" {
                    // A /regex/ key when a closing slash ends the element; else a plain key (XML:/*).
                    var j = i + 1
                    var closeAt: Int?
                    while j < c.count {
                        if c[j] == "\\", j + 1 < c.count { j += 2; continue }
                        if c[j] == "/" {
                            let next = j + 1 < c.count ? c[j + 1] : "|"
                            if next == "|" || (quote != nil && next == quote!) { closeAt = j; break }
                        }
                        j += 1
                    }
                    if let e = closeAt {
                        while i <= e { cur.append(c[i]); i += 1 }
                    }
                }
                if let q = quote {
                    while i < c.count, c[i] != q { cur.append(c[i]); i += 1 }
                    if i < c.count { cur.append(c[i]); i += 1 }
                }
                continue
            }
            cur.append(ch); i += 1
        }
        out.append(String(cur))
        return out.filter { !$0.trimmingSpaces.isEmpty }
    }

    func parseOperator(_ raw: String, file: String, line: Int, dir: String) -> Operator? {
        var s = Substring(raw)
        while s.first == " " { s = s.dropFirst() }
        var negated = false
        if s.hasPrefix("!") { negated = true; s = s.dropFirst() }
        var name = "rx"
        var param = String(s)
        if s.hasPrefix("@") {
            let body = s.dropFirst()
            if let sp = body.firstIndex(where: { $0 == " " || $0 == "\t" }) {
                name = String(body[..<sp])
                param = String(body[body.index(after: sp)...])
            } else { name = String(body); param = "" }
        }
        let macro = Macro(param, txKeys: txKeys)
        let kind: OperatorKind
        func needsConstant() -> Bool {
            if !macro.isConstant { error(file, line, "@\(name) does not accept macros"); return false }
            return true
        }
        switch name.asciiLowercased {
        case "rx":
            if !macro.isConstant { kind = .rxMacro; break }
            do { kind = .rx(try Regex(param)) }
            catch { self.error(file, line, "bad regex in @rx at offset \(error.offset): \(error.message)"); return nil }
        case "pm":
            kind = .pm(AhoCorasick(param.split(separator: " ").map { String($0).latin1 }))
        case "pmfromfile", "pmf":
            var phrases: [Bytes] = []
            for f in param.split(separator: " ") {
                let path = f.hasPrefix("/") ? String(f) : dir + "/" + f
                guard let data = Loader.readFile(path) else { error(file, line, "@\(name): cannot read \(path)"); return nil }
                files.append(path)
                for l in String(latin1: data).split(separator: "\n") {
                    let t = String(l).trimmingSpaces
                    if t.isEmpty || t.hasPrefix("#") { continue }
                    phrases.append(t.latin1)
                }
            }
            kind = .pm(AhoCorasick(phrases))
        case "eq": kind = .eq
        case "ge": kind = .ge
        case "gt": kind = .gt
        case "le": kind = .le
        case "lt": kind = .lt
        case "streq": kind = .streq
        case "contains": kind = .contains
        case "containsword": kind = .containsWord
        case "beginswith": kind = .beginsWith
        case "endswith": kind = .endsWith
        case "within": kind = .within
        case "strmatch": kind = .strmatch
        case "validatebyterange":
            var allowed = [Bool](repeating: false, count: 256)
            for part in param.split(separator: ",") {
                let t = String(part).trimmingSpaces
                if let dash = t.firstIndex(of: "-") {
                    guard let a = Int(t[..<dash]), let b = Int(t[t.index(after: dash)...]), 0 <= a, a <= b, b <= 255 else {
                        error(file, line, "@validateByteRange: bad range '\(t)'"); return nil
                    }
                    for x in a...b { allowed[x] = true }
                } else {
                    guard let a = Int(t), (0...255).contains(a) else { error(file, line, "@validateByteRange: bad value '\(t)'"); return nil }
                    allowed[a] = true
                }
            }
            kind = .validateByteRange(allowed)
        case "validateurlencoding": kind = .validateUrlEncoding
        case "validateutf8encoding": kind = .validateUtf8Encoding
        case "ipmatch":
            guard let m = IPMatcher(param.split(separator: ",").map(String.init)) else { error(file, line, "@ipMatch: bad address list '\(param)'"); return nil }
            kind = .ipMatch(m)
        case "ipmatchfromfile", "ipmatchf":
            let path = param.hasPrefix("/") ? param : dir + "/" + param
            guard let data = Loader.readFile(path) else { error(file, line, "@\(name): cannot read \(path)"); return nil }
            files.append(path)
            let list = String(latin1: data).split(separator: "\n").map { String($0).trimmingSpaces }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            guard let m = IPMatcher(list) else { error(file, line, "@\(name): bad address in \(path)"); return nil }
            kind = .ipMatch(m)
        case "detectsqli": kind = .detectSQLi
        case "detectxss": kind = .detectXSS
        case "unconditionalmatch": kind = .unconditional
        case "nomatch": kind = .noMatch
        case "rbl", "geolookup", "rsub", "verifycc", "verifycpf", "verifyssn", "inspectfile", "fuzzyhash", "validatedtd", "validateschema", "validatehash":
            warnings.append(RuleDiagnostic(file: file, line: line, message: "operator @\(name) is not supported here; it never matches"))
            kind = .unsupported(name)
        default:
            error(file, line, "unknown operator '@\(name)'"); return nil
        }
        return Operator(kind: kind, negated: negated, param: macro, name: name)
    }

    // MARK: actions

    func applyAction(_ r: Rule, _ name: String, _ value: String?, file: String, line: Int, dir: String) {
        let v = value ?? ""
        func need() -> Bool {
            if value == nil { error(file, line, "action '\(name)' needs a value"); return false }
            return true
        }
        switch name.asciiLowercased {
        case "id":
            guard need(), let n = Int(v), n > 0 else { error(file, line, "id must be a positive integer, got '\(v)'"); return }
            r.id = n; r.idString = String(n)
        case "phase":
            switch v.asciiLowercased {
            case "1", "request_headers": r.phase = 1
            case "2", "request": r.phase = 2
            case "3", "response_headers": r.phase = 3
            case "4", "response": r.phase = 4
            case "5", "logging": r.phase = 5
            default: error(file, line, "phase must be 1-5, request or response, got '\(v)'")
            }
        case "msg": if need() { r.msg = Macro(v, txKeys: txKeys) }
        case "logdata": if need() { r.logdata = Macro(v, txKeys: txKeys) }
        case "tag": if need() { r.tags.append(v) }
        case "severity":
            guard need(), let s = Severity.parse(v) else { error(file, line, "bad severity '\(v)'"); return }
            r.severity = s
        case "ver": r.ver = v
        case "rev": r.rev = v
        case "maturity": r.maturity = v
        case "accuracy": r.accuracy = v
        case "log": r.log = true
        case "nolog": r.log = false
        case "auditlog": r.auditlog = true
        case "noauditlog": r.auditlog = false
        case "capture": r.capture = true
        case "multimatch": r.multiMatch = true
        case "chain": r.chain = true
        case "pass": r.disruptive = .pass
        case "deny": r.disruptive = .deny
        case "block": r.disruptive = .block
        case "drop": r.disruptive = .drop
        case "allow":
            switch v.asciiLowercased {
            case "": r.disruptive = .allow(.all)
            case "phase": r.disruptive = .allow(.phase)
            case "request": r.disruptive = .allow(.request)
            default: error(file, line, "allow takes phase or request, got '\(v)'")
            }
        case "redirect": if need() { r.disruptive = .redirect(v) }
        case "status":
            guard need(), let n = Int(v), (100...999).contains(n) else { error(file, line, "bad status '\(v)'"); return }
            r.status = n
        case "skip":
            guard need(), let n = Int(v), n >= 0 else { error(file, line, "skip needs a count"); return }
            r.skip = n
        case "skipafter": if need() { r.skipAfter = v }
        case "t":
            guard need() else { return }
            if v.asciiLowercased == "none" { r.transforms = []; r.hasTNone = true; return }
            guard let t = Transform.named(v) else { error(file, line, "unknown transformation '\(v)'"); return }
            r.transforms.append(t)
        case "setvar":
            guard need() else { return }
            if let sv = Loader.parseSetVar(v, txKeys: txKeys) { r.setvars.append(sv) } else { error(file, line, "bad setvar '\(v)'") }
        case "initcol":
            guard need(), let eq = v.firstIndex(of: "=") else { error(file, line, "bad initcol '\(v)'"); return }
            guard let c = Collection(rawValue: String(v[..<eq]).asciiUppercased) else { error(file, line, "initcol: unknown collection in '\(v)'"); return }
            r.initcols.append((c, Macro(String(v[v.index(after: eq)...]), txKeys: txKeys)))
        case "expirevar":
            guard need(), let eq = v.firstIndex(of: "="), let dot = v[..<eq].firstIndex(of: "."),
                  let c = Collection(rawValue: String(v[..<dot]).asciiUppercased) else {
                error(file, line, "bad expirevar '\(v)' (expected collection.name=seconds)"); return
            }
            r.expirevars.append((c, Macro(String(v[v.index(after: dot)..<eq]), txKeys: txKeys), Macro(String(v[v.index(after: eq)...]), txKeys: txKeys)))
        case "setuid", "setsid", "setenv", "setrsc", "deprecatevar", "sanitisearg", "sanitizearg", "sanitisematched",
             "sanitizematched", "sanitisematchedbytes", "sanitizematchedbytes", "sanitiserequestheader", "sanitizerequestheader",
             "sanitiseresponseheader", "sanitizeresponseheader", "append", "prepend", "exec", "pause", "proxy", "xmlns", "sanitizematchbytes":
            return
        case "ctl":
            guard need() else { return }
            if let c = parseCtl(v, file: file, line: line) { r.ctls.append(c) }
        default:
            error(file, line, "unknown action '\(name)'")
        }
    }

    static func parseSetVar(_ s: String, txKeys: TxKeyTable? = nil) -> SetVar? {
        var t = Substring(s.trimmingSpaces)
        var delete = false
        if t.hasPrefix("!") { delete = true; t = t.dropFirst() }
        var name = t
        var value: Substring?
        if let eq = t.firstIndex(of: "=") { name = t[..<eq]; value = t[t.index(after: eq)...] }
        guard let dot = name.firstIndex(of: "."), let c = Collection(rawValue: String(name[..<dot]).asciiUppercased) else { return nil }
        let key = Macro(String(name[name.index(after: dot)...]), txKeys: txKeys)
        let op: SetVarOp
        if delete { op = .delete }
        else if let value {
            if value.hasPrefix("+") { op = .add(Macro(String(value.dropFirst()), txKeys: txKeys)) }
            else if value.hasPrefix("-") { op = .sub(Macro(String(value.dropFirst()), txKeys: txKeys)) }
            else { op = .set(Macro(String(value), txKeys: txKeys)) }
        } else { op = .set(Macro("1")) }
        var sv = SetVar(collection: c, key: key, op: op)
        if c == .tx, key.isConstant, let txKeys { sv.keyID = txKeys.intern(key.constantKey) }
        return sv
    }

    func parseCtl(_ s: String, file: String, line: Int) -> CtlAction? {
        guard let eq = s.firstIndex(of: "=") else { error(file, line, "bad ctl '\(s)'"); return nil }
        let name = String(s[..<eq]).asciiLowercased
        let v = String(s[s.index(after: eq)...])
        func onOff() -> Bool? {
            switch v.asciiLowercased { case "on": return true; case "off": return false; default: error(file, line, "ctl:\(name) needs On or Off"); return nil }
        }
        func targetPart(_ spec: Substring) -> Exclusion? {
            switch parseTarget(String(spec), file: file, line: line) {
            case .target(let t)?: return Exclusion(collection: t.collection, key: t.key)
            case .exclusion(let e)?: return e
            case nil: return nil
            }
        }
        switch name {
        case "ruleengine":
            switch v.asciiLowercased {
            case "on": return .ruleEngine(.on)
            case "off": return .ruleEngine(.off)
            case "detectiononly": return .ruleEngine(.detectionOnly)
            default: error(file, line, "ctl:ruleEngine needs On, Off or DetectionOnly"); return nil
            }
        case "ruleremovebyid":
            let ids = v.split(separator: " ").compactMap { Loader.idRange(String($0)) }
            guard !ids.isEmpty else { error(file, line, "ctl:ruleRemoveById: bad id '\(v)'"); return nil }
            return .ruleRemoveById(ids)
        case "ruleremovebytag": return .ruleRemoveByTag(v)
        case "ruleremovetargetbyid", "ruleremovetargetbytag":
            guard let semi = v.firstIndex(of: ";") else { error(file, line, "ctl:\(name) needs id;TARGET"); return nil }
            guard let ex = targetPart(v[v.index(after: semi)...]) else { return nil }
            if name == "ruleremovetargetbytag" { return .ruleRemoveTargetByTag(String(v[..<semi]), ex) }
            let ids = v[..<semi].split(separator: ",").compactMap { Loader.idRange(String($0)) }
            guard !ids.isEmpty else { error(file, line, "ctl:\(name): bad id in '\(v)'"); return nil }
            return .ruleRemoveTargetById(ids, ex)
        case "requestbodyprocessor": return .requestBodyProcessor(v.asciiUppercased)
        case "forcerequestbodyvariable": return onOff().map { .forceRequestBodyVariable($0) }
        case "requestbodyaccess": return onOff().map { .requestBodyAccess($0) }
        case "requestbodylimit":
            guard let n = Int(v), n >= 0 else { error(file, line, "ctl:requestBodyLimit needs a number"); return nil }
            return .requestBodyLimit(n)
        case "auditengine", "auditlogparts", "debugloglevel", "responsebodyaccess", "hashengine", "hashenforcement", "parsexmlintoargs":
            return .ignored
        default:
            error(file, line, "unknown ctl '\(name)'"); return nil
        }
    }

    // MARK: finish

    func finish() -> Result<RuleSet, RuleErrors> {
        if let tail = chainTail { error(tail.file, tail.line, "chain without a following rule"); chainTail = nil }
        var byID: [Int: Rule] = [:]
        for r in rules where !r.isMarker {
            if let prev = byID[r.id] { error(r.file, r.line, "duplicate rule id \(r.id) (first at \(prev.file):\(prev.line))") }
            else { byID[r.id] = r }
        }
        // Load-time removals and updates (SecRuleRemove*, SecRuleUpdate*).
        func removed(_ r: Rule) -> Bool {
            if r.isMarker { return false }
            if removeByID.contains(where: { $0.contains(r.id) }) { return true }
            if removeByTag.contains(where: { t in r.tags.contains { Loader.tagMatches(t, $0) } }) { return true }
            if !removeByMsg.isEmpty, let m = r.msg?.text, removeByMsg.contains(where: { m.contains($0) }) { return true }
            return false
        }
        for u in updateTargets {
            let targetRules = rules.filter { r in
                !r.isMarker && (u.tag.map { t in r.tags.contains { Loader.tagMatches(t, $0) } } ?? u.ids.contains { $0.contains(r.id) })
            }
            guard let parts = Loader.splitTargets(u.spec) else { error(u.file, u.line, "malformed variable list '\(u.spec)'"); continue }
            for p in parts {
                guard let t = parseTarget(p, file: u.file, line: u.line) else { continue }
                for r in targetRules {
                    switch t {
                    case .target(let tt): r.targets.append(tt)
                    case .exclusion(let e): r.exclusions.append(e)
                    }
                }
            }
        }
        for u in updateActions {
            guard let r = byID[u.id] else { warnings.append(RuleDiagnostic(file: u.file, line: u.line, message: "SecRuleUpdateActionById: no rule \(u.id)")); continue }
            guard let list = Loader.splitActions(u.actions) else { error(u.file, u.line, "malformed action list"); continue }
            for (n, v) in list {
                let ln = n.asciiLowercased
                if ln == "id" || ln == "phase" || ln == "chain" { continue }
                if ln == "t", v?.asciiLowercased == "none" { r.transforms = []; continue }
                applyAction(r, n, v, file: u.file, line: u.line, dir: ".")
            }
        }
        if !errors.isEmpty { return .failure(RuleErrors(diagnostics: errors)) }
        var phases: [[Rule]] = Array(repeating: [], count: 6)
        for r in rules where !removed(r) {
            if r.isMarker { for p in 1...5 { phases[p].append(r) } } else { phases[r.phase].append(r) }
        }
        var markers: [[String: Int]] = Array(repeating: [:], count: 6)
        var chains: [String: Int] = [:]
        var chainTriggers: [UInt32] = []
        /// A transformation chain's number (the same steps, the same number) and its triggers.
        func chainID(_ transforms: [Transform]) -> Int {
            let key = transforms.map(\.rawValue).joined(separator: ",")
            if let id = chains[key] { return id }
            chains[key] = chains.count
            chainTriggers.append(Transform.triggers(transforms))
            return chains.count - 1
        }
        for p in 1...5 {
            for (i, r) in phases[p].enumerated() {
                r.index = i
                if let m = r.marker, markers[p][m] == nil { markers[p][m] = i }
                var link: Rule? = r
                while let l = link {
                    l.transformChainID = chainID(l.transforms)
                    link = l.chained
                }
            }
        }
        var prefiltered: [(Rule, Prefilter.Candidate)] = []
        let intern = txKeys.intern
        for p in 1...5 {
            for r in phases[p] where !r.isMarker {
                r.skipAfterIndex = r.skipAfter.flatMap { markers[p][$0] }
                JSONEscape.append(RuleMatch.headText(file: r.file, line: r.line, id: r.id, rev: r.rev), to: &r.auditHead)
                JSONEscape.append(RuleMatch.tailText(severity: r.severity, ver: r.ver, maturity: r.maturity, accuracy: r.accuracy, tags: r.tags),
                                  to: &r.auditTail)
                var link: Rule? = r
                while let l = link {
                    l.fast = FastPlan(targets: l.targets, exclusions: l.exclusions, op: l.op, multiMatch: l.multiMatch, intern: intern)
                    l.txCompare = TxCompare(l, intern: intern)
                    if let c = Prefilter.literals(for: l) { prefiltered.append((l, c)) }
                    link = l.chained
                }
            }
        }
        let prefilter = Prefilter.build(prefiltered, chainID: chainID)
        // TX:/regex/ targets: which interned keys can match, decided once (names are fixed now).
        for p in 1...5 {
            for r in phases[p] where !r.isMarker {
                var link: Rule? = r
                while let l = link {
                    for i in l.targets.indices where l.targets[i].collection == .tx {
                        guard case .regex(let re) = l.targets[i].key else { continue }
                        l.targets[i].txCandidates = txKeys.names.indices.filter { id in
                            var name = txKeys.names[id]
                            return name.withUTF8 { re.mayMatch(lower: $0) }
                        }
                    }
                    link = l.chained
                }
            }
        }
        for r in byID.values where removed(r) { byID[r.id] = nil }
        RegexScratch.matchLimit = max(RegexScratch.matchLimit, settings.pcreMatchLimit)
        return .success(RuleSet(settings: settings, phases: phases, markers: markers, defaultDisruptive: defaultDisruptive,
                                defaultLog: defaultLog, rulesByID: byID, files: files, warnings: warnings,
                                prefilter: prefilter, txKeys: txKeys, chainTriggers: chainTriggers))
    }

    /// ModSecurity compares tags for removal as a regex; CRS uses plain names.
    static func tagMatches(_ pattern: String, _ tag: String) -> Bool {
        if pattern == tag { return true }
        if let r = try? Regex(pattern) { return r.matches(tag.latin1) }
        return false
    }
}
