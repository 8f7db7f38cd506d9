import COpenSSL

/// A listener's TLS material and settings: one `SSL_CTX` (plus one per SNI certificate).
///
/// Immutable after `init`, shared by every worker loop. OpenSSL documents an `SSL_CTX` as safe to
/// use from many threads for `SSL_new` once it is no longer modified; its internal state that does
/// change (reference counts, the session cache, ticket-key lookups) is locked inside OpenSSL. This
/// class never calls a setter after `init`, and the callbacks only read the immutable
/// `ServerCallbacks` box — hence `@unchecked Sendable`.
///
/// Rotation: build a new context from the files; if `init` throws, keep the old one. Give the new
/// one to new connections only. Each `TLSConnection` keeps its context alive, so established
/// connections are untouched when the swap drops the last other reference.
public final class TLSServerContext: @unchecked Sendable {
    /// The default context (also the one `SSL_new` uses, and the session/ticket context).
    let ctx: OpaquePointer
    /// One fully configured context per SNI certificate, in the callback's table.
    private let sniContexts: [OpaquePointer]
    private let callbacks: ServerCallbacks
    public let config: TLSServerConfig
    /// Expiry (unix seconds) of the default leaf certificate, for the expiry gauge.
    public let certificateNotAfter: UInt64
    /// Expiry of each SNI certificate, by configured server name.
    public let sniCertificateNotAfter: [String: UInt64]
    /// Our own default leaf certificate; its single URI SAN is XFCC's `By`
    /// (`leafCertificate?.spiffeID ?? leafCertificate?.uriSANs.first`).
    public let leafCertificate: PeerCertificateInfo?

    public init(_ config: TLSServerConfig) throws(TLSConfigError) {
        if config.clientCert != .none && (config.clientCAPath ?? "").isEmpty {
            throw TLSConfigError(.caBundle, "client_cert: \(config.clientCert.rawValue) needs a client CA bundle (client_ca)")
        }
        let alpn = try ContextSetup.alpnWire(config.alpn)

        var made: [OpaquePointer] = []
        do throws(TLSConfigError) {
            let main = try Self.makeConfigured(config, chain: config.certChainPath, key: config.keyPath)
            made.append(main)
            var table: [(name: String, ctx: OpaquePointer)] = []
            var expiries: [String: UInt64] = [:]
            for sni in config.sniCertificates {
                let child = try Self.makeConfigured(config, chain: sni.certChainPath, key: sni.keyPath)
                made.append(child)
                let name = sni.serverName.lowercased()
                table.append((name, child))
                expiries[name] = Self.leafNotAfter(child)
            }
            self.ctx = main
            self.sniContexts = Array(made.dropFirst())
            self.callbacks = ServerCallbacks(alpnWire: alpn, sni: table)
            self.config = config
            self.certificateNotAfter = Self.leafNotAfter(main)
            self.leafCertificate = SSL_CTX_get0_certificate(main).map { X509Reader.info($0) }
            self.sniCertificateNotAfter = expiries
        } catch {
            for c in made { SSL_CTX_free(c) }
            throw error
        }
        let arg = Unmanaged.passUnretained(callbacks).toOpaque()
        for c in [ctx] + sniContexts {
            if !alpn.isEmpty { SSL_CTX_set_alpn_select_cb(c, alpnSelectThunk, arg) }
        }
        if !sniContexts.isEmpty {
            COpenSSLShim_SSL_CTX_set_tlsext_servername_callback(ctx, serverNameThunk)
            COpenSSLShim_SSL_CTX_set_tlsext_servername_arg(ctx, arg)
        }
    }

    deinit {
        SSL_CTX_free(ctx)
        for c in sniContexts { SSL_CTX_free(c) }
    }

    /// One context with every listener setting and one certificate. An SNI switch
    /// (`SSL_set_SSL_CTX`) makes OpenSSL read ALPN, the CA store and the certificate from the new
    /// context, so each context carries all of them.
    private static func makeConfigured(_ config: TLSServerConfig, chain: String, key: String) throws(TLSConfigError) -> OpaquePointer {
        let c = try ContextSetup.newContext(server: true)
        do throws(TLSConfigError) {
            try ContextSetup.applyCommon(c, minVersion: config.minVersion, maxVersion: nil, ciphers: ContextSetup.tls12Ciphers)
            _ = COpenSSLShim_SSL_CTX_set_options(c, COpenSSLShim_SSL_OP_CIPHER_SERVER_PREFERENCE())
            try ContextSetup.loadCertificate(c, chain: chain, key: key)
            // Session resumption: stateless tickets (OpenSSL's default keys, per context, so they
            // are shared by all workers and dropped on rotation) plus the server-side cache.
            _ = COpenSSLShim_SSL_CTX_set_session_cache_mode(c, Int(SSL_SESS_CACHE_SERVER))
            let sid = ContextSetup.sessionIDContext
            _ = sid.withUnsafeBufferPointer { SSL_CTX_set_session_id_context(c, $0.baseAddress, UInt32($0.count)) }
            switch config.clientCert {
            case .none:
                SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nil)
            case .optional, .require:
                let path = config.clientCAPath ?? ""
                try ContextSetup.loadCABundle(c, path: path)
                // The CA names sent in CertificateRequest.
                if let names = SSL_load_client_CA_file(path) {
                    SSL_CTX_set_client_CA_list(c, names)
                }
                var mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE
                if config.clientCert == .require { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
                SSL_CTX_set_verify(c, mode, nil)
            }
            return c
        } catch {
            SSL_CTX_free(c)
            throw error
        }
    }

