import CNghttp2

/// HPACK encoder and decoder over nghttp2's (nghttp2_hd_*), for tests that build frames by hand
/// and read the server's header blocks, without importing CNghttp2 outside this target.
final class HPACKEncoder {
    private var deflater: OpaquePointer?

    init?(tableSize: Int = 4096) {
        guard nghttp2_hd_deflate_new(&deflater, tableSize) == 0, deflater != nil else { return nil }
    }
    deinit { if let deflater { nghttp2_hd_deflate_del(deflater) } }

    /// One header block for `fields` (names as given: tests use this to send invalid ones too).
    func encode(_ fields: [(name: String, value: String)]) -> [UInt8] {
        guard let deflater else { return [] }
        return HeaderFields.withNV(fields) { nva, n -> [UInt8] in
            let bound = nghttp2_hd_deflate_bound(deflater, nva, n)
            var out = [UInt8](repeating: 0, count: bound)
            let written = out.withUnsafeMutableBufferPointer { buf in
                nghttp2_hd_deflate_hd(deflater, buf.baseAddress, buf.count, nva, n)
            }
            guard written >= 0 else { return [] }
            return Array(out[0..<written])
        }
    }
}

final class HPACKDecoder {
    private var inflater: OpaquePointer?

    init?() {
        guard nghttp2_hd_inflate_new(&inflater) == 0, inflater != nil else { return nil }
    }
    deinit { if let inflater { nghttp2_hd_inflate_del(inflater) } }

    /// The fields of one complete header block, or nil if it does not decode.
    func decode(_ block: [UInt8]) -> [(name: String, value: String)]? {
        guard let inflater else { return nil }
        var fields: [(name: String, value: String)] = []
        let ok = block.withUnsafeBufferPointer { buf -> Bool in
            var offset = 0
            while true {
                var nv = nghttp2_nv()
                var flags: Int32 = 0
                let base = buf.baseAddress.map { $0 + offset }
                let rv = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, base, buf.count - offset, 1)
                if rv < 0 { return false }
                offset += rv
                if flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) != 0, let n = nv.name, let v = nv.value {
                    fields.append((String(decoding: UnsafeBufferPointer(start: n, count: nv.namelen), as: UTF8.self),
                                   String(decoding: UnsafeBufferPointer(start: v, count: nv.valuelen), as: UTF8.self)))
                }
                if flags & Int32(NGHTTP2_HD_INFLATE_FINAL.rawValue) != 0 {
                    nghttp2_hd_inflate_end_headers(inflater)
                    return true
                }
                if rv == 0 && flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) == 0 { return false }
            }
        }
        return ok ? fields : nil
    }
}
