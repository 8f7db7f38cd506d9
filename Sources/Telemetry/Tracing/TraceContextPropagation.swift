// W3C Trace Context level 1: `traceparent` and `tracestate` (CONVENTIONS.md §3).

public enum TraceContextPropagation {
    /// Parses `traceparent` ("00-<32hex>-<16hex>-<2hex>", lowercase only) and normalizes
    /// `tracestate`. All-zero ids, version "ff", uppercase, wrong lengths and any other byte give
    /// nil: the caller then starts a new trace and drops `tracestate`. A version above 00
    /// (01...fe) is parsed leniently: its first 55 characters must have the version-00 shape and
    /// be followed by "-" or the end. Sampled is bit 0 of the flags; other bits are ignored.
    /// Surrounding spaces/tabs (HTTP OWS) are tolerated.
    public static func extract(traceparent: String?, tracestate: String?) -> SpanContext? {
        guard let traceparent else { return nil }
        let u = Array(trimOWS(Array(traceparent.utf8)))
        guard u.count >= 55 else { return nil }
        guard let v0 = TraceHex.lowerValue(u[0]), let v1 = TraceHex.lowerValue(u[1]) else { return nil }
        let version = (v0 << 4) | v1
        if version == 0xFF { return nil }
        if version == 0 {
            guard u.count == 55 else { return nil }
        } else if u.count > 55, u[55] != UInt8(ascii: "-") {
            return nil
        }
        let dash = UInt8(ascii: "-")
        guard u[2] == dash, u[35] == dash, u[52] == dash else { return nil }
        guard let th = TraceHex.parse64(u[3..<19]), let tl = TraceHex.parse64(u[19..<35]),
              let sid = TraceHex.parse64(u[36..<52]), let flags = TraceHex.parse64(u[53..<55])
        else { return nil }
        let traceID = TraceID(high: th, low: tl)
        let spanID = SpanID(sid)
        guard traceID.isValid, spanID.isValid else { return nil }
        return SpanContext(
            traceID: traceID, spanID: spanID, sampled: flags & 1 == 1,
            traceState: normalizeTracestate(tracestate), isRemote: true)
    }

    /// "00-<trace id>-<span id>-01" when sampled, "-00" otherwise.
    public static func traceparent(_ ctx: SpanContext) -> String {
        var out: [UInt8] = Array("00-".utf8)
        out.reserveCapacity(55)
        TraceHex.append(ctx.traceID.high, to: &out)
        TraceHex.append(ctx.traceID.low, to: &out)
        out.append(UInt8(ascii: "-"))
        TraceHex.append(ctx.spanID.raw, to: &out)
        out.append(contentsOf: ctx.sampled ? Array("-01".utf8) : Array("-00".utf8))
        return String(decoding: out, as: UTF8.self)
    }

    /// Maximum list-members in a `tracestate`.
    public static let maxTracestateMembers = 32
    /// Length a `tracestate` is truncated to (the spec's propagation minimum).
    public static let maxTracestateLength = 512
    /// Members longer than this are dropped first when truncating.
    public static let largeTracestateMember = 128

    /// Validates and normalizes `tracestate`: list-members `key=value` separated by "," with
    /// optional spaces/tabs around them; empty members are skipped; members that break the
    /// key/value grammar are dropped; a repeated key keeps its first (left-most) member; at most
    /// 32 members are kept (the first 32); when the result, joined by ",", is longer than 512
    /// characters, members longer than 128 characters are removed first (right-most first),
    /// then members from the right. Nil if nothing valid remains.
    public static func normalizeTracestate(_ raw: String?) -> String? {
        guard let raw else { return nil }
        var members: [ArraySlice<UInt8>] = []
        var keys: [ArraySlice<UInt8>] = []
        let bytes = Array(raw.utf8)
        for piece in bytes.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            if members.count >= maxTracestateMembers { break }
            let m = trimOWS(piece)
            if m.isEmpty { continue }
            guard let eq = m.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = m[m.startIndex..<eq]
            let value = m[(eq + 1)...]
            guard validKey(key), validValue(value) else { continue }
            if keys.contains(where: { $0.elementsEqual(key) }) { continue }
            keys.append(key)
            members.append(m)
        }
        if members.isEmpty { return nil }
        var total = members.reduce(0) { $0 + $1.count } + members.count - 1
        while total > maxTracestateLength, !members.isEmpty {
            let victim = members.lastIndex(where: { $0.count > largeTracestateMember }) ?? (members.count - 1)
            total -= members[victim].count + (members.count > 1 ? 1 : 0)
            members.remove(at: victim)
        }
        if members.isEmpty { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(total)
        for (i, m) in members.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: m)
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: - Grammar

    @inline(__always) static func isLCAlpha(_ c: UInt8) -> Bool { c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") }
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    @inline(__always) static func isKeyChar(_ c: UInt8) -> Bool {
        isLCAlpha(c) || isDigit(c) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
            || c == UInt8(ascii: "*") || c == UInt8(ascii: "/")
    }

    /// simple-key = lcalpha 0*255(keychar); multi-tenant-key = tenant-id "@" system-id with
    /// tenant-id = (lcalpha / DIGIT) 0*240(keychar), system-id = lcalpha 0*13(keychar).
    static func validKey(_ key: ArraySlice<UInt8>) -> Bool {
        guard let first = key.first else { return false }
        if let at = key.firstIndex(of: UInt8(ascii: "@")) {
            let tenant = key[key.startIndex..<at]
            let system = key[(at + 1)...]
            guard let t0 = tenant.first, isLCAlpha(t0) || isDigit(t0), tenant.count <= 241,
                  tenant.allSatisfy(isKeyChar) else { return false }
            guard let s0 = system.first, isLCAlpha(s0), system.count <= 14,
                  system.allSatisfy(isKeyChar) else { return false }
            return true
        }
        return isLCAlpha(first) && key.count <= 256 && key.allSatisfy(isKeyChar)
    }

    /// value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-7E except "," and "=".
    static func validValue(_ value: ArraySlice<UInt8>) -> Bool {
        guard let last = value.last, value.count <= 256, last != 0x20 else { return false }
        for c in value {
            if c < 0x20 || c > 0x7E || c == UInt8(ascii: ",") || c == UInt8(ascii: "=") { return false }
        }
        return true
    }

    static func trimOWS<C: BidirectionalCollection>(_ c: C) -> C.SubSequence where C.Element == UInt8 {
        var s = c[...]
        while let f = s.first, f == 0x20 || f == 0x09 { s = s.dropFirst() }
        while let l = s.last, l == 0x20 || l == 0x09 { s = s.dropLast() }
        return s
    }
}