    static func leafNotAfter(_ ctx: OpaquePointer) -> UInt64 {
        guard let leaf = SSL_CTX_get0_certificate(ctx) else { return 0 }
        return X509Reader.notAfter(leaf)
    }
}

/// The immutable data the C callbacks read, passed to OpenSSL as an unretained pointer; the
/// context (and through it every connection) keeps it alive.
final class ServerCallbacks: @unchecked Sendable {
    let alpnWire: [UInt8]
    let sni: [(name: String, ctx: OpaquePointer)]
    init(alpnWire: [UInt8], sni: [(name: String, ctx: OpaquePointer)]) {
        self.alpnWire = alpnWire
        self.sni = sni
    }

    /// Server preference: the first of our protocols the client also offers.
    /// Returns the offset and length of the match inside `offered` (the client's wire list).
    func selectALPN(offered: UnsafeBufferPointer<UInt8>) -> (offset: Int, length: Int)? {
        var ours = 0
        while ours < alpnWire.count {
            let ourLength = Int(alpnWire[ours])
            let ourStart = ours + 1
            guard ourStart + ourLength <= alpnWire.count else { return nil }
            var theirs = 0
            while theirs < offered.count {
                let length = Int(offered[theirs])
                let start = theirs + 1
                guard length > 0, start + length <= offered.count else { break }   // malformed: stop
                if length == ourLength {
                    var equal = true
                    for i in 0..<length where offered[start + i] != alpnWire[ourStart + i] { equal = false; break }
                    if equal { return (start, length) }
                }
                theirs = start + length
            }
            ours = ourStart + ourLength
        }
        return nil
    }

    /// Exact match first, then `*.suffix` covering exactly one more label.
    func context(forServerName name: String) -> OpaquePointer? {
        let name = name.lowercased()
        for entry in sni where entry.name == name { return entry.ctx }
        guard let dot = name.firstIndex(of: ".") else { return nil }
        let wildcard = "*" + name[dot...]
        for entry in sni where entry.name == wildcard { return entry.ctx }
        return nil
    }
}

/// `SSL_CTX_set_alpn_select_cb` thunk: recovers `ServerCallbacks` and answers with a pointer into
/// the client's own list (valid for the callback's duration, as OpenSSL requires).
private func alpnSelectThunk(
    _ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?, _ outLength: UnsafeMutablePointer<UInt8>?,
    _ offered: UnsafePointer<UInt8>?, _ offeredLength: UInt32, _ arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let arg, let out, let outLength, let offered else { return SSL_TLSEXT_ERR_NOACK }
    let callbacks = Unmanaged<ServerCallbacks>.fromOpaque(arg).takeUnretainedValue()
    let list = UnsafeBufferPointer(start: offered, count: Int(offeredLength))
    guard let (offset, length) = callbacks.selectALPN(offered: list), length <= 255 else {
        // No protocol in common: continue without ALPN (the connection is then HTTP/1.1).
        return SSL_TLSEXT_ERR_NOACK
    }
    out.pointee = offered + offset
    outLength.pointee = UInt8(length)
    return SSL_TLSEXT_ERR_OK
}

/// Servername thunk: switches the connection to the SNI certificate's context when one matches;
/// any other name (or none) keeps the default certificate.
private func serverNameThunk(_ ssl: OpaquePointer?, _ alert: UnsafeMutablePointer<Int32>?, _ arg: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let arg else { return SSL_TLSEXT_ERR_OK }
    guard let raw = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return SSL_TLSEXT_ERR_OK }
    let callbacks = Unmanaged<ServerCallbacks>.fromOpaque(arg).takeUnretainedValue()
    if let child = callbacks.context(forServerName: String(cString: raw)) {
        _ = SSL_set_SSL_CTX(ssl, child)
    }
    return SSL_TLSEXT_ERR_OK
}
