/// Request body processors (URLENCODED, MULTIPART, JSON, XML) and cookie/query parsing.
extension Transaction {
    /// `name=value` pairs split on the argument separator (empty pairs skipped), names and
    /// values form-decoded straight into the arena.
    func parseURLEncoded(_ b: Bytes) -> [Entry] {
        parsePairs(b, separator: rs.settings.argumentSeparator, skipLeadingBlanks: false) { storeFormDecoded($0) }
    }

    /// `name=value` pairs split on `;`, leading blanks dropped, copied into the arena as they are.
    func parseCookies(_ b: Bytes) -> [Entry] {
        parsePairs(b, separator: 59, skipLeadingBlanks: true) { store($0) }
    }

    /// Splits `b` on `separator` into `name=value` pairs (a pair without `=` has an empty
    /// value; a pair left empty is skipped) and stores each name and value with `part`.
    private func parsePairs(_ b: Bytes, separator: UInt8, skipLeadingBlanks: Bool,
                            _ part: (UnsafeBufferPointer<UInt8>) -> Span) -> [Entry] {
        var out: [Entry] = []
        b.withUnsafeBufferPointer { p in
            var start = 0
            while start < p.count {
                var end = start
                while end < p.count, p[end] != separator { end += 1 }
                var first = start
                while skipLeadingBlanks, first < end, p[first] == 32 || p[first] == 9 { first += 1 }
                if first < end {
                    var eq = first
                    while eq < end, p[eq] != 61 { eq += 1 }
                    let key = part(UnsafeBufferPointer(rebasing: p[first..<eq]))
                    let value = eq < end ? part(UnsafeBufferPointer(rebasing: p[(eq + 1)..<end])) : .empty
                    out.append(Entry(key: key, keyLower: storeLowercased(key), value: value, id: newID()))
                }
                start = end + 1
            }
        }
        return out
    }

    func bodyError(_ msg: String) {
        flags[.reqbodyError] = 1
        if reqbodyErrorMsg.isEmpty { reqbodyErrorMsg = Array(msg.utf8) }
    }

    // MARK: multipart

