#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import Testing
@testable import Config

/// A temp directory removed at the end of the test.
final class TempDir {
    let path: String
    init() throws {
        var template = Array("/tmp/outrider-config-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buf in buf.baseAddress.flatMap { mkdtemp($0) } }
        guard made != nil else { throw FileWatcherError(call: "mkdtemp", path: "/tmp", errno: errno) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { _ = system("rm -rf '\(path)'") }

    func write(_ name: String, _ text: String) {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "open \(name)")
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// Counts onChange calls.
final class ChangeCounter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func increment() { count.withLock { $0 += 1 } }

    /// Waits (bounded) until at least `n` changes were seen.
    func wait(for n: Int, seconds: Double = 5) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if value >= n { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return value >= n
    }
}

@Suite("File watcher", .serialized)
struct FileWatcherTests {
    func makeWatcher(_ file: String) throws -> (FileWatcher, ChangeCounter) {
        let counter = ChangeCounter()
        let watcher = try FileWatcher(files: [file], queue: DispatchQueue(label: "test.watcher")) {
            counter.increment()
        }
        watcher.start()
        return (watcher, counter)
    }

    @Test func renamingANewFileOverTheConfigFiresOnce() async throws {
        let dir = try TempDir()
        dir.write("outrider.yaml", "workers: 1\n")
        let (watcher, counter) = try makeWatcher(dir.path + "/outrider.yaml")
        defer { watcher.cancel() }

        dir.write("outrider.yaml.new", "workers: 2\n")
        #expect(rename(dir.path + "/outrider.yaml.new", dir.path + "/outrider.yaml") == 0)
        #expect(await counter.wait(for: 1))
        // The write of the temp file is not a watched name and the burst is debounced.
        try await Task.sleep(for: .milliseconds(300))
        #expect(counter.value == 1)
    }

    @Test func configMapDataSymlinkSwapFires() async throws {
        let dir = try TempDir()
        let d = dir.path
        #expect(mkdir(d + "/..2026_a", 0o755) == 0)
        dir.write("..2026_a/outrider.yaml", "workers: 1\n")
        #expect(symlink("..2026_a", d + "/..data") == 0)
        #expect(symlink("..data/outrider.yaml", d + "/outrider.yaml") == 0)
        let (watcher, counter) = try makeWatcher(d + "/outrider.yaml")
        defer { watcher.cancel() }

        // What the kubelet does (atomic_writer.go): new timestamped dir, ..data_tmp, rename.
        #expect(mkdir(d + "/..2026_b", 0o755) == 0)
        dir.write("..2026_b/outrider.yaml", "workers: 2\n")
        #expect(symlink("..2026_b", d + "/..data_tmp") == 0)
        #expect(rename(d + "/..data_tmp", d + "/..data") == 0)
        #expect(await counter.wait(for: 1))

        #expect(readAll(d + "/outrider.yaml") == "workers: 2\n")
    }

    @Test func inPlaceWriteFires() async throws {
        let dir = try TempDir()
        dir.write("outrider.yaml", "workers: 1\n")
        let (watcher, counter) = try makeWatcher(dir.path + "/outrider.yaml")
        defer { watcher.cancel() }
        dir.write("outrider.yaml", "workers: 3\n")
        #expect(await counter.wait(for: 1))
    }

    @Test func unrelatedFilesDoNotFireAndCancelStopsDelivery() async throws {
        let dir = try TempDir()
        dir.write("outrider.yaml", "workers: 1\n")
        let (watcher, counter) = try makeWatcher(dir.path + "/outrider.yaml")
        dir.write("other.yaml", "x: 1\n")
        try await Task.sleep(for: .milliseconds(400))
        #expect(counter.value == 0)

        watcher.cancel()
        dir.write("outrider.yaml", "workers: 2\n")
        try await Task.sleep(for: .milliseconds(400))
        #expect(counter.value == 0)
    }

    @Test func missingDirectoryIsAnError() {
        #expect(throws: FileWatcherError.self) {
            _ = try FileWatcher(files: ["/nonexistent-dir/outrider.yaml"], queue: .main) {}
        }
    }
}

func readAll(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
