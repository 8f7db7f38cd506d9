import Testing
import OutriderCore
@testable import TLS

@Suite struct TLSConnectionTests {
    let f: Fixtures
    init() throws { f = try Fixtures.get() }

    func serverConfig(
        clientCert: ClientCertPolicy = .none, minVersion: TLSVersion = .tls12, alpn: [String] = ["h2", "http/1.1"],
        sni: [SNICertificate] = []
    ) -> TLSServerConfig {
        TLSServerConfig(
            certChainPath: f.path("server.crt"), keyPath: f.path("server.key"),
            clientCAPath: clientCert == .none ? nil : f.path("ca.crt"), clientCert: clientCert,
            minVersion: minVersion, alpn: alpn, sniCertificates: sni)
    }

    func clientContext(
        cert: String? = nil, alpn: [String] = ["h2", "http/1.1"], maxVersion: TLSVersion? = nil, ciphers: String? = nil
    ) throws -> TLSClientContext {
        try TLSClientContext(TLSClientConfig(
            caPath: f.path("ca.crt"), certChainPath: cert.map { f.path("\($0).crt") }, keyPath: cert.map { f.path("\($0).key") },
            alpn: alpn, maxVersion: maxVersion, tls12Ciphers: ciphers))
    }

    // MARK: handshake, ALPN, versions

