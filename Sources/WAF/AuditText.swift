// ModSecurity's text for a matched rule, and the JSON form the audit log writes.

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
    /// The rule's fixed parts of the text, JSON-escaped once at load (`Rule.auditHead/Tail`);
    /// empty: build them here.
    var escapedHead: [UInt8] = []
    var escapedTail: [UInt8] = []

    /// ModSecurity's message text: `... [id "942100"] [msg "..."] [data "..."] [severity "2"] ...`.
    public func modsecText(uri: String, uniqueID: String, hostname: String) -> String {
        var s = ""
        writeModsecText(uri: uri, uniqueID: uniqueID, hostname: hostname) { s += $0 }
        return s
    }

    /// The same text handed out in pieces.
    public func writeModsecText(uri: String, uniqueID: String, hostname: String, _ emit: (String) -> Void) {
        walk(uri: uri, uniqueID: uniqueID, hostname: hostname) { piece in
            switch piece {
            case .plain(let s): emit(s)
            case .quoted(let s): emit(RuleMatch.esc(s))
            case .head: emit(RuleMatch.headText(file: file, line: line, id: id, rev: rev))
            case .tail: emit(RuleMatch.tailText(severity: severity, ver: ver, maturity: maturity, accuracy: accuracy, tags: tags))
            }
        }
    }

    /// The text JSON-escaped (no quotes) onto `out`: the audit log's `message`. The rule's fixed
    /// parts are copied as escaped at load; only what this request contributed is escaped here.
    public func appendModsecJSON(to out: inout [UInt8], uri: String, uniqueID: String, hostname: String) {
        appendModsecJSON(to: &out, requestSuffix: RuleMatch.escapedRequestSuffix(uri: uri, uniqueID: uniqueID, hostname: hostname))
    }

    /// The same with the request's part of the text (`escapedRequestSuffix`) escaped once for
    /// all the matches of a request.
    public func appendModsecJSON(to out: inout [UInt8], requestSuffix: [UInt8]) {
        walkMatch { piece in
            switch piece {
            case .plain(let s): JSONEscape.append(s, to: &out)
            case .quoted(let s): JSONEscape.append(s, to: &out, quotesEscaped: true)
            case .head:
                if escapedHead.isEmpty { JSONEscape.append(RuleMatch.headText(file: file, line: line, id: id, rev: rev), to: &out) }
                else { out.append(contentsOf: escapedHead) }
            case .tail:
                if escapedTail.isEmpty {
                    JSONEscape.append(RuleMatch.tailText(severity: severity, ver: ver, maturity: maturity, accuracy: accuracy, tags: tags), to: &out)
                } else { out.append(contentsOf: escapedTail) }
            }
        }
        out.append(contentsOf: requestSuffix)
    }

    /// `[hostname "…"] [uri "…"] [unique_id "…"]`, JSON-escaped: the end of every match's text.
    public static func escapedRequestSuffix(uri: String, uniqueID: String, hostname: String) -> [UInt8] {
        var out: [UInt8] = []
        walkRequest(uri: uri, uniqueID: uniqueID, hostname: hostname) { piece in
            if case .quoted(let s) = piece { JSONEscape.append(s, to: &out, quotesEscaped: true) }
            else if case .plain(let s) = piece { JSONEscape.append(s, to: &out) }
        }
        return out
    }

    /// A piece of the text: as is, written with each `"` as `\"` (msg, data, uri), or the
    /// rule's fixed head or tail.
    enum Piece { case plain(String), quoted(String), head, tail }

    /// ModSecurity's text, piece by piece, in order (one layout for both renderings): the
    /// match's part, then the request's.
    func walk(uri: String, uniqueID: String, hostname: String, _ emit: (Piece) -> Void) {
        walkMatch(emit)
        RuleMatch.walkRequest(uri: uri, uniqueID: uniqueID, hostname: hostname, emit)
    }

    private func walkMatch(_ emit: (Piece) -> Void) {
        emit(.plain(disruptive ? "ModSecurity: Access denied. " : "ModSecurity: Warning. "))
        if operatorName == "unconditionalMatch" || matchedVarName.isEmpty {
            emit(.plain("Unconditional match in SecAction. "))
        } else {
            emit(.plain("Matched \"Operator `")); emit(.plain(operatorName))
            emit(.plain("' with parameter `")); emit(.plain(RuleMatch.clip(operatorParam, 200)))
            emit(.plain("' against variable `")); emit(.plain(matchedVarName))
            emit(.plain("' (Value: `")); emit(.plain(RuleMatch.clip(matchedVar, 200))); emit(.plain("' ) "))
        }
        emit(.head)
        emit(.plain("[msg \"")); emit(.quoted(msg)); emit(.plain("\"] [data \"")); emit(.quoted(data)); emit(.plain("\"] "))
        emit(.tail)
    }

    private static func walkRequest(uri: String, uniqueID: String, hostname: String, _ emit: (Piece) -> Void) {
        emit(.plain("[hostname \"")); emit(.plain(hostname)); emit(.plain("\"] [uri \"")); emit(.quoted(uri))
        emit(.plain("\"] [unique_id \"")); emit(.plain(uniqueID)); emit(.plain("\"]"))
    }

    /// `[file "…"] [line "…"] [id "…"] [rev "…"] `: fixed per rule.
    static func headText(file: String, line: Int, id: Int, rev: String?) -> String {
        "[file \"\(file)\"] [line \"\(line)\"] [id \"\(id)\"] [rev \"\(rev ?? "")\"] "
    }

    /// `[severity "…"] [ver "…"] [maturity "…"] [accuracy "…"] [tag "…"] …`: fixed per rule.
    static func tailText(severity: Int?, ver: String?, maturity: String?, accuracy: String?, tags: [String]) -> String {
        var s = "[severity \"\(severity.map(String.init) ?? "0")\"] [ver \"\(ver ?? "")\"] "
        s += "[maturity \"\(maturity ?? "0")\"] [accuracy \"\(accuracy ?? "0")\"] "
        for t in tags { s += "[tag \"" + esc(t) + "\"] " }
        return s
    }

    /// At most `n` bytes, cut at a character boundary, "..." marking a cut. Bytes, not
    /// characters: counting characters of a long regex parameter for every audit line cost
    /// more than writing the line.
    static func clip(_ s: String, _ n: Int) -> String {
        let u = s.utf8
        if u.count <= n { return s }
        var end = u.index(u.startIndex, offsetBy: n)
        while end > u.startIndex, u[end] & 0xC0 == 0x80 { end = u.index(before: end) }
        return String(decoding: u[..<end], as: UTF8.self) + "..."
    }
    static func esc(_ s: String) -> String { s.utf8.contains(34) ? s.replacingAll("\"", "\\\"") : s }
}

