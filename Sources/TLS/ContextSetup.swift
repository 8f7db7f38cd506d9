import COpenSSL

/// Settings shared by server and client contexts, and the file loading both do.
enum ContextSetup {
    /// TLS 1.2: forward-secret key exchange and AEAD ciphers only (ECDHE with AES-GCM or
    /// ChaCha20-Poly1305). TLS 1.3 suites are OpenSSL's defaults, all of which are AEAD.
    static let tls12Ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!DSS:!PSK:!SRP"

    /// Context id for session resumption; it must be set once client certificates are verified,
    /// and equal on every context an SNI switch can pick.
    static let sessionIDContext: [UInt8] = Array("outrider".utf8)

    static func protocolVersion(_ v: TLSVersion) -> Int32 {
        switch v {
        case .tls12: return TLS1_2_VERSION
        case .tls13: return TLS1_3_VERSION
        }
    }

    static func newContext(server: Bool) throws(TLSConfigError) -> OpaquePointer {
        ERR_clear_error()
        guard let method = server ? TLS_server_method() : TLS_client_method(),
              let ctx = SSL_CTX_new(method)
        else { throw TLSConfigError(.settings, OpenSSLErrors.describe("SSL_CTX_new failed")) }
        return ctx
    }

    static func applyCommon(
        _ ctx: OpaquePointer, minVersion: TLSVersion, maxVersion: TLSVersion?, ciphers: String
    ) throws(TLSConfigError) {
        guard COpenSSLShim_SSL_CTX_set_min_proto_version(ctx, protocolVersion(minVersion)) == 1 else {
            throw TLSConfigError(.settings, OpenSSLErrors.describe("cannot set the minimum TLS version"))
        }
        if let maxVersion {
            guard COpenSSLShim_SSL_CTX_set_max_proto_version(ctx, protocolVersion(maxVersion)) == 1 else {
                throw TLSConfigError(.settings, OpenSSLErrors.describe("cannot set the maximum TLS version"))
            }
        }
        guard SSL_CTX_set_cipher_list(ctx, ciphers) == 1 else {
            throw TLSConfigError(.settings, OpenSSLErrors.describe("no usable TLS 1.2 cipher in \"\(ciphers)\""))
        }
        _ = COpenSSLShim_SSL_CTX_set_options(
            ctx, COpenSSLShim_SSL_OP_NO_COMPRESSION() | COpenSSLShim_SSL_OP_NO_RENEGOTIATION())
        // Idle connections give their 16 KiB + 16 KiB record buffers back.
        _ = COpenSSLShim_SSL_CTX_set_mode(ctx, COpenSSLShim_SSL_MODE_RELEASE_BUFFERS())
    }

    /// Loads a PEM chain and key and checks that the key belongs to the leaf.
    static func loadCertificate(_ ctx: OpaquePointer, chain: String, key: String) throws(TLSConfigError) {
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(ctx, chain) == 1 else {
            throw TLSConfigError(.certificate, "cannot load certificate chain \(chain): \(OpenSSLErrors.describe("no PEM certificate"))")
        }
        // Loading a key that does not match the leaf already fails here (X509_check_private_key
        // inside); keep the message the same as the explicit check below.
        guard SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 else {
            let errors = OpenSSLErrors.drain()
            if errors.contains(where: { COpenSSLShim_ERR_GET_REASON($0.code) == X509_R_KEY_VALUES_MISMATCH
                || COpenSSLShim_ERR_GET_REASON($0.code) == X509_R_KEY_TYPE_MISMATCH }) {
                throw mismatch(chain: chain, key: key)
            }
            let detail = errors.isEmpty ? "no PEM private key" : errors.map(\.text).joined(separator: "; ")
            throw TLSConfigError(.privateKey, "cannot load private key \(key): \(detail)")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            ERR_clear_error()
            throw mismatch(chain: chain, key: key)
        }
    }

    static func mismatch(chain: String, key: String) -> TLSConfigError {
        TLSConfigError(.keyMismatch, "\(key) does not match \(chain): the private key is not the certificate's key")
    }

    /// Trust anchors for verifying the peer.
    static func loadCABundle(_ ctx: OpaquePointer, path: String) throws(TLSConfigError) {
        ERR_clear_error()
        guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
            throw TLSConfigError(.caBundle, "cannot load CA bundle \(path): \(OpenSSLErrors.describe("no PEM certificate"))")
        }
    }

    /// ALPN protocols in wire format (length-prefixed), skipping names that do not fit.
    static func alpnWire(_ protocols: [String]) throws(TLSConfigError) -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard !bytes.isEmpty, bytes.count <= 255 else {
                throw TLSConfigError(.settings, "ALPN protocol name must be 1…255 bytes: \"\(name)\"")
            }
            wire.append(UInt8(bytes.count))
            wire.append(contentsOf: bytes)
        }
        return wire
    }
}
