#if canImport(Glibc)
import Glibc
#endif

/// SecLang transformations (`t:`), byte for byte as ModSecurity v3 applies them.
enum Transform: String, Sendable, CaseIterable {
    case none, lowercase, uppercase, urlDecode, urlDecodeUni, urlEncode, htmlEntityDecode, jsDecode, cssDecode
    case utf8toUnicode, removeNulls, replaceNulls, removeWhitespace, compressWhitespace, cmdLine, replaceComments
    case removeComments, removeCommentsChar, normalisePath, normalizePath, normalisePathWin, normalizePathWin
    case base64Decode, base64DecodeExt, base64Encode, hexEncode, hexDecode, sha1, length, trim, trimLeft, trimRight
    case escapeSeqDecode, sqlHexDecode, parityEven7bit, parityOdd7bit, parityZero7bit

    /// A small number per transformation (1 ..< 64): steps of a transformation path are packed
    /// six bits each (`Transaction.applyTransforms`).
    var code: Int {
        switch self {
        case .none: return 1
        case .lowercase: return 2
        case .uppercase: return 3
        case .urlDecode: return 4
        case .urlDecodeUni: return 5
        case .urlEncode: return 6
        case .htmlEntityDecode: return 7
        case .jsDecode: return 8
        case .cssDecode: return 9
        case .utf8toUnicode: return 10
        case .removeNulls: return 11
        case .replaceNulls: return 12
        case .removeWhitespace: return 13
        case .compressWhitespace: return 14
        case .cmdLine: return 15
        case .replaceComments: return 16
        case .removeComments: return 17
        case .removeCommentsChar: return 18
        case .normalisePath: return 19
        case .normalizePath: return 20
        case .normalisePathWin: return 21
        case .normalizePathWin: return 22
        case .base64Decode: return 23
        case .base64DecodeExt: return 24
        case .base64Encode: return 25
        case .hexEncode: return 26
        case .hexDecode: return 27
        case .sha1: return 28
        case .length: return 29
        case .trim: return 30
        case .trimLeft: return 31
        case .trimRight: return 32
        case .escapeSeqDecode: return 33
        case .sqlHexDecode: return 34
        case .parityEven7bit: return 35
        case .parityOdd7bit: return 36
        case .parityZero7bit: return 37
        }
    }

    static func named(_ s: String) -> Transform? {
        let l = s.asciiLowercased
        return allCases.first { $0.rawValue.asciiLowercased == l }
    }

    /// True when `apply` would return a value with this summary unchanged; false when unsure.
    /// Most request values are plain text that most transformations leave alone, and this lets
    /// a chain skip copying them out of the arena.
    @inline(__always) func unchanged(_ v: ByteSummary) -> Bool { v.packed & triggers == 0 }

    /// The `ByteSummary.packed` bits in whose presence this step may change a value; a value
    /// with none of them passes unchanged. Each mirrors the early return of the transformation
    /// it stands for. `alwaysBit` (set in every summary): may change any value.
    var triggers: UInt32 {
        func bits(_ k: ByteSummary.Kind) -> UInt32 { UInt32(k.rawValue) }
        switch self {
        case .none: return 0
        case .lowercase: return bits(.upper)
        case .uppercase: return bits(.lowerLetter)
        case .urlDecode, .urlDecodeUni: return bits(.percentOrPlus)
        case .htmlEntityDecode: return bits(.ampersand)
        case .jsDecode, .cssDecode: return bits(.backslash)
        case .utf8toUnicode, .parityZero7bit, .parityEven7bit, .parityOdd7bit: return bits(.high)
        case .removeNulls, .replaceNulls: return bits(.nul)
        case .removeWhitespace: return bits(.space)
        case .compressWhitespace: return bits(.irregularSpace)
        case .cmdLine: return bits([.cmdLineSpecial, .upper])
        case .replaceComments: return bits(.slash)
        case .normalisePath, .normalizePath: return bits(.slash) | ByteSummary.singleDotBit
        case .normalisePathWin, .normalizePathWin: return bits([.slash, .backslash]) | ByteSummary.singleDotBit
        default: return ByteSummary.alwaysBit
        }
    }