    func parseMultipart() {
        guard let ct = header("content-type") else { return }
        // boundary=... (possibly quoted).
        let lower = asciiLower(ct)
        guard let bi = bytesFind(lower, Array("boundary".utf8)) else { bodyError("Multipart: boundary missing"); flag(.multipartStrictError); return }
        var j = bi + 8
        while j < ct.count, ct[j] == 32 || ct[j] == 9 { j += 1; flags[.multipartBoundaryWhitespace] = 1 }
        guard j < ct.count, ct[j] == 61 else { bodyError("Multipart: invalid boundary"); flag(.multipartStrictError); return }
        j += 1
        while j < ct.count, ct[j] == 32 || ct[j] == 9 { j += 1; flags[.multipartBoundaryWhitespace] = 1 }
        var boundary: Bytes
        if j < ct.count, ct[j] == 34 {
            flags[.multipartBoundaryQuoted] = 1
            let rest = ct[(j + 1)...]
            guard let close = rest.firstIndex(of: 34) else { bodyError("Multipart: invalid boundary quoting"); flag(.multipartStrictError); return }
            boundary = Array(ct[(j + 1)..<close])
        } else {
            boundary = Array(ct[j...].prefix { $0 != 59 && $0 != 32 && $0 != 9 && $0 != 44 })
        }
        if boundary.isEmpty || boundary.count > 70 { bodyError("Multipart: invalid boundary"); flag(.multipartStrictError); return }
        let body = requestBody
        let delim = [45, 45] + boundary
        // Split into lines keeping track of CRLF vs LF.
        var pos = 0
        var sawCRLF = false, sawLF = false
        func nextLine() -> (Bytes, Int)? {
            guard pos < body.count else { return nil }
            var e = pos
            while e < body.count, body[e] != 10 { e += 1 }
            var line = Array(body[pos..<e])
            let term: Int
            if e < body.count {
                if line.last == 13 { line.removeLast(); sawCRLF = true; term = 2 } else { sawLF = true; term = 1 }
            } else { term = 0 }
            let start = pos
            pos = e < body.count ? e + 1 : e
            _ = start
            return (line, term)
        }
        // Preamble.
        var started = false
        while let (line, _) = nextLine() {
            if line.starts(with: delim) {
                let rest = Array(line[delim.count...])
                if rest.starts(with: [45, 45]) { bodyError("Multipart: final boundary before any part"); flag(.multipartStrictError); return }
                if !rest.allSatisfy({ $0 == 32 || $0 == 9 }) { flags[.multipartInvalidPart] = 1 }
                started = true; break
            }
            flags[.multipartDataBefore] = 1
        }
        guard started else { bodyError("Multipart: no boundary found"); flag(.multipartStrictError); return }
        var finished = false
        var fileCount = 0
        partLoop: while true {
            // Headers.
            var hdrs: [(Bytes, Bytes)] = []
            var gotBlank = false
            while let (line, _) = nextLine() {
                if line.isEmpty { gotBlank = true; break }
                if line.first == 32 || line.first == 9 {
                    flags[.multipartHeaderFolding] = 1
                    if var last = hdrs.popLast() { last.1 += [32] + Array(line.drop { $0 == 32 || $0 == 9 }); hdrs.append(last) }
                    else { flags[.multipartInvalidHeaderFolding] = 1 }
                    continue
                }
                guard let colon = line.firstIndex(of: 58) else { flags[.multipartInvalidPart] = 1; continue }
                let name = Array(line[..<colon])
                let value = Array(line[(colon + 1)...].drop { $0 == 32 || $0 == 9 })
                hdrs.append((name, value))
            }
            if !gotBlank { bodyError("Multipart: part headers not terminated"); break }
            // Content until the next delimiter line.
            var content = Bytes()
            var prevTerm = -1
            var endFound = false
            while pos < body.count {
                let save = pos
                guard let (line, term) = nextLine() else { break }
                if line.starts(with: delim) {
                    let rest = Array(line[delim.count...])
                    if rest.starts(with: [45, 45]) {
                        finished = true
                        if pos < body.count {
                            let tail = body[pos...]
                            if !tail.allSatisfy({ $0 == 13 || $0 == 10 }) { flags[.multipartDataAfter] = 1 }
                        }
                    }
                    endFound = true
                    break
                }
                _ = save
                if prevTerm == 2 { content += [13, 10] } else if prevTerm == 1 { content.append(10) }
                prevTerm = term
                content += line
            }
            // Interpret the part.
            var partName: Bytes?
            var fileName: Bytes?
            for (hn, hv) in hdrs {
                partHeadersPending.append((hn, hv))
                if keyString(hn) == "content-disposition" {
                    let (n, f) = parseDisposition(hv)
                    partName = n; fileName = f
                }
            }
            if let n = partName {
                for (hn, hv) in partHeadersPending { partHeaders.append(entry(n, hn + [58, 32] + hv)) }
                if let f = fileName {
                    files.append(entry(n, f))
                    filesSizes.append(entry(n, content.count.bytes))
                    fileCount += 1
                } else {
                    argsPost.append(entry(n, content))
                }
            } else {
                flags[.multipartInvalidPart] = 1
            }
            partHeadersPending = []
            if finished || !endFound { break partLoop }
        }
        if !finished { flags[.multipartUnmatchedBoundary] = 1; bodyError("Multipart: final boundary missing") }
        if sawLF { flags[.multipartLFLine] = 1 }
        if sawCRLF && sawLF { flags[.multipartCRLFLFLines] = 1 }
        _ = fileCount
        flag(.multipartStrictError)
    }

    /// MULTIPART_STRICT_ERROR: any of the multipart flags or a body error.
    func flag(_ c: Collection) {
        guard c == .multipartStrictError else { flags[c] = 1; return }
        let any: [Collection] = [.reqbodyError, .multipartBoundaryQuoted, .multipartBoundaryWhitespace, .multipartDataBefore, .multipartDataAfter,
                                 .multipartHeaderFolding, .multipartLFLine, .multipartMissingSemicolon, .multipartInvalidQuoting,
                                 .multipartInvalidPart, .multipartInvalidHeaderFolding, .multipartFileLimitExceeded]
        flags[.multipartStrictError] = any.contains { (flags[$0] ?? 0) != 0 } ? 1 : 0
    }

