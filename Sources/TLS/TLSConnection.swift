import COpenSSL
import OutriderCore

/// What `readPlaintext` did.
public enum TLSReadResult: Sendable, Hashable {
    /// The handshake finished during this call. Check `negotiatedALPN`, `peer`…, then call again.
    case handshakeCompleted
    /// Plaintext was appended. Call again: more may follow, or `.wantMoreInput`.
    case progress
    /// Nothing more can be done until more ciphertext is received.
    case wantMoreInput
    /// The peer sent close_notify (plaintext before it was appended). Later calls return this again.
    case closeNotify
}

/// TLS for one TCP connection over two memory BIOs: it never touches the socket.
///
/// Loop-confined (not `Sendable`). Driving it from a non-blocking socket:
/// ```
/// on readable:  n = read(fd, scratch);  tls.receive(scratch[..<n])
///               loop { switch try tls.readPlaintext(into: &input) {
///                      case .handshakeCompleted: pick HTTP/1.1 or h2 from negotiatedALPN
///                      case .progress: continue            // hand `input` to the codec
///                      case .wantMoreInput: break loop
///                      case .closeNotify: tls.shutdown(); close after flushing } }
///               tls.takeCiphertext(into: &output)   // handshake messages, tickets, alerts
/// to send:      try tls.writePlaintext(bytes); tls.takeCiphertext(into: &output); flush output
/// on error:     take the ciphertext once more (it may hold an alert), send it, close.
/// ```
/// Always drain `takeCiphertext` after `receive`/`readPlaintext`/`writePlaintext`/`shutdown`:
/// the handshake writes from inside `readPlaintext`. Write plaintext in chunks (say ≤ 64 KiB)
/// and drain between them: the outgoing memory BIO keeps its peak size.
public final class TLSConnection {
    private let ssl: OpaquePointer
    /// Ciphertext from the socket (owned by `ssl`).
    private let rbio: OpaquePointer
    /// Ciphertext for the socket (owned by `ssl`).
    private let wbio: OpaquePointer
    /// Keeps the `SSL_CTX`s and the callback box alive for as long as this `SSL` may call them.
    private let contextOwner: AnyObject
    public let isServer: Bool
    private var handshakeDone = false
    private var failure: TLSError?
    private var peerClosed = false
    private var shutdownSent = false
    private var peerCache: PeerCertificateInfo??

    /// A server-side connection (accepted socket).
    public init(context: TLSServerContext) throws(TLSError) {
        (ssl, rbio, wbio) = try Self.makeSSL(context.ctx)
        contextOwner = context
        isServer = true
        SSL_set_accept_state(ssl)
    }

