import Foundation
import Testing
import OutriderCore
@testable import Config

@Suite("GET /config JSON")
struct JSONTests {
    func loaded() throws -> LoadedConfig {
        let config = try ConfigLoader.parse(text: minimalYAML + """

        timeouts:
          header_read: 250ms
        access_log:
          path: "/tmp/a \\"quoted\\" log"
        filters:
          - name: ratelimit
            mode: shadow
            rules: "line1\\nline2\\ttab\\u0001"
            ratio: .nan
            nested: {list: [1, 2.5, true, null, "x"]}
        """, file: "outrider.yaml", environment: [:])
        return LoadedConfig(config: config, path: "/etc/outrider/outrider.yaml", sha256: SHA256.hex(Array("x".utf8)),
                            loadedAtWallNanos: 1_764_168_996_123_000_000)
    }

    @Test func jsonIsValidAndCarriesEveryEffectiveValue() throws {
        let text = try loaded().json(version: 3, lastReloadError: "outrider.yaml:2: bad \"thing\"\n")
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        let top = try #require(object)
        #expect(top["version"] as? Int == 3)
        #expect(top["path"] as? String == "/etc/outrider/outrider.yaml")
        #expect(top["sha256"] as? String == SHA256.hex(Array("x".utf8)))
        #expect(top["loaded_at"] as? String == "2025-11-26T14:56:36.123Z")
        #expect(top["last_reload_error"] as? String == "outrider.yaml:2: bad \"thing\"\n")
        let config = try #require(top["config"] as? [String: Any])
        #expect(config["workers"] as? Int == 1)
        #expect(config["log_level"] as? String == "info")
        #expect((config["admin"] as? [String: Any])?["address"] as? String == "127.0.0.1:15000")
        let listeners = try #require(config["listeners"] as? [[String: Any]])
        #expect(listeners.first?["name"] as? String == "inbound")
        #expect(listeners.first?["upstream"] as? String == "127.0.0.1:8080")
        let timeouts = try #require(config["timeouts"] as? [String: Any])
        #expect(timeouts["header_read"] as? String == "250ms")
        #expect(timeouts["request"] as? String == "0s")
        #expect(timeouts["upstream_idle"] as? String == "50s")
        #expect(timeouts.count == 7)
        let limits = try #require(config["limits"] as? [String: Any])
        #expect(limits["max_request_header_bytes"] as? Int == 61_440)
        #expect(limits.count == 5)
        #expect((config["access_log"] as? [String: Any])?["path"] as? String == "/tmp/a \"quoted\" log")
        let filter = try #require((config["filters"] as? [[String: Any]])?.first)
        #expect(filter["name"] as? String == "ratelimit")
        #expect(filter["mode"] as? String == "shadow")
        #expect(filter["rules"] as? String == "line1\nline2\ttab\u{01}")
        #expect(filter["ratio"] is NSNull)
        #expect(((filter["nested"] as? [String: Any])?["list"] as? [Any])?.count == 5)
    }

    @Test func noReloadErrorIsNull() throws {
        let text = try loaded().json(version: 1, lastReloadError: nil)
        #expect(text.contains("\"last_reload_error\":null"))
        #expect(text.hasPrefix("{\"version\":1,"))
    }

    @Test func escaperHandlesQuotesBackslashesAndControlCharacters() {
        #expect(JSONWriter.quote("a\"b\\c") == "\"a\\\"b\\\\c\"")
        #expect(JSONWriter.quote("\u{00}\u{1f}\n") == "\"\\u0000\\u001f\\n\"")
        #expect(JSONWriter.quote("é😀") == "\"é😀\"")
    }
}
