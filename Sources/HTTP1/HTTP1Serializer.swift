import OutriderCore

/// Writes HTTP/1.1 heads and chunked framing into a `ByteBuffer`. Upstream and downstream are both
/// spoken as HTTP/1.1 whatever version the peer used.
///
/// Field values are written with CR, LF and NUL replaced by SP: values normally come from the
/// parser (which never lets them through) but filters can set headers, and a stray CRLF would
/// otherwise let one header smuggle in another (response splitting).
public enum HTTP1Serializer {
    /// "METHOD target HTTP/1.1\r\n", then each field "Name: value\r\n", then "\r\n".
    public static func writeRequestHead(_ head: RequestHead, into out: inout ByteBuffer) {
        out.append(head.method)
        out.append(byte: asciiSP)
        appendSanitized(head.target, into: &out)
        out.append(" HTTP/1.1\r\n")
        writeFields(head.headers, into: &out)
        out.append("\r\n")
    }

    /// "HTTP/1.1 200 OK\r\n", then the fields and "\r\n". Uses `head.reason`, or the standard
    /// reason phrase for the status when it is empty.
    public static func writeResponseHead(_ head: ResponseHead, into out: inout ByteBuffer) {
        out.append("HTTP/1.1 ")
        if head.status >= 100 && head.status <= 999 {
            out.append(byte: UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: head.status / 100))
            out.append(byte: UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: (head.status / 10) % 10))
            out.append(byte: UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: head.status % 10))
        } else {
            out.append(String(head.status))
        }
        out.append(byte: asciiSP)
        appendSanitized(head.reason.isEmpty ? reasonPhrase(head.status) : head.reason, into: &out)
        out.append("\r\n")
        writeFields(head.headers, into: &out)
        out.append("\r\n")
    }

    /// One chunk: hex size, CRLF, the data, CRLF. Writes nothing for empty data, because an
    /// empty chunk would end the body.
    public static func writeChunk(_ data: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        if data.isEmpty { return }
        appendHex(UInt64(data.count), into: &out)
        out.append("\r\n")
        out.append(data)
        out.append("\r\n")
    }

    /// The last chunk "0\r\n", the trailer fields, and the final "\r\n".
    public static func writeLastChunk(trailers: HTTPHeaders, into out: inout ByteBuffer) {
        out.append("0\r\n")
        writeFields(trailers, into: &out)
        out.append("\r\n")
    }

    private static func writeFields(_ headers: HTTPHeaders, into out: inout ByteBuffer) {
        for field in headers.fields {
            appendSanitized(field.name, into: &out)
            out.append(": ")
            appendSanitized(field.value, into: &out)
            out.append("\r\n")
        }
    }

    private static func appendHex(_ value: UInt64, into out: inout ByteBuffer) {
        let digits: StaticString = "0123456789abcdef"
        var shift = 60
        while shift > 0 && (value >> UInt64(shift)) == 0 { shift -= 4 }
        while shift >= 0 {
            out.append(byte: digits.utf8Start[Int((value >> UInt64(shift)) & 0xF)])
            shift -= 4
        }
    }

    @inline(__always)
    private static func appendSanitized(_ text: String, into out: inout ByteBuffer) {
        let appended: Bool? = text.utf8.withContiguousStorageIfAvailable { utf8 in
            for b in utf8 where b == asciiCR || b == asciiLF || b == 0 { return false }
            out.append(UnsafeRawBufferPointer(utf8))
            return true
        }
        if appended == true { return }
        out.append(text.utf8.lazy.map { $0 == asciiCR || $0 == asciiLF || $0 == 0 ? asciiSP : $0 })
    }
}
