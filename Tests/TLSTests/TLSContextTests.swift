import Testing
import Foundation
@testable import TLS

@Suite struct TLSContextTests {
    let f: Fixtures
    init() throws { f = try Fixtures.get() }

    @Test func mismatchedKeyIsRejectedWithClearError() throws {
        let config = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("api.key"))
        let error = #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(config) }
        #expect(error?.kind == .keyMismatch)
        #expect(error?.message == "\(f.path("api.key")) does not match \(f.path("server.crt")): the private key is not the certificate's key")
    }

    @Test func mismatchedSNIKeyIsRejected() throws {
        var config = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key"))
        config.sniCertificates = [SNICertificate(serverName: "api.example.com", certChainPath: f.path("api.crt"), keyPath: f.path("server.key"))]
        let error = #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(config) }
        #expect(error?.kind == .keyMismatch)
    }

    @Test func missingOrBrokenFilesNameTheFile() throws {
        let missing = TLSServerConfig(certChainPath: f.path("nope.crt"), keyPath: f.path("server.key"))
        let e1 = #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(missing) }
        #expect(e1?.kind == .certificate)
        #expect(e1?.message.contains("nope.crt") == true)

        let notAKey = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.crt"))
        let e2 = #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(notAKey) }
        #expect(e2?.kind == .privateKey)

        let truncated = f.path("truncated.crt")
        let pem = try String(contentsOfFile: f.path("server.crt"), encoding: .utf8)
        try String(pem.prefix(pem.count / 2)).write(toFile: truncated, atomically: true, encoding: .utf8)
        let e3 = #expect(throws: TLSConfigError.self) {
            _ = try TLSServerContext(TLSServerConfig(certChainPath: truncated, keyPath: f.path("server.key")))
        }
        #expect(e3?.kind == .certificate)
    }

    @Test func clientCertPolicyNeedsCABundle() throws {
        let config = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key"), clientCert: .require)
        let error = #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(config) }
        #expect(error?.kind == .caBundle)
        let badCA = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key"),
                                    clientCAPath: f.path("missing-ca.crt"), clientCert: .optional)
        #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(badCA) }
    }

    @Test func certificateExpiryIsExposed() throws {
        let context = try TLSServerContext(TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key")))
        let now = UInt64(Date().timeIntervalSince1970)
        #expect(context.certificateNotAfter > now + 360 * 86_400)
        #expect(context.certificateNotAfter < now + 366 * 86_400)
    }

    @Test func leafCertificateGivesOurIdentity() throws {
        let context = try TLSServerContext(TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key")))
        #expect(context.leafCertificate?.dnsSANs == ["localhost"])
        #expect(context.leafCertificate?.subject == "CN=localhost")
    }

    @Test func sniTableMatchesExactThenOneLabelWildcard() throws {
        let exact = try #require(OpaquePointer(bitPattern: 0x10))
        let wild = try #require(OpaquePointer(bitPattern: 0x20))
        let table = ServerCallbacks(alpnWire: [], sni: [("api.example.com", exact), ("*.example.com", wild)])
        #expect(table.context(forServerName: "API.example.com") == exact)
        #expect(table.context(forServerName: "www.example.com") == wild)
        #expect(table.context(forServerName: "a.b.example.com") == nil)
        #expect(table.context(forServerName: "example.com") == nil)
        #expect(table.context(forServerName: "") == nil)
    }

    @Test func alpnSelectionIsBoundsChecked() {
        let table = ServerCallbacks(alpnWire: [2, 0x68, 0x32], sni: [])
        for offered: [UInt8] in [[], [0], [5, 0x68], [2, 0x68], [255] + [UInt8](repeating: 0x61, count: 10), [2, 0x68, 0x32]] {
            let r = offered.withUnsafeBufferPointer { table.selectALPN(offered: $0) }
            if offered == [2, 0x68, 0x32] { #expect(r?.offset == 1 && r?.length == 2) } else { #expect(r == nil) }
        }
    }

    @Test func invalidALPNNameIsRejected() {
        let config = TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key"), alpn: ["h2", ""])
        #expect(throws: TLSConfigError.self) { _ = try TLSServerContext(config) }
    }

    @Test func contextIsSharedAcrossThreads() async throws {
        let context = try TLSServerContext(TLSServerConfig(certChainPath: f.path("server.crt"), keyPath: f.path("server.key")))
        let client = try TLSClientContext(TLSClientConfig(caPath: f.path("ca.crt"), alpn: ["h2"]))
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    guard let e = try? connect(server: context, client: client) else { return false }
                    return e.server.tls.isHandshakeComplete && e.server.tls.negotiatedALPN == "h2"
                }
            }
            var all: [Bool] = []
            for await r in group { all.append(r) }
            return all
        }
        #expect(results.count == 8 && results.allSatisfy { $0 })
    }
}
