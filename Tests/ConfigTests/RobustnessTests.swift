#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import Config

@Suite("Hostile input")
struct RobustnessTests {
    static let inputs: [String] = [
        String(repeating: "[", count: 5000),
        String(repeating: "- ", count: 3000) + "x",
        "a: \u{0}\u{1}\u{2}",
        "\u{FFFD}\u{FEFF}workers: 1",
        "workers: 9223372036854775808",
        "workers: -9223372036854775809",
        "listeners: [{name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2'}]\ntimeouts: {idle: 18446744073709551616}",
        "listeners: [{name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2'}]\ntimeouts: {idle: 1e400}",
        "listeners: [{name: a, address: '127.0.0.1:1', upstream: '127.0.0.1:2'}]\ntimeouts: {idle: 99999999999999999999h}",
        "? [a, b]\n: c",
        "*undefined",
        "&a [*a]",
        "--- 1\n--- 2",
        "%YAML 9.9\n---\na: 1",
        "!!binary AAAA",
        "listeners: [{name: '\u{0}', address: '[::]:65535', upstream: '[::1]:1'}]",
    ]

    @Test(arguments: inputs)
    func garbageIsAnErrorNotACrash(_ text: String) {
        do {
            _ = try ConfigLoader.parse(text: text, file: "f", environment: [:])
            Issue.record("expected an error for \(text.prefix(40))")
        } catch {
            #expect(!error.diagnostics.isEmpty)
            #expect(error.diagnostics.allSatisfy { $0.file == "f" && $0.line >= 0 })
        }
    }

    @Test func invalidUTF8FileIsReportedNotCrashed() throws {
        let dir = try TempDir()
        dir.write("bad.yaml", "workers: 1\n")
        // Append bytes that are not UTF-8.
        let fd = open(dir.path + "/bad.yaml", O_WRONLY | O_APPEND)
        let bytes: [UInt8] = [0x78, 0x3A, 0x20, 0xFF, 0xFE, 0xC0, 0x0A]
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(throws: ConfigErrors.self) {
            _ = try ConfigLoader.load(path: dir.path + "/bad.yaml", environment: [:])
        }
    }

    @Test func deployConfigMapEmbeddedConfigLoads() throws {
        // deploy/configmap.yaml carries the sidecar's outrider.yaml as a block scalar.
        let text = readAll(packageRoot() + "/deploy/configmap.yaml")
        guard !text.isEmpty else { return }
        var inBlock = false
        var body: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  outrider.yaml: |") { inBlock = true; continue }
            if inBlock {
                if line.hasPrefix("    ") { body.append(line.dropFirst(4)) }
                else if line.trimmingCharacters(in: .whitespaces).isEmpty { body.append("") }
                else { break }
            }
        }
        guard !body.isEmpty else { return }
        let config = try ConfigLoader.parse(text: body.joined(separator: "\n"), file: "configmap", environment: [:])
        #expect(!config.listeners.isEmpty)
    }
}
