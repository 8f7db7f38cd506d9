import Testing
@testable import TLS

@Suite struct SPIFFEIDTests {
    @Test(arguments: [
        "spiffe://example.org/ns/default/sa/client",
        "spiffe://cluster.local/ns/a-b/sa/c_d.e",
        "spiffe://a/b",
    ])
    func validIDs(_ id: String) throws {
        #expect(SPIFFEID.validate(id) == nil)
        #expect(try SPIFFEID.fromURISANs([id]).get() == id)
    }

    @Test(arguments: [
        "https://example.org/x", "SPIFFE://example.org/x", "spiffe://example.org", "spiffe://example.org/",
        "spiffe:///path", "spiffe://Example.org/x", "spiffe://example.org:8443/x", "spiffe://user@example.org/x",
        "spiffe://example.org/a//b", "spiffe://example.org/a/", "spiffe://example.org/./a", "spiffe://example.org/a/..",
        "spiffe://example.org/a?b", "spiffe://example.org/a#b", "spiffe://example.org/a%20b", "",
    ])
    func invalidIDs(_ id: String) {
        #expect(SPIFFEID.validate(id) != nil)
        guard case .failure(.malformed) = SPIFFEID.fromURISANs([id]) else {
            Issue.record("expected malformed for \(id)")
            return
        }
    }

    @Test func countRule() {
        #expect(SPIFFEID.fromURISANs([]) == .failure(.noURISAN))
        #expect(SPIFFEID.fromURISANs(["spiffe://a/b", "spiffe://a/c"]) == .failure(.multipleURISANs(count: 2)))
    }
}

@Suite struct XFCCTests {
    func peer(subject: String = "CN=client", uris: [String] = ["spiffe://example.org/ns/default/sa/client"],
              dns: [String] = [], pem: String = "-----BEGIN CERTIFICATE-----\nMIIB+a/b=\n-----END CERTIFICATE-----\n") -> PeerCertificateInfo {
        PeerCertificateInfo(subject: subject, uriSANs: uris, dnsSANs: dns, pemEncoded: pem,
                            sha256Fingerprint: "ab12", notAfter: 0)
    }

    @Test func elementInEnvoyOrder() {
        let element = XFCC.element(peer: peer(), by: "spiffe://example.org/ns/default/sa/server", includeCert: false)
        #expect(element == "By=spiffe://example.org/ns/default/sa/server;Hash=ab12;Subject=\"CN=client\";URI=spiffe://example.org/ns/default/sa/client")
    }

    @Test func byIsOmittedWithoutOurIdentity() {
        #expect(XFCC.element(peer: peer(), by: nil, includeCert: false)
                == "Hash=ab12;Subject=\"CN=client\";URI=spiffe://example.org/ns/default/sa/client")
        #expect(XFCC.element(peer: peer(), by: "", includeCert: false).hasPrefix("Hash="))
    }

    @Test func subjectWithSeparatorsAndQuotesIsEscaped() {
        let element = XFCC.element(peer: peer(subject: "CN=a \"b\",O=Example\\, Inc.;x", uris: []), by: nil, includeCert: false)
        #expect(element == "Hash=ab12;Subject=\"CN=a \\\"b\\\",O=Example\\\\, Inc.;x\"")
    }

    @Test func valuesAreQuotedOnlyWhenTheyContainSeparators() {
        #expect(XFCC.value("spiffe://a/b") == "spiffe://a/b")
        #expect(XFCC.value("http://x/?a=b") == "\"http://x/?a=b\"")
        #expect(XFCC.value("a,b") == "\"a,b\"")
        #expect(XFCC.value("a;b") == "\"a;b\"")
        let element = XFCC.element(peer: peer(uris: ["urn:x;y"], dns: ["a.example", "b.example"]), by: nil, includeCert: false)
        #expect(element.hasSuffix(";URI=\"urn:x;y\";DNS=a.example;DNS=b.example"))
    }

    @Test func certIsURLEncodedPEM() {
        let element = XFCC.element(peer: peer(), by: nil, includeCert: true)
        #expect(element.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0AMIIB%2Ba%2Fb%3D%0A-----END%20CERTIFICATE-----%0A\";"))
        #expect(!XFCC.element(peer: peer(), by: nil, includeCert: false).contains("Cert="))
    }
}
