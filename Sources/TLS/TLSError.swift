import COpenSSL

/// Why a handshake (or a later record) failed, in the words the handshake-failure metric uses.
public enum HandshakeFailureReason: String, Sendable, Hashable, CaseIterable {
    /// The peer's chain does not lead to a CA we trust (or the peer said that of ours).
    case unknownCA = "unknown_ca"
    case expired
    /// The policy requires a client certificate and none was sent.
    case noClientCert = "no_client_cert"
    /// Any other certificate problem: bad signature, not yet valid, wrong purpose, name mismatch.
    case badCertificate = "bad_certificate"
    /// No protocol version in common (e.g. a TLS 1.2 client against a 1.3-only listener).
    case protocolVersion = "protocol_version"
    case noSharedCipher = "no_shared_cipher"
    /// Malformed records, plaintext HTTP on a TLS port, API misuse, anything unclassified.
    case other
}

/// A fatal TLS failure on one connection. After it is thrown the connection is dead: drain
/// `takeCiphertext` once (it may hold an alert for the peer), send it, and close the socket.
public struct TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: HandshakeFailureReason
    public var message: String
    public init(reason: HandshakeFailureReason, message: String) {
        self.reason = reason
        self.message = message
    }
    public var description: String { "\(reason.rawValue): \(message)" }
}

/// Reads and empties this thread's OpenSSL error queue.
/// The queue is per thread and shared by every connection on a loop, so each operation clears it
/// first (`ERR_clear_error`) and drains it after a failure.
enum OpenSSLErrors {
    struct Entry { var code: UInt; var text: String }

    static func drain() -> [Entry] {
        var entries: [Entry] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            entries.append(Entry(code: code, text: string(for: code)))
            if entries.count > 32 { ERR_clear_error(); break }
        }
        return entries
    }

    static func string(for code: UInt) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let text: String = buffer.withUnsafeMutableBufferPointer { p in
            guard let base = p.baseAddress else { return "" }
            ERR_error_string_n(code, base, p.count)
            return String(cString: base)
        }
        return text
    }

    /// All queued errors as one line (for config errors), or `fallback` when the queue was empty.
    static func describe(_ fallback: String) -> String {
        let entries = drain()
        if entries.isEmpty { return fallback }
        return entries.map(\.text).joined(separator: "; ")
    }
}

/// Maps what OpenSSL reports about a failure onto `HandshakeFailureReason`.
/// The verify result wins when set (it is the precise X509_V_ERR_… of our own check of the
/// peer's chain); otherwise the library reason codes, including alerts received from the peer.
enum FailureClassifier {
    static func classify(verifyResult: Int, errors: [OpenSSLErrors.Entry]) -> TLSError {
        if verifyResult != Int(X509_V_OK) {
            let text = String(cString: X509_verify_cert_error_string(verifyResult))
            return TLSError(reason: reason(forVerifyResult: Int32(truncatingIfNeeded: verifyResult)),
                            message: "certificate verification failed: \(text)")
        }
        for entry in errors {
            if let reason = reason(forLibraryReason: COpenSSLShim_ERR_GET_REASON(entry.code)) {
                return TLSError(reason: reason, message: entry.text)
            }
        }
        let message = errors.isEmpty ? "TLS failure" : errors.map(\.text).joined(separator: "; ")
        return TLSError(reason: .other, message: message)
    }

    static func reason(forVerifyResult code: Int32) -> HandshakeFailureReason {
        switch code {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return .expired
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
             X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
             X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED:
            return .unknownCA
        default:
            return .badCertificate
        }
    }

    static func reason(forLibraryReason code: Int32) -> HandshakeFailureReason? {
        switch code {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            return .noClientCert
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
            return .unknownCA
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
            return .expired
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE, SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE,
             SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED, SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
            return .badCertificate
        case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, SSL_R_NO_PROTOCOLS_AVAILABLE,
             SSL_R_WRONG_SSL_VERSION, SSL_R_UNKNOWN_PROTOCOL:
            return .protocolVersion
        case SSL_R_NO_SHARED_CIPHER, SSL_R_NO_CIPHERS_AVAILABLE:
            return .noSharedCipher
        default:
            return nil
        }
    }
}