    /// The triggers of a whole chain: a value with none of them passes every step unchanged.
    static func triggers(_ chain: [Transform]) -> UInt32 { chain.reduce(0) { $0 | $1.triggers } }

    func apply(_ b: Bytes) -> Bytes {
        switch self {
        case .none: return b
        case .lowercase: return asciiLower(b)
        case .uppercase: return b.map { ($0 >= 97 && $0 <= 122) ? $0 - 32 : $0 }
        case .urlDecode: return T.urlDecode(b, uni: false)
        case .urlDecodeUni: return T.urlDecode(b, uni: true)
        case .urlEncode: return T.urlEncode(b)
        case .htmlEntityDecode: return T.htmlEntityDecode(b)
        case .jsDecode: return T.jsDecode(b)
        case .cssDecode: return T.cssDecode(b)
        case .utf8toUnicode: return T.utf8toUnicode(b)
        case .removeNulls: return b.contains(0) ? b.filter { $0 != 0 } : b
        case .replaceNulls: return b.contains(0) ? b.map { $0 == 0 ? 32 : $0 } : b
        case .removeWhitespace: return b.contains { isSpaceByte($0) || $0 == 0xa0 } ? b.filter { !isSpaceByte($0) && $0 != 0xa0 } : b
        case .compressWhitespace: return T.compressWhitespace(b)
        case .cmdLine: return T.cmdLine(b)
        case .replaceComments: return T.replaceComments(b)
        case .removeComments: return T.removeComments(b)
        case .removeCommentsChar: return T.removeCommentsChar(b)
        case .normalisePath, .normalizePath: return T.normalizePath(b, win: false)
        case .normalisePathWin, .normalizePathWin: return T.normalizePath(b, win: true)
        case .base64Decode: return T.base64Decode(b, ext: false)
        case .base64DecodeExt: return T.base64Decode(b, ext: true)
        case .base64Encode: return T.base64Encode(b)
        case .hexEncode: return T.hexEncode(b)
        case .hexDecode: return T.hexDecode(b)
        case .sha1: return SHA1.hash(b)
        case .length: return b.count.bytes
        case .trim: return T.trimRight(T.trimLeft(b))
        case .trimLeft: return T.trimLeft(b)
        case .trimRight: return T.trimRight(b)
        case .escapeSeqDecode: return T.escapeSeqDecode(b)
        case .sqlHexDecode: return T.sqlHexDecode(b)
        case .parityEven7bit, .parityOdd7bit, .parityZero7bit: return b.map { $0 & 0x7f }
        }
    }
}

