/// What a TLS listener or upstream is configured with. Plain values: parsing and validation of
/// `outrider.yaml` live in `Config`; this module only turns files into OpenSSL contexts.

/// Lowest (or highest) protocol version a context accepts.
public enum TLSVersion: String, Sendable, Hashable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"
}

/// Whether a server asks for, and insists on, a client certificate.
public enum ClientCertPolicy: String, Sendable, Hashable {
    /// A client without a certificate fails the handshake (`no_client_cert`).
    case require
    /// A certificate is requested; a client may send none. A certificate that is sent is
    /// verified against the CA bundle and a bad one fails the handshake.
    case optional
    /// No certificate is requested.
    case none
}

/// One extra certificate chosen by SNI (exact name, or `*.example.com` for one label).
public struct SNICertificate: Sendable, Hashable {
    public var serverName: String
    public var certChainPath: String
    public var keyPath: String
    public init(serverName: String, certChainPath: String, keyPath: String) {
        self.serverName = serverName
        self.certChainPath = certChainPath
        self.keyPath = keyPath
    }
}

public struct TLSServerConfig: Sendable, Hashable {
    /// PEM: the leaf first, then intermediates.
    public var certChainPath: String
    /// PEM private key matching the leaf.
    public var keyPath: String
    /// PEM CA bundle client certificates are verified against; required unless `clientCert == .none`.
    public var clientCAPath: String?
    public var clientCert: ClientCertPolicy
    public var minVersion: TLSVersion
    /// Application protocols in server preference order.
    public var alpn: [String]
    /// Certificates chosen by the client's SNI; the default certificate serves every other name.
    public var sniCertificates: [SNICertificate]

    public init(
        certChainPath: String, keyPath: String, clientCAPath: String? = nil,
        clientCert: ClientCertPolicy = .none, minVersion: TLSVersion = .tls12,
        alpn: [String] = ["h2", "http/1.1"], sniCertificates: [SNICertificate] = []
    ) {
        self.certChainPath = certChainPath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
        self.clientCert = clientCert
        self.minVersion = minVersion
        self.alpn = alpn
        self.sniCertificates = sniCertificates
    }
}

/// The upstream (client) side: Outrider dialing the workload, or a test client.
public struct TLSClientConfig: Sendable, Hashable {
    /// PEM CA bundle the server certificate is verified against; nil uses the system's default paths.
    public var caPath: String?
    /// Verify the server's chain and, when `serverName` is set on the connection, its name.
    public var verifyPeer: Bool
    /// Client certificate for mTLS to the upstream (both or neither).
    public var certChainPath: String?
    public var keyPath: String?
    public var alpn: [String]
    public var minVersion: TLSVersion
    public var maxVersion: TLSVersion?
    /// OpenSSL cipher list for TLS 1.2 (nil: the same sane default as the server).
    public var tls12Ciphers: String?

    public init(
        caPath: String? = nil, verifyPeer: Bool = true, certChainPath: String? = nil, keyPath: String? = nil,
        alpn: [String] = [], minVersion: TLSVersion = .tls12, maxVersion: TLSVersion? = nil,
        tls12Ciphers: String? = nil
    ) {
        self.caPath = caPath
        self.verifyPeer = verifyPeer
        self.certChainPath = certChainPath
        self.keyPath = keyPath
        self.alpn = alpn
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.tls12Ciphers = tls12Ciphers
    }
}

/// A context could not be built from its files. `message` names the file and the problem, e.g.
/// "/etc/outrider/tls/tls.key does not match /etc/outrider/tls/tls.crt"; on rotation the caller
/// logs it and keeps serving with the previous context.
public struct TLSConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case certificate, privateKey, keyMismatch, caBundle, settings
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}