    @Test func handshakeNegotiatesH2AndCarriesDataBothWays() throws {
        let server = try TLSServerContext(serverConfig())
        let e = try connect(server: server, client: try clientContext())
        #expect(e.client.error == nil && e.server.error == nil)
        #expect(e.server.tls.isHandshakeComplete && e.client.tls.isHandshakeComplete)
        #expect(e.server.tls.negotiatedALPN == "h2")
        #expect(e.client.tls.negotiatedALPN == "h2")
        #expect(e.server.tls.serverName == "localhost")
        #expect(e.server.tls.protocolVersion == "TLSv1.3")
        #expect(e.server.tls.sessionReused == false)
        #expect(e.server.tls.peer == nil)
        #expect(e.client.tls.peer?.dnsSANs == ["localhost"])

        try e.client.tls.writePlaintext(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        pump(e.client, e.server)
        #expect(String(decoding: e.server.plaintext, as: UTF8.self) == "GET / HTTP/1.1\r\n\r\n")
        let big = [UInt8](repeating: 0x61, count: 100_000)
        try e.server.tls.writePlaintext(big)
        pump(e.client, e.server)
        #expect(e.client.plaintext == big)

        e.client.tls.shutdown()
        pump(e.client, e.server)
        #expect(e.server.sawCloseNotify)
        e.server.tls.shutdown()
        pump(e.client, e.server)
        #expect(e.client.sawCloseNotify)
    }

    @Test func alpnFallsBackToHTTP1AndToNone() throws {
        let server = try TLSServerContext(serverConfig())
        let http1 = try connect(server: server, client: try clientContext(alpn: ["http/1.1"]))
        #expect(http1.server.tls.negotiatedALPN == "http/1.1")
        let none = try connect(server: server, client: try clientContext(alpn: []))
        #expect(none.server.tls.isHandshakeComplete)
        #expect(none.server.tls.negotiatedALPN == nil)
        let unknown = try connect(server: server, client: try clientContext(alpn: ["h3", "spdy/3"]))
        #expect(unknown.server.tls.isHandshakeComplete)
        #expect(unknown.server.tls.negotiatedALPN == nil)
        // Server preference wins over the client's order.
        let both = try connect(server: server, client: try clientContext(alpn: ["http/1.1", "h2"]))
        #expect(both.server.tls.negotiatedALPN == "h2")
    }

    @Test func tls12HandshakeUsesECDHEAEAD() throws {
        let server = try TLSServerContext(serverConfig())
        let e = try connect(server: server, client: try clientContext(maxVersion: .tls12))
        #expect(e.server.error == nil)
        #expect(e.server.tls.protocolVersion == "TLSv1.2")
        let cipher = try #require(e.server.tls.cipherSuite)
        #expect(cipher.hasPrefix("ECDHE-") && (cipher.contains("GCM") || cipher.contains("CHACHA20")))
        #expect(e.server.tls.negotiatedALPN == "h2")
    }

    @Test func minimumVersionRefusesOlderClient() throws {
        let server = try TLSServerContext(serverConfig(minVersion: .tls13))
        let e = try connect(server: server, client: try clientContext(maxVersion: .tls12))
        #expect(e.server.error?.reason == .protocolVersion)
        #expect(e.client.error?.reason == .protocolVersion)
        #expect(!e.server.tls.isHandshakeComplete)
    }

    @Test func weakOnlyClientGetsNoSharedCipher() throws {
        let server = try TLSServerContext(serverConfig())
        let e = try connect(server: server, client: try clientContext(maxVersion: .tls12, ciphers: "AES128-SHA"))
        #expect(e.server.error?.reason == .noSharedCipher)
    }

    // MARK: client certificates

    @Test func requiredClientCertYieldsSPIFFEIdentity() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext(cert: "client"))
        #expect(e.server.error == nil && e.client.error == nil)
        let peer = try #require(e.server.tls.peer)
        #expect(peer.spiffeID == "spiffe://example.org/ns/default/sa/client")
        #expect(peer.spiffeIDProblem == nil)
        #expect(peer.uriSANs == ["spiffe://example.org/ns/default/sa/client"])
        #expect(peer.dnsSANs == ["client.example.org"])
        #expect(peer.subject == "CN=client,O=Example\\, Inc.")
        #expect(peer.sha256Fingerprint.count == 64)
        #expect(peer.pemEncoded.hasPrefix("-----BEGIN CERTIFICATE-----"))
        #expect(peer.notAfter > 1_700_000_000)
    }

    @Test func requiredClientCertMissingFailsWithNoClientCert() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext())
        #expect(e.server.error?.reason == .noClientCert)
        #expect(e.client.error?.reason == .noClientCert)   // TLS 1.3 certificate_required alert
        let e12 = try connect(server: server, client: try clientContext(maxVersion: .tls12))
        #expect(e12.server.error?.reason == .noClientCert)
    }

    @Test func optionalClientCertAcceptsBoth() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .optional))
        let without = try connect(server: server, client: try clientContext())
        #expect(without.server.error == nil && without.server.tls.isHandshakeComplete)
        #expect(without.server.tls.peer == nil)
        let with = try connect(server: server, client: try clientContext(cert: "client"))
        #expect(with.server.tls.peer?.spiffeID == "spiffe://example.org/ns/default/sa/client")
        // A certificate that is sent must still verify.
        let foreign = try connect(server: server, client: try clientContext(cert: "foreign"))
        #expect(foreign.server.error?.reason == .unknownCA)
    }

    @Test func noClientCertPolicyIgnoresClientCertificate() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .none))
        let e = try connect(server: server, client: try clientContext(cert: "client"))
        #expect(e.server.error == nil && e.server.tls.isHandshakeComplete)
        #expect(e.server.tls.peer == nil)
    }

    @Test func certificateFromAnotherCAIsUnknownCA() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext(cert: "foreign"))
        #expect(e.server.error?.reason == .unknownCA)
        #expect(e.client.error?.reason == .unknownCA)
    }

    @Test func expiredClientCertIsExpired() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext(cert: "expired"))
        #expect(e.server.error?.reason == .expired)
        #expect(e.client.error?.reason == .expired)
        for v in [TLSVersion.tls12] {
            let old = try connect(server: server, client: try clientContext(cert: "expired", maxVersion: v))
            #expect(old.server.error?.reason == .expired)
        }
    }

    @Test func twoURISANsHaveNoSPIFFEIdentity() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext(cert: "twouri"))
        #expect(e.server.error == nil)
        let peer = try #require(e.server.tls.peer)
        #expect(peer.uriSANs.count == 2)
        #expect(peer.spiffeID == nil)
        #expect(peer.spiffeIDProblem == .multipleURISANs(count: 2))
        #expect(!XFCC.element(peer: peer, by: nil, includeCert: false).contains("URI="))
    }

    @Test func clientRejectsServerFromUnknownCAAndWrongName() throws {
        let server = try TLSServerContext(serverConfig())
        let strangerTrust = try TLSClientContext(TLSClientConfig(caPath: f.path("otherca.crt")))
        let e = try connect(server: server, client: strangerTrust)
        #expect(e.client.error?.reason == .unknownCA)
        #expect(e.server.error?.reason == .unknownCA)
        let wrongName = try connect(server: server, client: try clientContext(), serverName: "evil.example.com")
        #expect(wrongName.client.error?.reason == .badCertificate)
        let ip = try connect(server: server, client: try clientContext(), serverName: "127.0.0.1")
        #expect(ip.client.error == nil && ip.client.tls.isHandshakeComplete)
        #expect(ip.server.tls.serverName == nil)
    }

    @Test func mutualTLSWithClientContextCertificate() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let e = try connect(server: server, client: try clientContext(cert: "client", maxVersion: .tls12))
        #expect(e.server.tls.peer?.spiffeID == "spiffe://example.org/ns/default/sa/client")
        #expect(e.client.tls.peer?.subject == "CN=localhost")
    }

    // MARK: resumption

    @Test(arguments: [TLSVersion.tls13, .tls12])
    func sessionTicketResumes(_ version: TLSVersion) throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let client = try clientContext(cert: "client", maxVersion: version)
        let first = try connect(server: server, client: client)
        #expect(first.server.tls.isHandshakeComplete && !first.server.tls.sessionReused)
        let session = try #require(first.client.tls.resumableSession())
        let second = try connect(server: server, client: client, session: session)
        #expect(second.server.error == nil)
        #expect(second.server.tls.sessionReused)
        #expect(second.client.tls.sessionReused)
        // The resumed session still carries the verified client identity.
        #expect(second.server.tls.peer?.spiffeID == "spiffe://example.org/ns/default/sa/client")
        // A ticket from another context (e.g. before rotation) falls back to a full handshake.
        let rotated = try TLSServerContext(serverConfig(clientCert: .require))
        let again: TLSSession = try #require(second.client.tls.resumableSession())
        let third = try connect(server: rotated, client: client, session: again)
        #expect(third.server.tls.isHandshakeComplete && !third.server.tls.sessionReused)
    }

    // MARK: SNI

    @Test func sniPicksTheMatchingCertificate() throws {
        let sni = [SNICertificate(serverName: "api.example.com", certChainPath: f.path("api.crt"), keyPath: f.path("api.key"))]
        let server = try TLSServerContext(serverConfig(clientCert: .require, sni: sni))
        let api = try connect(server: server, client: try clientContext(cert: "client"), serverName: "api.example.com")
        #expect(api.client.error == nil && api.server.error == nil)
        #expect(api.server.tls.serverName == "api.example.com")
        #expect(api.client.tls.peer?.dnsSANs == ["api.example.com"])
        #expect(api.server.tls.negotiatedALPN == "h2")   // the SNI context carries ALPN too
        #expect(api.server.tls.peer?.spiffeID == "spiffe://example.org/ns/default/sa/client")   // and the CA
        let other = try connect(server: server, client: try clientContext(cert: "client"), serverName: "localhost")
        #expect(other.client.tls.peer?.dnsSANs == ["localhost"])
        #expect(server.sniCertificateNotAfter["api.example.com"] ?? 0 > 0)
    }

    // MARK: hostile input

    @Test func garbageAndPlaintextHTTPFailCleanly() throws {
        let server = try TLSServerContext(serverConfig())
        for input in [Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), [UInt8](repeating: 0x16, count: 300),
                      [0x16, 0x03, 0x01, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 64)] {
            let s = Side(try TLSConnection(context: server))
            s.tls.receive(input)
            s.step()
            if input.count > 100 || input.first != 0x16 { #expect(s.error != nil) }
            #expect(!s.tls.isHandshakeComplete)
            var out: [UInt8] = []
            s.tls.takeCiphertext(into: &out)    // an alert, possibly
            if s.error != nil {
                #expect(throws: TLSError.self) { _ = try s.tls.readPlaintext(into: &s.plaintext) }   // sticky
                #expect(throws: TLSError.self) { try s.tls.writePlaintext([1, 2, 3]) }
            }
        }
    }

    @Test func byteAtATimeHandshake() throws {
        let server = try TLSServerContext(serverConfig(clientCert: .require))
        let c = Side(try TLSConnection(client: try clientContext(cert: "client"), serverName: "localhost"))
        let s = Side(try TLSConnection(context: server))
        c.step()
        for _ in 0..<50 {
            var c2s: [UInt8] = []
            c.tls.takeCiphertext(into: &c2s)
            for b in c2s { s.tls.receive([b]); s.step() }
            var s2c: [UInt8] = []
            s.tls.takeCiphertext(into: &s2c)
            for b in s2c { c.tls.receive([b]); c.step() }
            if c2s.isEmpty && s2c.isEmpty { break }
        }
        #expect(s.error == nil && s.tls.isHandshakeComplete)
        #expect(s.tls.peer?.spiffeID != nil)
    }

    @Test func writeBeforeHandshakeThrows() throws {
        let s = try TLSConnection(context: try TLSServerContext(serverConfig()))
        #expect(throws: TLSError.self) { try s.writePlaintext([1]) }
        s.shutdown()   // no-op before the handshake
        #expect(s.pendingCiphertext == 0)
    }
}