    /// A client-side connection. `serverName` is sent as SNI (unless it is an IP address) and,
    /// when the context verifies peers, checked against the server certificate.
    public init(client context: TLSClientContext, serverName: String?, session: TLSSession? = nil) throws(TLSError) {
        (ssl, rbio, wbio) = try Self.makeSSL(context.ctx)
        contextOwner = context
        isServer = false
        SSL_set_connect_state(ssl)
        if let serverName, !serverName.isEmpty {
            let isIP = serverName.contains(":") || serverName.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }
            if !isIP { _ = COpenSSLShim_SSL_set_tlsext_host_name(ssl, serverName) }
            if context.config.verifyPeer {
                let ok = isIP ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName)
                              : SSL_set1_host(ssl, serverName)
                guard ok == 1 else {
                    throw TLSError(reason: .other, message: "cannot verify against server name \(serverName)")
                }
            }
        }
        if let session { _ = SSL_set_session(ssl, session.session) }
    }

    private static func makeSSL(_ ctx: OpaquePointer) throws(TLSError) -> (OpaquePointer, OpaquePointer, OpaquePointer) {
        ERR_clear_error()
        guard let ssl = SSL_new(ctx) else {
            throw TLSError(reason: .other, message: OpenSSLErrors.describe("SSL_new failed"))
        }
        guard let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError(reason: .other, message: OpenSSLErrors.describe("BIO_new failed"))
        }
        // An empty read BIO means "retry later", not end of file.
        COpenSSLShim_BIO_set_mem_eof_return(r, -1)
        COpenSSLShim_BIO_set_mem_eof_return(w, -1)
        SSL_set_bio(ssl, r, w)   // ssl owns both now
        return (ssl, r, w)
    }

    deinit { SSL_free(ssl) }

    // MARK: - Bytes in

    /// Feeds ciphertext read from the socket. Copies it; the caller may reuse its buffer.
    public func receive(_ ciphertext: UnsafeRawBufferPointer) {
        guard var base = ciphertext.baseAddress else { return }
        var left = ciphertext.count
        while left > 0 {
            let chunk = min(left, 1 << 30)
            let written = BIO_write(rbio, base, Int32(chunk))
            guard written > 0 else { return }   // allocation failure; the handshake/read will fail
            base += Int(written)
            left -= Int(written)
        }
    }

    public func receive(_ ciphertext: [UInt8]) {
        ciphertext.withUnsafeBytes { receive($0) }
    }

    /// Advances the handshake, then decrypts what has been received, appending plaintext to
    /// `into` (at most about `maxBytes` per call). Throws a classified `TLSError` on a fatal
    /// failure (bad handshake, bad record, certificate rejected); the error is sticky.
    public func readPlaintext(into plaintext: inout [UInt8], maxBytes: Int = Int.max) throws(TLSError) -> TLSReadResult {
        if let failure { throw failure }
        if peerClosed { return .closeNotify }
        ERR_clear_error()
        if !handshakeDone {
            let rc = SSL_do_handshake(ssl)
            if rc == 1 {
                handshakeDone = true
                return .handshakeCompleted
            }
            let code = SSL_get_error(ssl, rc)
            if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { return .wantMoreInput }
            throw fail(code)
        }
        var total = 0
        let scratchSize = 16 * 1024
        return try withUnsafeTemporaryAllocation(byteCount: scratchSize, alignment: 16) { (scratch) throws(TLSError) -> TLSReadResult in
            guard let base = scratch.baseAddress else { return .wantMoreInput }
            while true {
                let room = maxBytes - total
                if room <= 0 { return .progress }
                let n = SSL_read(ssl, base, Int32(min(room, scratchSize)))
                if n > 0 {
                    plaintext.append(contentsOf: UnsafeRawBufferPointer(start: base, count: Int(n)))
                    total += Int(n)
                    continue
                }
                let code = SSL_get_error(ssl, n)
                switch code {
                case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                    return total > 0 ? .progress : .wantMoreInput
                case SSL_ERROR_ZERO_RETURN:
                    peerClosed = true
                    return .closeNotify
                default:
                    throw fail(code)
                }
            }
        }
    }

    // MARK: - Bytes out

    /// Encrypts `bytes` into the outgoing buffer (drain it with `takeCiphertext`).
    /// Only after the handshake has completed.
    public func writePlaintext(_ bytes: UnsafeRawBufferPointer) throws(TLSError) {
        if let failure { throw failure }
        guard handshakeDone else {
            throw TLSError(reason: .other, message: "writePlaintext before the handshake completed")
        }
        guard shutdownSent == false else {
            throw TLSError(reason: .other, message: "writePlaintext after shutdown")
        }
        guard var base = bytes.baseAddress else { return }
        var left = bytes.count
        ERR_clear_error()
        while left > 0 {
            let chunk = Int32(min(left, 1 << 20))
            let n = SSL_write(ssl, base, chunk)
            if n <= 0 { throw fail(SSL_get_error(ssl, n)) }
            base += Int(n)
            left -= Int(n)
        }
    }

    public func writePlaintext(_ bytes: [UInt8]) throws(TLSError) {
        var caught: TLSError? = nil
        bytes.withUnsafeBytes { p in
            do throws(TLSError) { try writePlaintext(p) } catch { caught = error }
        }
        if let caught { throw caught }
    }

    /// Bytes waiting in `takeCiphertext`.
    public var pendingCiphertext: Int { COpenSSLShim_BIO_pending(wbio) }

    /// Moves all pending ciphertext to the end of `output`; returns how many bytes.
    @discardableResult
    public func takeCiphertext(into output: inout ByteBuffer) -> Int {
        drain { output.append($0) }
    }

    @discardableResult
    public func takeCiphertext(into output: inout [UInt8]) -> Int {
        drain { output.append(contentsOf: $0) }
    }

    private func drain(_ sink: (UnsafeRawBufferPointer) -> Void) -> Int {
        var total = 0
        let size = 16 * 1024
        withUnsafeTemporaryAllocation(byteCount: size, alignment: 16) { scratch in
            guard let base = scratch.baseAddress else { return }
            while COpenSSLShim_BIO_pending(wbio) > 0 {
                let n = BIO_read(wbio, base, Int32(size))
                if n <= 0 { break }
                sink(UnsafeRawBufferPointer(start: base, count: Int(n)))
                total += Int(n)
            }
        }
        return total
    }

    /// Queues close_notify (drain `takeCiphertext` afterwards, then close the socket or wait for
    /// the peer's). Does nothing before the handshake completed or after a failure: just close.
    public func shutdown() {
        guard handshakeDone, failure == nil, !shutdownSent else { return }
        shutdownSent = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    // MARK: - What was negotiated

    public var isHandshakeComplete: Bool { handshakeDone }

    /// `h2`, `http/1.1`, or nil when the client sent no ALPN (or none in common).
    public var negotiatedALPN: String? {
        var data: UnsafePointer<UInt8>? = nil
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// The SNI name the client sent (server side) or we sent (client side).
    public var serverName: String? {
        guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return nil }
        return String(cString: name)
    }

    /// `TLSv1.2`, `TLSv1.3`.
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// e.g. `TLS_AES_128_GCM_SHA256`, `ECDHE-ECDSA-AES128-GCM-SHA256`.
    public var cipherSuite: String? {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return nil }
        return String(cString: name)
    }

    /// The handshake resumed a session (ticket or cache) instead of a full handshake.
    public var sessionReused: Bool { SSL_session_reused(ssl) == 1 }

    /// The peer's certificate once the handshake completed, if it sent one and it verified
    /// against our trust anchors; nil otherwise (including `client_cert: none`).
    public var peer: PeerCertificateInfo? {
        guard handshakeDone else { return nil }
        if let cached = peerCache { return cached }
        var info: PeerCertificateInfo? = nil
        if SSL_get_verify_result(ssl) == Int(X509_V_OK), let cert = SSL_get0_peer_certificate(ssl) {
            info = X509Reader.info(cert)
        }
        peerCache = .some(info)
        return info
    }

    /// Client side, after the handshake (and, in TLS 1.3, after a `readPlaintext` that processed
    /// the server's NewSessionTicket): a session to offer on the next connection.
    public func resumableSession() -> TLSSession? {
        guard handshakeDone, let session = SSL_get1_session(ssl) else { return nil }
        guard SSL_SESSION_is_resumable(session) == 1 else {
            SSL_SESSION_free(session)
            return nil
        }
        return TLSSession(session)
    }

    // MARK: - Failure

    private func fail(_ code: Int32) -> TLSError {
        let errors = OpenSSLErrors.drain()
        let error: TLSError
        if code == SSL_ERROR_SSL || !errors.isEmpty {
            let verifyFailed = errors.contains { COpenSSLShim_ERR_GET_REASON($0.code) == SSL_R_CERTIFICATE_VERIFY_FAILED }
            error = FailureClassifier.classify(verifyResult: verifyFailed ? SSL_get_verify_result(ssl) : Int(X509_V_OK),
                                               errors: errors)
        } else {
            error = TLSError(reason: .other, message: "TLS failure (SSL_get_error \(code))")
        }
        failure = error
        return error
    }
}

extension TLSConnection {
    /// What `readAvailable` found besides plaintext.
    public struct ReadSummary: Sendable {
        /// The handshake finished during this call.
        public var handshakeCompleted = false
        /// The peer sent close_notify.
        public var closeNotify = false
    }

    /// Drives the handshake and appends every plaintext byte available to `plaintext`, until
    /// OpenSSL needs more input or the peer closed. The one read loop every connection type uses.
    public func readAvailable(into plaintext: inout [UInt8]) throws(TLSError) -> ReadSummary {
        var summary = ReadSummary()
        while true {
            switch try readPlaintext(into: &plaintext) {
            case .handshakeCompleted: summary.handshakeCompleted = true
            case .progress: continue
            case .wantMoreInput: return summary
            case .closeNotify:
                summary.closeNotify = true
                return summary
            }
        }
    }
}
