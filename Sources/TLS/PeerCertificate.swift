import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// What the proxy knows about a verified peer certificate: copied out of OpenSSL once, after the
/// handshake, so filters on any thread can read it.
public struct PeerCertificateInfo: Sendable, Hashable {
    /// RFC 2253 form, most specific first: `CN=client,O=Example`.
    public var subject: String
    public var uriSANs: [String]
    public var dnsSANs: [String]
    /// The SPIFFE ID when the certificate carries exactly one URI SAN and it is a valid
    /// `spiffe://<trust-domain>/<path>`; nil otherwise, with the reason in `spiffeIDProblem`.
    public var spiffeID: String?
    public var spiffeIDProblem: SPIFFEIDProblem?
    public var pemEncoded: String
    /// SHA-256 of the DER certificate, lowercase hex (XFCC `Hash`).
    public var sha256Fingerprint: String
    /// Unix seconds.
    public var notAfter: UInt64

    public init(subject: String, uriSANs: [String], dnsSANs: [String], pemEncoded: String,
                sha256Fingerprint: String, notAfter: UInt64) {
        self.subject = subject
        self.uriSANs = uriSANs
        self.dnsSANs = dnsSANs
        self.pemEncoded = pemEncoded
        self.sha256Fingerprint = sha256Fingerprint
        self.notAfter = notAfter
        switch SPIFFEID.fromURISANs(uriSANs) {
        case .success(let id): spiffeID = id; spiffeIDProblem = nil
        case .failure(let problem): spiffeID = nil; spiffeIDProblem = problem
        }
    }
}

/// Why a certificate has no SPIFFE identity (CONVENTIONS.md §5: an SVID has exactly one URI SAN).
public enum SPIFFEIDProblem: Error, Sendable, Hashable, CustomStringConvertible {
    case noURISAN
    case multipleURISANs(count: Int)
    /// The single URI SAN is not a well-formed `spiffe://trust-domain/path`.
    case malformed(String)

    public var description: String {
        switch self {
        case .noURISAN: return "certificate has no URI SAN"
        case .multipleURISANs(let n): return "certificate has \(n) URI SANs; a SPIFFE identity needs exactly one"
        case .malformed(let why): return "URI SAN is not a SPIFFE ID: \(why)"
        }
    }
}

public enum SPIFFEID {
    /// Applies the SVID rule to a certificate's URI SANs.
    public static func fromURISANs(_ uris: [String]) -> Result<String, SPIFFEIDProblem> {
        guard let only = uris.first else { return .failure(.noURISAN) }
        guard uris.count == 1 else { return .failure(.multipleURISANs(count: uris.count)) }
        if let why = validate(only) { return .failure(.malformed(why)) }
        return .success(only)
    }

    /// nil when `id` is a valid SPIFFE ID with a non-empty path, else why not (SPIFFE-ID.md):
    /// scheme `spiffe` (lowercase), trust domain of `[a-z0-9._-]`, path segments of
    /// `[A-Za-z0-9._-]`, not `.`/`..`, no empty segment or trailing slash, no query, fragment,
    /// port or user info.
    public static func validate(_ id: String) -> String? {
        let prefix = "spiffe://"
        guard id.hasPrefix(prefix) else { return "scheme is not spiffe://" }
        let rest = id.utf8.dropFirst(prefix.utf8.count)
        guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return "no path" }
        let domain = rest[rest.startIndex..<slash]
        guard !domain.isEmpty else { return "empty trust domain" }
        guard domain.count <= 255 else { return "trust domain too long" }
        for c in domain {
            let ok = (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2E || c == 0x2D || c == 0x5F
            if !ok { return "trust domain has a character outside [a-z0-9._-]" }
        }
        let path = rest[slash...]
        guard path.count > 1 else { return "empty path" }
        for segment in path.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            if segment.isEmpty { return "empty path segment" }
            if segment.elementsEqual(".".utf8) || segment.elementsEqual("..".utf8) { return "dot segment in path" }
            for c in segment {
                let ok = (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39)
                    || c == 0x2E || c == 0x2D || c == 0x5F
                if !ok { return "path has a character outside [A-Za-z0-9._-]" }
            }
        }
        return nil
    }
}

/// Reads fields out of an `X509*` (borrowed; never freed here).
enum X509Reader {
    static func info(_ cert: OpaquePointer) -> PeerCertificateInfo {
        let (uris, dns) = subjectAltNames(cert)
        return PeerCertificateInfo(
            subject: subject(cert), uriSANs: uris, dnsSANs: dns, pemEncoded: pem(cert),
            sha256Fingerprint: sha256Hex(cert), notAfter: notAfter(cert))
    }

    static func notAfter(_ cert: OpaquePointer) -> UInt64 {
        guard let time = X509_get0_notAfter(cert) else { return 0 }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return 0 }
        let seconds = timegm(&parts)
        return seconds > 0 ? UInt64(seconds) : 0
    }

    static func subject(_ cert: OpaquePointer) -> String {
        guard let name = X509_get_subject_name(cert) else { return "" }
        return withMemoryBIO { bio in
            _ = X509_NAME_print_ex(bio, name, 0, COpenSSLShim_XN_FLAG_RFC2253())
        }
    }

    static func pem(_ cert: OpaquePointer) -> String {
        withMemoryBIO { bio in _ = PEM_write_bio_X509(bio, cert) }
    }

    static func sha256Hex(_ cert: OpaquePointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = digest.withUnsafeMutableBufferPointer { X509_digest(cert, EVP_sha256(), $0.baseAddress, &length) }
        guard ok == 1 else { return "" }
        return hex(digest.prefix(Int(min(length, UInt32(digest.count)))))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func subjectAltNames(_ cert: OpaquePointer) -> (uris: [String], dns: [String]) {
        guard let raw = X509_get_ext_d2i(cert, NID_subject_alt_name, nil, nil) else { return ([], []) }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var uris: [String] = []
        var dns: [String] = []
        let count = COpenSSLShim_sk_GENERAL_NAME_num(names)
        guard count > 0 else { return ([], []) }
        for i in 0..<count {
            guard let name = COpenSSLShim_sk_GENERAL_NAME_value(names, i) else { continue }
            var type: Int32 = 0
            guard let value = GENERAL_NAME_get0_value(name, &type) else { continue }
            guard type == GEN_URI || type == GEN_DNS else { continue }
            let string = UnsafePointer(value.assumingMemoryBound(to: ASN1_STRING.self))   // ASN1_IA5STRING*
            let length = Int(ASN1_STRING_length(string))
            guard length >= 0, let data = ASN1_STRING_get0_data(string) else { continue }
            let text = String(decoding: UnsafeBufferPointer(start: data, count: length), as: UTF8.self)
            if type == GEN_URI { uris.append(text) } else { dns.append(text) }
        }
        return (uris, dns)
    }

    /// Runs `write` against a fresh memory BIO and returns what it wrote, as text.
    static func withMemoryBIO(_ write: (OpaquePointer) -> Void) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        write(bio)
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = COpenSSLShim_BIO_get_mem_data(bio, &data)
        guard length > 0, let data else { return "" }
        return data.withMemoryRebound(to: UInt8.self, capacity: length) {
            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
        }
    }
}
