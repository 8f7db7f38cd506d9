#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Diagnostic logging to stderr, one line per event: `time level message`.
/// The access log is separate (stdout, JSON). The level is process-wide and atomic so a
/// reload can change it while workers log.
public enum Diagnostics {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warn, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var name: String { ["debug", "info", "warn", "error"][rawValue] }
        public init?(name: String) {
            switch name.lowercased() {
            case "debug": self = .debug
            case "info": self = .info
            case "warn", "warning": self = .warn
            case "error": self = .error
            default: return nil
            }
        }
    }

    private static let threshold = Atomic<Int>(Level.info.rawValue)

    public static func setLevel(_ l: Level) { threshold.store(l.rawValue, ordering: .relaxed) }
    public static func enabled(_ l: Level) -> Bool { l.rawValue >= threshold.load(ordering: .relaxed) }

    public static func log(_ level: Level, _ message: @autoclosure () -> String) {
        guard enabled(level) else { return }
        let line = "\(rfc3339(wallNanos: wallClockNanos())) \(level.name) \(message())\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(2, raw.baseAddress.map { $0 + off }, raw.count - off)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
                off += n
            }
        }
    }
}
