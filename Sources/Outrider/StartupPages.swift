#if canImport(Glibc)
import Glibc
#endif

/// Start-up touches code that never runs again: YAML and config parsing, Foundation, the
/// Swift runtime's metadata scans, plus the kernel's fault-around mapping 64 KiB around every
/// fault. Those clean, file-backed pages of our own executable stay mapped and count as RSS.
/// Once serving, ask the kernel to unmap them (MADV_PAGEOUT; they stay in the page cache):
/// the code the loops actually run faults back in on first use, so RSS reflects the working
/// set rather than start-up history. Read-only mappings only: nothing dirty is touched.
enum StartupPages {
    static func release() {
        guard let exe = executablePath(), let maps = readFile("/proc/self/maps") else { return }
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, String(fields[5...].joined(separator: " ")) == exe else { continue }
            let perms = fields[1]
            guard perms.hasPrefix("r") && !perms.contains("w") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), end > start,
                  let addr = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            _ = madvise(addr, Int(end - start), 21 /* MADV_PAGEOUT, Linux 5.4+ */)
        }
    }

    private static func executablePath() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
