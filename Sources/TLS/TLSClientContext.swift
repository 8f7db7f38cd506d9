import COpenSSL

/// The upstream side: Outrider dialing a workload over TLS or mTLS (and the test suite's client).
/// Immutable after `init`; shared like `TLSServerContext` (same `@unchecked Sendable` reasoning:
/// an `SSL_CTX` is only read once set up).
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let config: TLSClientConfig

    public init(_ config: TLSClientConfig) throws(TLSConfigError) {
        let c = try ContextSetup.newContext(server: false)
        do throws(TLSConfigError) {
            try ContextSetup.applyCommon(c, minVersion: config.minVersion, maxVersion: config.maxVersion,
                                         ciphers: config.tls12Ciphers ?? ContextSetup.tls12Ciphers)
            switch (config.certChainPath, config.keyPath) {
            case (let chain?, let key?):
                try ContextSetup.loadCertificate(c, chain: chain, key: key)
            case (nil, nil):
                break
            default:
                throw TLSConfigError(.settings, "a client certificate needs both a chain and a key")
            }
            if let ca = config.caPath {
                try ContextSetup.loadCABundle(c, path: ca)
            } else if SSL_CTX_set_default_verify_paths(c) != 1 {
                throw TLSConfigError(.caBundle, OpenSSLErrors.describe("cannot load the system CA paths"))
            }
            SSL_CTX_set_verify(c, config.verifyPeer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
            let alpn = try ContextSetup.alpnWire(config.alpn)
            if !alpn.isEmpty {
                // Returns 0 on success (unlike most of the API).
                let rc = alpn.withUnsafeBufferPointer { SSL_CTX_set_alpn_protos(c, $0.baseAddress, UInt32($0.count)) }
                guard rc == 0 else { throw TLSConfigError(.settings, "cannot set ALPN protocols") }
            }
        } catch {
            SSL_CTX_free(c)
            throw error
        }
        self.ctx = c
        self.config = config
    }

    deinit { SSL_CTX_free(ctx) }
}

/// A resumable session taken from a finished client connection (`TLSConnection.resumableSession()`),
/// offered again with `TLSConnection(client:serverName:session:)`. Loop-confined.
public final class TLSSession {
    let session: OpaquePointer
    init(_ session: OpaquePointer) { self.session = session }
    deinit { SSL_SESSION_free(session) }
}