    /// `form-data; name="a"; filename="b"` → (name, filename).
    func parseDisposition(_ v: Bytes) -> (Bytes?, Bytes?) {
        var name: Bytes?, file: Bytes?
        var i = 0
        // Disposition type.
        while i < v.count, v[i] != 59 { i += 1 }
        if i >= v.count { flags[.multipartMissingSemicolon] = 1; return (nil, nil) }
        while i < v.count {
            // Skip ';' and spaces.
            while i < v.count, v[i] == 59 || v[i] == 32 || v[i] == 9 { i += 1 }
            var k = Bytes()
            while i < v.count, v[i] != 61, v[i] != 59 { k.append(v[i]); i += 1 }
            let key = keyString(T.trimRight(k))
            guard i < v.count, v[i] == 61 else { continue }
            i += 1
            while i < v.count, v[i] == 32 || v[i] == 9 { i += 1 }
            var val = Bytes()
            if i < v.count, v[i] == 34 {
                i += 1
                var closed = false
                while i < v.count {
                    if v[i] == 92, i + 1 < v.count, v[i + 1] == 34 || v[i + 1] == 92 { val.append(v[i + 1]); i += 2; continue }
                    if v[i] == 34 { closed = true; i += 1; break }
                    val.append(v[i]); i += 1
                }
                if !closed { flags[.multipartInvalidQuoting] = 1 }
            } else {
                while i < v.count, v[i] != 59 {
                    if v[i] == 34 || v[i] == 39 { flags[.multipartInvalidQuoting] = 1 }
                    val.append(v[i]); i += 1
                }
                val = T.trimRight(val)
            }
            if i < v.count, v[i] != 59 { flags[.multipartMissingSemicolon] = 1 }
            if key == "name" { name = val } else if key == "filename" || key == "filename*" { file = val }
        }
        return (name, file)
    }

    // MARK: JSON

    func parseJSON() {
        var p = JSONParser(bytes: requestBody)
        var out: [(Bytes, Bytes)] = []
        if p.parseDocument(into: &out) {
            for (k, v) in out { argsPost.append(entry(k, v)) }
        } else {
            bodyError("JSON parsing error")
            for (k, v) in out { argsPost.append(entry(k, v)) }
        }
    }

    // MARK: XML

    /// The document's text (what `XML:/*` yields): character data and CDATA, no markup.
    func parseXML() {
        let b = requestBody
        var text = Bytes()
        var i = 0
        var depth = 0
        var sawElement = false
        while i < b.count {
            if b[i] == 60 {
                if b[i...].starts(with: Array("<![CDATA[".utf8)) {
                    let start = i + 9
                    guard let end = bytesFind(Array(b[start...]), Array("]]>".utf8)) else { bodyError("XML: unterminated CDATA"); break }
                    text += b[start..<(start + end)]
                    i = start + end + 3; continue
                }
                if b[i...].starts(with: Array("<!--".utf8)) {
                    guard let end = bytesFind(Array(b[(i + 4)...]), Array("-->".utf8)) else { bodyError("XML: unterminated comment"); break }
                    i = i + 4 + end + 3; continue
                }
                guard let close = b[i...].firstIndex(of: 62) else { bodyError("XML: unterminated tag"); break }
                let tag = b[(i + 1)..<close]
                if tag.first != 47 && tag.first != 63 && tag.first != 33 { xmlAttributes += Transaction.attributeValues(Array(tag)) }
                if tag.first == 47 { depth -= 1 }
                else if tag.first != 63 && tag.first != 33 && tag.last != 47 { depth += 1; sawElement = true }
                else if tag.last == 47 { sawElement = true }
                i = close + 1
            } else {
                if depth > 0 { text.append(b[i]) }
                i += 1
            }
        }
        if !sawElement || depth != 0 { bodyError("XML parsing error") }
        xmlText = T.htmlEntityDecode(text)
    }
}

