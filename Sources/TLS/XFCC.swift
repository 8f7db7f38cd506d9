/// Envoy's `x-forwarded-client-cert` header (CONVENTIONS.md §5).
///
/// One element per hop; elements are separated by `,`, pairs inside an element by `;`. A value
/// containing `,`, `;` or `=` is double-quoted, with `"` and `\` escaped by a backslash; `Subject`
/// and `Cert` are always quoted, as Envoy does. The proxy sanitizes by default: a client-supplied
/// XFCC is removed and replaced by the element built here.
public enum XFCC {
    /// `By=<by>;Hash=<sha256 hex>;Cert="<URL-encoded PEM>";Subject="<subject>";URI=<uri>;DNS=<dns>…`
    /// - `by`: our own URI SAN (the identity that received the request); omitted when nil/empty.
    /// - `URI` is present only when the certificate has exactly one URI SAN (two URI SANs are an
    ///   identity we do not vouch for); `DNS` repeats once per DNS SAN.
    public static func element(peer: PeerCertificateInfo, by: String?, includeCert: Bool) -> String {
        var pairs: [String] = []
        if let by, !by.isEmpty { pairs.append("By=" + value(by)) }
        pairs.append("Hash=" + peer.sha256Fingerprint)
        if includeCert { pairs.append("Cert=" + quoted(urlEncode(peer.pemEncoded))) }
        pairs.append("Subject=" + quoted(peer.subject))
        if peer.uriSANs.count == 1, let uri = peer.uriSANs.first { pairs.append("URI=" + value(uri)) }
        for dns in peer.dnsSANs { pairs.append("DNS=" + value(dns)) }
        return pairs.joined(separator: ";")
    }

    /// The value as is, or quoted when it contains a separator or a quote.
    public static func value(_ raw: String) -> String {
        for c in raw.utf8 where c == UInt8(ascii: ",") || c == UInt8(ascii: ";") || c == UInt8(ascii: "=")
            || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
            return quoted(raw)
        }
        return raw
    }

    public static func quoted(_ raw: String) -> String {
        var out = "\""
        for ch in raw.unicodeScalars {
            if ch == "\"" || ch == "\\" { out.unicodeScalars.append("\\") }
            out.unicodeScalars.append(ch)
        }
        out += "\""
        return out
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    public static func urlEncode(_ raw: String) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(raw.utf8.count + raw.utf8.count / 4)
        for c in raw.utf8 {
            let unreserved = (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
                || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
            if unreserved {
                out.append(c)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(digits[Int(c >> 4)])
                out.append(digits[Int(c & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