extension String {
    func replacingAll(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}

/// JSON string escaping, for the audit log's JSON lines: quote, backslash and control bytes escaped,
/// runs that need nothing copied whole.
public enum JSONEscape {
    /// `quotesEscaped`: the text as ModSecurity writes msg, data and uri (each `"` as `\"`),
    /// JSON-escaped, without building that intermediate text.
    public static func append(_ s: String, to out: inout [UInt8], quotesEscaped: Bool = false) {
        var s = s
        s.withUTF8 { append($0, to: &out, quotesEscaped: quotesEscaped) }
    }

    public static func append(_ u: UnsafeBufferPointer<UInt8>, to out: inout [UInt8], quotesEscaped: Bool = false) {
        var run = 0
        for i in 0..<u.count {
            let c = u[i]
            if c >= 0x20 && c != 34 && c != 92 && c != 0x7f { continue }
            if run < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i])) }
            run = i + 1
            if quotesEscaped && c == 34 { out.append(92); out.append(92) }  // the added backslash, escaped
            out.append(92)
            switch c {
            case 34, 92: out.append(c)
            case 10: out.append(110)
            case 13: out.append(114)
            case 9: out.append(116)
            default:
                out.append(117); out.append(48); out.append(48)
                out.append(hexDigits[Int(c >> 4)]); out.append(hexDigits[Int(c & 15)])
            }
        }
        if run < u.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run...])) }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