extension Transaction {
    /// Attribute values of a start tag's text (`name a="1" b='2'`).
    static func attributeValues(_ t: Bytes) -> [Bytes] {
        var out: [Bytes] = []
        var i = 0
        while i < t.count {
            if t[i] == 61 {  // =
                var j = i + 1
                while j < t.count, isSpaceByte(t[j]) { j += 1 }
                if j < t.count, t[j] == 34 || t[j] == 39 {
                    let q = t[j]
                    if let e = t[(j + 1)...].firstIndex(of: q) { out.append(T.htmlEntityDecode(Array(t[(j + 1)..<e]))); i = e + 1; continue }
                }
            }
            i += 1
        }
        return out
    }
}

/// A small JSON reader producing ModSecurity's argument names (json.a.b, json.a.array_0).
struct JSONParser {
    let b: Bytes
    var i = 0
    var depth = 0
    init(bytes: Bytes) { b = bytes }

    mutating func ws() { while i < b.count, b[i] == 32 || b[i] == 9 || b[i] == 10 || b[i] == 13 { i += 1 } }

    mutating func parseDocument(into out: inout [(Bytes, Bytes)]) -> Bool {
        ws()
        guard value(path: Array("json".utf8), into: &out) else { return false }
        ws()
        return i == b.count
    }

    mutating func value(path: Bytes, into out: inout [(Bytes, Bytes)]) -> Bool {
        ws()
        guard i < b.count else { return false }
        depth += 1
        defer { depth -= 1 }
        if depth > 256 { return false }
        switch b[i] {
        case 123:  // {
            i += 1; ws()
            if i < b.count, b[i] == 125 { i += 1; return true }
            while true {
                ws()
                guard let k = string() else { return false }
                ws()
                guard i < b.count, b[i] == 58 else { return false }
                i += 1
                guard value(path: path + [46] + k, into: &out) else { return false }
                ws()
                guard i < b.count else { return false }
                if b[i] == 44 { i += 1; continue }
                if b[i] == 125 { i += 1; return true }
                return false
            }
        case 91:  // [
            i += 1; ws()
            if i < b.count, b[i] == 93 { i += 1; return true }
            var n = 0
            while true {
                guard value(path: path + Array(".array_\(n)".utf8), into: &out) else { return false }
                n += 1
                ws()
                guard i < b.count else { return false }
                if b[i] == 44 { i += 1; continue }
                if b[i] == 93 { i += 1; return true }
                return false
            }
        case 34:
            guard let s = string() else { return false }
            out.append((path, s)); return true
        default:
            let start = i
            while i < b.count, !(b[i] == 44 || b[i] == 125 || b[i] == 93 || b[i] == 32 || b[i] == 9 || b[i] == 10 || b[i] == 13) { i += 1 }
            let tok = Array(b[start..<i])
            if tok == Array("true".utf8) || tok == Array("false".utf8) { out.append((path, tok)); return true }
            if tok == Array("null".utf8) { out.append((path, [])); return true }
            guard !tok.isEmpty, tok.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 43 || $0 == 46 || $0 == 101 || $0 == 69 }) else { return false }
            out.append((path, tok)); return true
        }
    }

    mutating func string() -> Bytes? {
        guard i < b.count, b[i] == 34 else { return nil }
        i += 1
        var s = Bytes()
        while i < b.count {
            let c = b[i]
            if c == 34 { i += 1; return s }
            if c == 92 {
                guard i + 1 < b.count else { return nil }
                let d = b[i + 1]
                switch d {
                case 110: s.append(10)
                case 116: s.append(9)
                case 114: s.append(13)
                case 98: s.append(8)
                case 102: s.append(12)
                case 117:
                    guard i + 5 < b.count, let h1 = hexValue(b[i + 2]), let h2 = hexValue(b[i + 3]), let h3 = hexValue(b[i + 4]), let h4 = hexValue(b[i + 5]) else { return nil }
                    let cp = UInt32(h1) << 12 | UInt32(h2) << 8 | UInt32(h3) << 4 | UInt32(h4)
                    if let u = Unicode.Scalar(cp) { s += Array(String(Character(u)).utf8) } else { s.append(63) }
                    i += 6; continue
                default: s.append(d)
                }
                i += 2; continue
            }
            s.append(c); i += 1
        }
        return nil
    }
}