enum T {
    static func urlDecode(_ b: Bytes, uni: Bool) -> Bytes {
        if !b.contains(where: { $0 == 37 || $0 == 43 }) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c == 37 {  // %
                if uni, i + 5 < n, b[i + 1] | 0x20 == UInt8(ascii: "u"),
                   let h1 = hexValue(b[i + 2]), let h2 = hexValue(b[i + 3]), let h3 = hexValue(b[i + 4]), let h4 = hexValue(b[i + 5]) {
                    let code = Int(h1) << 12 | Int(h2) << 8 | Int(h3) << 4 | Int(h4)
                    if code >= 0xff01 && code <= 0xff5e { out.append(UInt8(code - 0xfee0)) }
                    else { out.append(h3 << 4 | h4) }
                    i += 6; continue
                }
                if i + 2 < n, let h = hexValue(b[i + 1]), let l = hexValue(b[i + 2]) {
                    out.append(h << 4 | l); i += 3; continue
                }
                out.append(c); i += 1
            } else if c == 43 { out.append(32); i += 1 }
            else { out.append(c); i += 1 }
        }
        return out
    }

    /// Decoding of `application/x-www-form-urlencoded` names and values (ARGS) into `out`
    /// (room for `p.count` bytes: decoding never lengthens); the length written. The same as
    /// `urlDecode(uni: false)`, without an intermediate array.
    static func formDecode(_ p: UnsafeBufferPointer<UInt8>, into out: UnsafeMutablePointer<UInt8>) -> Int {
        var i = 0, o = 0
        let n = p.count
        while i < n {
            let c = p[i]
            if c == 37, i + 2 < n, let h = hexValue(p[i + 1]), let l = hexValue(p[i + 2]) {
                out[o] = h << 4 | l; i += 3
            } else {
                out[o] = c == 43 ? 32 : c; i += 1
            }
            o += 1
        }
        return o
    }

    /// Percent-decoding without '+' (REQUEST_URI, REQUEST_FILENAME).
    static func uriDecode(_ b: Bytes) -> Bytes {
        if !b.contains(37) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if b[i] == 37, i + 2 < b.count, let h = hexValue(b[i + 1]), let l = hexValue(b[i + 2]) {
                out.append(h << 4 | l); i += 3
            } else { out.append(b[i]); i += 1 }
        }
        return out
    }

    static func urlEncode(_ b: Bytes) -> Bytes {
        var out = Bytes()
        let hex = Array("0123456789abcdef".utf8)
        for c in b {
            if c == 32 { out.append(43) }
            else if (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 42 || c == 45 || c == 46 || c == 95 { out.append(c) }
            else { out += [37, hex[Int(c >> 4)], hex[Int(c & 15)]] }
        }
        return out
    }

    static func htmlEntityDecode(_ b: Bytes) -> Bytes {
        if !b.contains(38) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        while i < n {
            guard b[i] == 38, i + 1 < n else { out.append(b[i]); i += 1; continue }
            if b[i + 1] == 35 {  // &#
                var j = i + 2
                var v = 0
                var digits = 0
                if j < n, b[j] | 0x20 == UInt8(ascii: "x") {
                    j += 1
                    while j < n, let h = hexValue(b[j]) { v = min(v * 16 + Int(h), 0x10ffff); j += 1; digits += 1 }
                } else {
                    while j < n, b[j] >= 48, b[j] <= 57 { v = min(v * 10 + Int(b[j] - 48), 0x10ffff); j += 1; digits += 1 }
                }
                if digits > 0 {
                    out.append(UInt8(truncatingIfNeeded: v))
                    if j < n, b[j] == 59 { j += 1 }
                    i = j; continue
                }
                out.append(b[i]); i += 1; continue
            }
            var j = i + 1
            while j < n, j - i <= 8, (b[j] >= 97 && b[j] <= 122) || (b[j] >= 65 && b[j] <= 90) { j += 1 }
            let name = asciiLower(Array(b[(i + 1)..<j]))
            let rep: UInt8?
            switch String(latin1: name) {
            case "quot": rep = 34
            case "amp": rep = 38
            case "lt": rep = 60
            case "gt": rep = 62
            case "nbsp": rep = 160
            default: rep = nil
            }
            if let rep {
                out.append(rep)
                if j < n, b[j] == 59 { j += 1 }
                i = j; continue
            }
            out.append(b[i]); i += 1
        }
        return out
    }

    static func jsDecode(_ b: Bytes) -> Bytes {
        if !b.contains(92) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            guard c == 92, i + 1 < n else { out.append(c); i += 1; continue }
            let d = b[i + 1]
            if (d == 117 || d == 85), i + 5 < n, let h1 = hexValue(b[i + 2]), let h2 = hexValue(b[i + 3]), let h3 = hexValue(b[i + 4]), let h4 = hexValue(b[i + 5]) {
                let code = Int(h1) << 12 | Int(h2) << 8 | Int(h3) << 4 | Int(h4)
                if code >= 0xff01 && code <= 0xff5e { out.append(UInt8(code - 0xfee0)) } else { out.append(h3 << 4 | h4) }
                i += 6; continue
            }
            if (d == 120 || d == 88), i + 3 < n, let h = hexValue(b[i + 2]), let l = hexValue(b[i + 3]) {
                out.append(h << 4 | l); i += 4; continue
            }
            if d >= 48, d <= 55 {
                var j = i + 1
                var v = 0
                while j < n, j - i <= 3, b[j] >= 48, b[j] <= 55 { v = v * 8 + Int(b[j] - 48); j += 1 }
                if v > 255, j - i == 4 { v = v / 8; j -= 1 }   // only octal that fits a byte
                out.append(UInt8(truncatingIfNeeded: v)); i = j; continue
            }
            switch d {
            case 97: out.append(7)
            case 98: out.append(8)
            case 102: out.append(12)
            case 110: out.append(10)
            case 114: out.append(13)
            case 116: out.append(9)
            case 118: out.append(11)
            default: out.append(d)
            }
            i += 2
        }
        return out
    }

    static func cssDecode(_ b: Bytes) -> Bytes {
        if !b.contains(92) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            guard c == 92 else { out.append(c); i += 1; continue }
            if i + 1 >= n { i += 1; continue }   // a lone trailing backslash is dropped
            var j = i + 1
            var digits: [UInt8] = []
            while j < n, digits.count < 6, let h = hexValue(b[j]) { digits.append(h); j += 1 }
            if !digits.isEmpty {
                // Only the last byte matters (ModSecurity keeps the low byte); full-width ASCII folds.
                var v = 0
                for d in digits { v = v << 4 | Int(d) }
                if digits.count > 2, v >= 0xff01, v <= 0xff5e { out.append(UInt8(v - 0xfee0)) }
                else { out.append(UInt8(truncatingIfNeeded: v)) }
                if j < n, isSpaceByte(b[j]) { j += 1 }
                i = j; continue
            }
            if b[i + 1] == 10 { i += 2; continue }
            out.append(b[i + 1]); i += 2
        }
        return out
    }

    static func utf8toUnicode(_ b: Bytes) -> Bytes {
        if !b.contains(where: { $0 >= 0x80 }) { return b }
        var out = Bytes(); out.reserveCapacity(b.count * 2)
        let hex = Array("0123456789abcdef".utf8)
        var i = 0
        let n = b.count
        func emit(_ v: Int) {
            out += [37, 117]
            let v16 = v & 0xffff
            out += [hex[(v16 >> 12) & 15], hex[(v16 >> 8) & 15], hex[(v16 >> 4) & 15], hex[v16 & 15]]
        }
        while i < n {
            let c = b[i]
            if c < 0x80 { out.append(c); i += 1; continue }
            var len = 0, v = 0
            if c & 0xe0 == 0xc0 { len = 2; v = Int(c & 0x1f) }
            else if c & 0xf0 == 0xe0 { len = 3; v = Int(c & 0x0f) }
            else if c & 0xf8 == 0xf0 { len = 4; v = Int(c & 0x07) }
            var ok = len > 0 && i + len <= n
            if ok { for k in 1..<len where b[i + k] & 0xc0 != 0x80 { ok = false } }
            if !ok { out.append(c); i += 1; continue }
            for k in 1..<len { v = v << 6 | Int(b[i + k] & 0x3f) }
            emit(v)
            i += len
        }
        return out
    }

    static func compressWhitespace(_ b: Bytes) -> Bytes {
        if !b.contains(where: { isSpaceByte($0) || $0 == 0xa0 }) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var inSpace = false
        for c in b {
            if isSpaceByte(c) || c == 0xa0 {
                if !inSpace { out.append(32); inSpace = true }
            } else { out.append(c); inSpace = false }
        }
        return out
    }

    static func cmdLine(_ b: Bytes) -> Bytes {
        // Nothing to drop, fold, lowercase or unspace: unchanged.
        if !b.contains(where: { c in
            c == 34 || c == 39 || c == 92 || c == 94 || c == 32 || c == 44 || c == 59 || (c >= 9 && c <= 13)
                || c == 47 || c == 40 || (c >= 65 && c <= 90)
        }) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var space = false
        for c in b {
            switch c {
            case 34, 39, 92, 94: continue   // " ' \ ^
            case 32, 44, 59, 9, 10, 11, 12, 13:   // space , ; and whitespace
                if !space { out.append(32); space = true }
            case 47, 40:   // / ( : remove a space before them
                if space, out.last == 32 { out.removeLast() }
                space = false
                out.append(c)
            default:
                out.append(lowerByte(c)); space = false
            }
        }
        return out
    }

    static func replaceComments(_ b: Bytes) -> Bytes {
        if !b.contains(47) { return b }   // no "/*": unchanged
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        var inComment = false
        while i < n {
            if !inComment {
                if b[i] == 47, i + 1 < n, b[i + 1] == 42 { inComment = true; i += 2 }
                else { out.append(b[i]); i += 1 }
            } else {
                if b[i] == 42, i + 1 < n, b[i + 1] == 47 { inComment = false; out.append(32); i += 2 }
                else { i += 1 }
            }
        }
        if inComment { out.append(32) }
        return out
    }

    static func removeComments(_ b: Bytes) -> Bytes {
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        var inC = false
        while i < n {
            if !inC {
                if b[i] == 47, i + 1 < n, b[i + 1] == 42 { inC = true; i += 2 }
                else if b[i] == 60, i + 3 < n, b[i + 1] == 33, b[i + 2] == 45, b[i + 3] == 45 { inC = true; i += 4 }
                else if b[i] == 45, i + 1 < n, b[i + 1] == 45 { break }
                else if b[i] == 35 { break }
                else { out.append(b[i]); i += 1 }
            } else {
                if b[i] == 42, i + 1 < n, b[i + 1] == 47 { inC = false; i += 2 }
                else if b[i] == 45, i + 2 < n, b[i + 1] == 45, b[i + 2] == 62 { inC = false; i += 3 }
                else { i += 1 }
            }
        }
        return out
    }

    static func removeCommentsChar(_ b: Bytes) -> Bytes {
        if !b.contains(where: { $0 == 47 || $0 == 42 || $0 == 60 || $0 == 45 || $0 == 35 }) { return b }
        var out = Bytes(); out.reserveCapacity(b.count)
        var i = 0
        let n = b.count
        while i < n {
            if b[i] == 47, i + 1 < n, b[i + 1] == 42 { i += 2 }
            else if b[i] == 42, i + 1 < n, b[i + 1] == 47 { i += 2 }
            else if b[i] == 60, i + 3 < n, b[i + 1] == 33, b[i + 2] == 45, b[i + 3] == 45 { i += 4 }
            else if b[i] == 45, i + 2 < n, b[i + 1] == 45, b[i + 2] == 62 { i += 3 }
            else if b[i] == 45, i + 1 < n, b[i + 1] == 45 { i += 2 }
            else if b[i] == 35 { i += 1 }
            else { out.append(b[i]); i += 1 }
        }
        return out
    }

    static func normalizePath(_ input: Bytes, win: Bool) -> Bytes {
        // No separator: one segment, which is dropped only when it is ".".
        if !input.contains(where: { $0 == 47 || (win && $0 == 92) }) { return input == [46] ? [] : input }
        var b = win ? input.map { $0 == 92 ? 47 : $0 } : input
        if b.isEmpty { return b }
        let absolute = b.first == 47
        let trailing = b.last == 47 || (b.count >= 2 && b.suffix(2) == [47, 46]) || (b.count >= 3 && b.suffix(3) == [47, 46, 46])
        var segs: [ArraySlice<UInt8>] = []
        for s in b.split(separator: 47, omittingEmptySubsequences: true) {
            if s == [46] { continue }
            if s == [46, 46] {
                if let last = segs.last, last != [46, 46] { segs.removeLast() }
                else if !absolute { segs.append(s) }
                continue
            }
            segs.append(s)
        }
        b = absolute ? [47] : []
        for (k, s) in segs.enumerated() {
            if k > 0 { b.append(47) }
            b += s
        }
        if trailing, b.last != 47, !segs.isEmpty { b.append(47) }
        return b
    }

    static let b64: [Int8] = {
        var t = [Int8](repeating: -1, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { t[Int(c)] = Int8(i) }
        return t
    }()

    static func base64Decode(_ b: Bytes, ext: Bool) -> Bytes {
        var out = Bytes(); out.reserveCapacity(b.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0
        for c in b {
            if c == 61 { break }   // '='
            let v = b64[Int(c)]
            if v < 0 { if ext { continue } else { break } }
            acc = acc << 6 | UInt32(v); bits += 6
            if bits >= 8 { bits -= 8; out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits))) }
        }
        return out
    }

    static func base64Encode(_ b: Bytes) -> Bytes {
        let t = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out = Bytes()
        var i = 0
        while i < b.count {
            let a = UInt32(b[i]), c1 = i + 1 < b.count ? UInt32(b[i + 1]) : 0, c2 = i + 2 < b.count ? UInt32(b[i + 2]) : 0
            let v = a << 16 | c1 << 8 | c2
            out.append(t[Int(v >> 18 & 63)]); out.append(t[Int(v >> 12 & 63)])
            out.append(i + 1 < b.count ? t[Int(v >> 6 & 63)] : 61)
            out.append(i + 2 < b.count ? t[Int(v & 63)] : 61)
            i += 3
        }
        return out
    }

    static func hexEncode(_ b: Bytes) -> Bytes {
        let hex = Array("0123456789abcdef".utf8)
        var out = Bytes(); out.reserveCapacity(b.count * 2)
        for c in b { out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 15)]) }
        return out
    }

    static func hexDecode(_ b: Bytes) -> Bytes {
        var out = Bytes()
        var i = 0
        while i + 1 < b.count {
            if let h = hexValue(b[i]), let l = hexValue(b[i + 1]) { out.append(h << 4 | l) }
            i += 2
        }
        return out
    }

    static func trimLeft(_ b: Bytes) -> Bytes { Array(b.drop { isSpaceByte($0) }) }
    static func trimRight(_ b: Bytes) -> Bytes {
        var e = b.count
        while e > 0, isSpaceByte(b[e - 1]) { e -= 1 }
        return Array(b[..<e])
    }

    static func escapeSeqDecode(_ b: Bytes) -> Bytes {
        // The C escapes of jsDecode (without \u) are what ModSecurity decodes here.
        jsDecode(b)
    }

    static func sqlHexDecode(_ b: Bytes) -> Bytes {
        var out = Bytes()
        var i = 0
        while i < b.count {
            if b[i] == 48, i + 3 < b.count, b[i + 1] | 0x20 == 120, isHex(b[i + 2]), isHex(b[i + 3]) {
                var j = i + 2
                while j + 1 < b.count, let h = hexValue(b[j]), let l = hexValue(b[j + 1]) { out.append(h << 4 | l); j += 2 }
                i = j
            } else { out.append(b[i]); i += 1 }
        }
        return out
    }
}

