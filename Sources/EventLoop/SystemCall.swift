#if canImport(Glibc)
import Glibc
#endif

/// An error from a system call, naming the call and errno (swift-nio's IOError, FlyingFox's SocketError).
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public init(_ call: String, errno: Int32) { self.call = call; self.errno = errno }
    public var description: String {
        let text = strerror(errno).map { String(cString: $0) } ?? "errno \(errno)"
        return "\(call) failed: \(text) (errno \(errno))"
    }
}

/// The outcome of a non-blocking call: a result, or "try again when the fd is ready".
public enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// The one wrapper every syscall goes through: retries EINTR, maps EAGAIN/EWOULDBLOCK
/// (and EINPROGRESS for connect) to `.wouldBlock`, throws `SystemError` otherwise.
@inline(__always)
public func systemCall(_ name: @autoclosure () -> String, _ body: () -> Int) throws(SystemError) -> IOResult<Int> {
    while true {
        let r = body()
        if r >= 0 { return .done(r) }
        let e = Glibc.errno
        switch e {
        case EINTR: continue
        case EAGAIN, EINPROGRESS: return .wouldBlock
        default: throw SystemError(name(), errno: e)
        }
    }
}

/// For calls that must not block-or-fail softly (setup paths): retries EINTR, throws otherwise.
@inline(__always)
@discardableResult
public func systemCallChecked(_ name: @autoclosure () -> String, _ body: () -> Int) throws(SystemError) -> Int {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        throw SystemError(name(), errno: e)
    }
}
