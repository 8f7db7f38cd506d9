#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Dispatch
import OutriderCore

/// Why a watcher could not be set up.
public struct FileWatcherError: Error, Sendable, CustomStringConvertible {
    public var call: String
    public var path: String
    public var errno: Int32
    public var description: String {
        "\(call)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Watches the DIRECTORIES containing the given files with inotify, so each of these fires:
/// - a Kubernetes ConfigMap update: the kubelet writes `..<timestamp>/`, points `..data_tmp` at it
///   and renames `..data_tmp` → `..data`; the files are symlinks `key -> ..data/key`, so a watch on
///   the file itself would only see IN_DELETE_SELF and then die;
/// - a plain `mv new outrider.yaml` (IN_MOVED_TO);
/// - an in-place write (IN_CLOSE_WRITE), and creation or deletion of the file.
///
/// Bursts are debounced: `onChange` runs once on `queue` after 100 ms without a relevant event
/// (or 1 s after the first one, if events keep coming). It only says "look again": the caller
/// re-reads and validates every file, and keeps the last good config on errors.
///
/// The inotify fd is read through a DispatchSource read source; there is no thread of its own.
/// Keep a reference to the watcher: releasing it cancels the watch.
///
/// Synchronization: the fd, the watch table and the callback are immutable after `init`. Every
/// mutable field (`source`, `started`, `cancelled`, the debounce timestamps) is read and written
/// only on the private serial `stateQueue`; the read source delivers there, and the public
/// methods hop onto it. Hence `@unchecked Sendable`.
public final class FileWatcher: @unchecked Sendable {
    /// Names that count, per watch descriptor: the files' basenames and `..data`.
    private let namesByWatch: [Int32: Set<String>]
    private let fd: Int32
    private let callbackQueue: DispatchQueue
    private let onChange: @Sendable () -> Void
    private let stateQueue = DispatchQueue(label: "outrider.config.filewatcher")

    // stateQueue only.
    private var source: DispatchSourceRead?
    private var started = false
    private var cancelled = false
    private var firstPendingEvent: UInt64?
    private var lastEvent: UInt64 = 0

    static let quietNanos: UInt64 = 100_000_000
    static let maxDelayNanos: UInt64 = 1_000_000_000

    public init(files: [String], queue: DispatchQueue, onChange: @escaping @Sendable () -> Void) throws {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0 { throw FileWatcherError(call: "inotify_init1", path: "", errno: errno) }
        let mask = UInt32(IN_MOVED_TO) | UInt32(IN_CREATE) | UInt32(IN_CLOSE_WRITE) | UInt32(IN_DELETE)
        var names: [Int32: Set<String>] = [:]
        for file in files {
            let (dir, base) = Self.split(file)
            let wd = inotify_add_watch(fd, dir, mask)
            if wd < 0 {
                let err = errno
                close(fd)
                throw FileWatcherError(call: "inotify_add_watch", path: dir, errno: err)
            }
            // Several files in one directory share one watch descriptor.
            names[wd, default: ["..data"]].insert(base)
        }
        self.fd = fd
        self.namesByWatch = names
        self.callbackQueue = queue
        self.onChange = onChange
    }

    deinit {
        // No other reference exists now, so the state can be read directly.
        if let source {
            source.cancel()
        } else if !cancelled {
            close(fd)
        }
    }

    /// Starts delivering events. Changes made after `init` returned are already queued by
    /// the kernel and are reported too.
    public func start() {
        stateQueue.sync {
            guard !started, !cancelled else { return }
            started = true
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: stateQueue)
            let fd = self.fd
            source.setEventHandler { [weak self] in self?.readEvents() }
            // The fd is closed only once the source can no longer read it.
            source.setCancelHandler { close(fd) }
            self.source = source
            source.activate()
        }
    }

    /// Stops watching and closes the inotify fd. A debounced `onChange` not yet handed to
    /// `queue` is dropped; one already handed over may still run.
    public func cancel() {
        stateQueue.sync {
            guard !cancelled else { return }
            cancelled = true
            if let source {
                source.cancel()
            } else {
                close(fd)
            }
            firstPendingEvent = nil
        }
    }

    // MARK: - stateQueue

    private func readEvents() {
        guard !cancelled else { return }
        var relevant = false
        // inotify_event is 16 bytes plus a NUL-padded name; the buffer holds many events.
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                break  // EAGAIN: drained.
            }
            if n == 0 { break }
            if parse(buffer[0..<n]) { relevant = true }
        }
        if relevant { noteEvent() }
    }

    /// Whether any event in `bytes` concerns a watched name (or the kernel's queue overflowed,
    /// in which case events were lost and a re-read is the only safe answer).
    private func parse(_ bytes: ArraySlice<UInt8>) -> Bool {
        var relevant = false
        var offset = bytes.startIndex
        let headerSize = 16
        while bytes.endIndex - offset >= headerSize {
            let wd = Int32(bitPattern: Self.u32(bytes, offset))
            let mask = Self.u32(bytes, offset + 4)
            let nameLength = Int(Self.u32(bytes, offset + 12))
            let nameStart = offset + headerSize
            guard nameLength <= bytes.endIndex - nameStart else { break }
            let nameBytes = bytes[nameStart..<(nameStart + nameLength)]
            let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
            if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                relevant = true
            } else if let names = namesByWatch[wd], names.contains(name) {
                relevant = true
            }
            offset = nameStart + nameLength
        }
        return relevant
    }

    private static func u32(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt32 {
        // Host byte order: the kernel writes native-endian structs (little-endian on x86_64/arm64).
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }

    private func noteEvent() {
        let now = monotonicNanos()
        lastEvent = now
        if firstPendingEvent == nil {
            firstPendingEvent = now
            schedule(after: Self.quietNanos)
        }
    }

    private func schedule(after nanos: UInt64) {
        stateQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanos))) { [weak self] in
            self?.debounceTick()
        }
    }

    private func debounceTick() {
        guard !cancelled, let first = firstPendingEvent else { return }
        let now = monotonicNanos()
        let quietFor = now &- lastEvent
        let waited = now &- first
        if quietFor >= Self.quietNanos || waited >= Self.maxDelayNanos {
            firstPendingEvent = nil
            let onChange = self.onChange
            callbackQueue.async { onChange() }
        } else {
            schedule(after: min(Self.quietNanos - quietFor, Self.maxDelayNanos - waited))
        }
    }

    private static func split(_ path: String) -> (dir: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }
}