/// SHA-1 (t:sha1; CRS hashes the User-Agent for the IP collection key).
enum SHA1 {
    /// One pass over the message in 64-byte blocks (the last one or two padded on the stack);
    /// no per-byte array bounds checks or per-round branches (CRS hashes every request's
    /// User-Agent with it).
    static func hash(_ message: Bytes) -> Bytes {
        var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
        let w = UnsafeMutablePointer<UInt32>.allocate(capacity: 80)
        let tail = UnsafeMutablePointer<UInt8>.allocate(capacity: 128)
        defer { w.deallocate(); tail.deallocate() }
        message.withUnsafeBufferPointer { m in
            let full = m.count / 64
            if let base = m.baseAddress {
                for b in 0..<full { block(base + b * 64, w, &h) }
            }
            // Padding: the rest of the message, 0x80, zeros, then the bit length (big-endian).
            let rest = m.count - full * 64
            tail.initialize(repeating: 0, count: 128)
            if rest > 0, let base = m.baseAddress { tail.update(from: base + full * 64, count: rest) }
            tail[rest] = 0x80
            let tailBlocks = rest < 56 ? 1 : 2
            let bits = UInt64(m.count) &* 8
            for i in 0..<8 { tail[tailBlocks * 64 - 1 - i] = UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8)) }
            for b in 0..<tailBlocks { block(UnsafePointer(tail + b * 64), w, &h) }
        }
        var out = Bytes()
        out.reserveCapacity(20)
        for v in [h.0, h.1, h.2, h.3, h.4] {
            out.append(UInt8(v >> 24)); out.append(UInt8(truncatingIfNeeded: v >> 16))
            out.append(UInt8(truncatingIfNeeded: v >> 8)); out.append(UInt8(truncatingIfNeeded: v))
        }
        return out
    }

    @inline(__always)
    private static func block(_ p: UnsafePointer<UInt8>, _ w: UnsafeMutablePointer<UInt32>, _ h: inout (UInt32, UInt32, UInt32, UInt32, UInt32)) {
        for i in 0..<16 {
            w[i] = UInt32(p[4 * i]) << 24 | UInt32(p[4 * i + 1]) << 16 | UInt32(p[4 * i + 2]) << 8 | UInt32(p[4 * i + 3])
        }
        for i in 16..<80 { let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]; w[i] = x << 1 | x >> 31 }
        var a = h.0, b = h.1, c = h.2, d = h.3, e = h.4
        @inline(__always) func round(_ f: UInt32, _ k: UInt32, _ wi: UInt32) {
            let t = (a << 5 | a >> 27) &+ f &+ e &+ k &+ wi
            e = d; d = c; c = b << 30 | b >> 2; b = a; a = t
        }
        for i in 0..<20 { round((b & c) | (~b & d), 0x5A827999, w[i]) }
        for i in 20..<40 { round(b ^ c ^ d, 0x6ED9EBA1, w[i]) }
        for i in 40..<60 { round((b & c) | (b & d) | (c & d), 0x8F1BBCDC, w[i]) }
        for i in 60..<80 { round(b ^ c ^ d, 0xCA62C1D6, w[i]) }
        h.0 = h.0 &+ a; h.1 = h.1 &+ b; h.2 = h.2 &+ c; h.3 = h.3 &+ d; h.4 = h.4 &+ e
    }
}


