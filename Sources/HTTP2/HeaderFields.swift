import CNghttp2
import OutriderCore

/// Response and trailer fields as HTTP/2 wants them (RFC 9113 §8.2): names lowercased, no
/// pseudo-headers from the caller, no connection-specific fields (and none the Connection field
/// names), TE only as "trailers", and no field nghttp2 would refuse to encode validly.
enum HeaderFields {
    private static let connectionSpecific: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
        "http2-settings",
    ]

    static func outbound(_ headers: HTTPHeaders) -> [(name: String, value: String)] {
        var nominated = Set<String>()
        for value in headers.values("connection") {
            for token in value.split(separator: ",") {
                let t = String(token.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
                if !t.isEmpty { nominated.insert(t.asciiLowercased) }
            }
        }
        var out: [(name: String, value: String)] = []
        out.reserveCapacity(headers.count)
        for field in headers {
            let name = field.name.asciiLowercased
            if name.isEmpty || name.utf8.first == UInt8(ascii: ":") { continue }
            if connectionSpecific.contains(name) || nominated.contains(name) { continue }
            if name == "te" && !field.value.asciiCaseInsensitiveEquals("trailers") { continue }
            // RFC 9110 §5.5: no leading/trailing whitespace in a field value.
            let value = trimmed(field.value)
            if !valid(name: name, value: value) { continue }
            out.append((name, value))
        }
        return out
    }

    private static func trimmed(_ s: String) -> String {
        let u = s.utf8
        guard let f = u.first, let l = u.last else { return s }
        if f != 0x20 && f != 0x09 && l != 0x20 && l != 0x09 { return s }
        var start = u.startIndex, end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start, u[u.index(before: end)] == 0x20 || u[u.index(before: end)] == 0x09 { end = u.index(before: end) }
        return String(decoding: u[start..<end], as: UTF8.self)
    }

    private static func valid(name: String, value: String) -> Bool {
        var n = name, v = value
        let okName = n.withUTF8 { b in nghttp2_check_header_name(b.baseAddress, b.count) != 0 }
        let okValue = v.withUTF8 { b in b.isEmpty || nghttp2_check_header_value(b.baseAddress, b.count) != 0 }
        return okName && okValue
    }

    /// Calls `body` with an nghttp2_nv array over `fields` (nghttp2 copies them on submit).
    static func withNV<R>(_ fields: [(name: String, value: String)], _ body: (UnsafePointer<nghttp2_nv>?, Int) -> R) -> R {
        // One contiguous buffer holds every name and value, so the pointers stay valid together.
        var bytes: [UInt8] = []
        var spans: [(Int, Int, Int, Int)] = []
        spans.reserveCapacity(fields.count)
        for f in fields {
            let ns = bytes.count
            bytes.append(contentsOf: f.name.utf8)
            let vs = bytes.count
            bytes.append(contentsOf: f.value.utf8)
            spans.append((ns, vs - ns, vs, bytes.count - vs))
        }
        if bytes.isEmpty { bytes.append(0) }
        return bytes.withUnsafeMutableBufferPointer { buf -> R in
            guard let base = buf.baseAddress else { return body(nil, 0) }
            var nva: [nghttp2_nv] = []
            nva.reserveCapacity(spans.count)
            for s in spans {
                nva.append(nghttp2_nv(name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3,
                                      flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
            }
            return nva.withUnsafeBufferPointer { body($0.baseAddress, $0.count) }
        }
    }
}