/// Which kinds of bytes a value contains, found in one pass: enough to tell that most
/// transformations would leave it as it is (`Transform.unchanged`).
struct ByteSummary {
    struct Kind: OptionSet {
        let rawValue: UInt16
        static let upper = Kind(rawValue: 1)
        static let lowerLetter = Kind(rawValue: 2)
        static let percentOrPlus = Kind(rawValue: 4)
        static let ampersand = Kind(rawValue: 8)
        static let backslash = Kind(rawValue: 16)
        static let high = Kind(rawValue: 32)
        static let nul = Kind(rawValue: 64)
        /// Whitespace as isSpaceByte sees it, or 0xa0.
        static let space = Kind(rawValue: 128)
        static let slash = Kind(rawValue: 256)
        /// What cmdLine drops, folds or unspaces: " ' \ ^ , ; ( / and whitespace.
        static let cmdLineSpecial = Kind(rawValue: 512)
        /// A whitespace run that is not one plain space (what compressWhitespace changes).
        static let irregularSpace = Kind(rawValue: 1024)
    }

    /// The kinds present (low 16 bits), `singleDotBit` for the value ".", and `alwaysBit`
    /// (never 0, so 0 can mean "not computed").
    let packed: UInt32

    init(_ v: UnsafeBufferPointer<UInt8>) {
        var bits: UInt16 = 0
        var prevSpace = false
        ByteSummary.table.withUnsafeBufferPointer { t in
            for c in v {
                let k = t[Int(c)]
                bits |= k
                let sp = k & Kind.space.rawValue != 0
                if sp && (c != 32 || prevSpace) { bits |= Kind.irregularSpace.rawValue }
                prevSpace = sp
            }
        }
        let singleDot = v.count == 1 && v[0] == 46
        packed = UInt32(bits) | (singleDot ? ByteSummary.singleDotBit : 0) | ByteSummary.alwaysBit
    }

    init(packed: UInt32) { self.packed = packed }

    static let singleDotBit: UInt32 = 1 << 16
    static let alwaysBit: UInt32 = 1 << 31

    static let table: [UInt16] = (0..<256).map { i -> UInt16 in
        let c = UInt8(i)
        var k: Kind = []
        if c >= 65 && c <= 90 { k.insert(.upper) }
        if c >= 97 && c <= 122 { k.insert(.lowerLetter) }
        if c == 37 || c == 43 { k.insert(.percentOrPlus) }
        if c == 38 { k.insert(.ampersand) }
        if c == 92 { k.insert(.backslash) }
        if c >= 0x80 { k.insert(.high) }
        if c == 0 { k.insert(.nul) }
        if isSpaceByte(c) || c == 0xa0 { k.insert(.space) }
        if c == 47 { k.insert(.slash) }
        if c == 34 || c == 39 || c == 92 || c == 94 || c == 32 || c == 44 || c == 59 || (c >= 9 && c <= 13) || c == 47 || c == 40 {
            k.insert(.cmdLineSpecial)
        }
        return k.rawValue
    }
}
