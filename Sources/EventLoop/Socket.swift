#if canImport(Glibc)
import Glibc
#endif
import CLinux
import OutriderCore

/// A numeric socket address ready for bind/connect. Host names other than "localhost" are not
/// resolved: a sidecar's upstream is an address on the pod's loopback.
public struct ResolvedAddress: @unchecked Sendable {   // plain bytes, copied by value
    public var storage = sockaddr_storage()
    public var length: socklen_t = 0
    public let spec: SocketAddressSpec

    public init(_ spec: SocketAddressSpec) throws(SystemError) {
        self.spec = spec
        var st = sockaddr_storage()
        if spec.isIPv6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = spec.port.bigEndian
            guard inet_pton(AF_INET6, spec.host, &a.sin6_addr) == 1 else { throw SystemError("inet_pton(\(spec.host))", errno: EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = spec.port.bigEndian
            guard inet_pton(AF_INET, spec.host, &a.sin_addr) == 1 else { throw SystemError("inet_pton(\(spec.host))", errno: EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        storage = st
    }

    var family: Int32 { Int32(storage.ss_family) }
}

/// Socket primitives. Every call goes through `systemCall`, so EINTR is retried and EAGAIN
/// becomes `.wouldBlock`.
public enum Socket {
    /// A non-blocking listening socket. `reusePort` gives each worker its own accept queue.
    public static func listen(_ address: ResolvedAddress, reusePort: Bool, backlog: Int32 = 1024) throws(SystemError) -> Int32 {
        let fd = Int32(try systemCallChecked("socket", { Int(socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)) }))
        do {
            var one: Int32 = 1
            try systemCallChecked("setsockopt(SO_REUSEADDR)", { Int(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))) })
            if reusePort {
                try systemCallChecked("setsockopt(SO_REUSEPORT)", { Int(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(4))) })
            }
            var addr = address
            try systemCallChecked("bind(\(address.spec))", {
                Int(withUnsafePointer(to: &addr.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, addr.length) } })
            })
            try systemCallChecked("listen(\(address.spec))", { Int(Glibc.listen(fd, backlog)) })
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection: the new non-blocking fd and the peer's address as text.
    public static func accept(_ listener: Int32) throws(SystemError) -> IOResult<(fd: Int32, peer: String, peerPort: UInt16)> {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = try systemCall("accept4", {
            Int(withUnsafeMutablePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                clinux_accept4(listener, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            } })
        })
        switch r {
        case .wouldBlock: return .wouldBlock
        case .done(let fd):
            let (host, port) = describe(st)
            return .done((Int32(fd), host, port))
        }
    }

    /// Starts a non-blocking connect. `.wouldBlock` means in progress: wait for writability,
    /// then read `pendingError`.
    public static func connect(_ address: ResolvedAddress) throws(SystemError) -> (fd: Int32, connected: Bool) {
        let fd = Int32(try systemCallChecked("socket", { Int(socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)) }))
        var addr = address
        do {
            let r = try systemCall("connect(\(address.spec))", {
                Int(withUnsafePointer(to: &addr.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, addr.length) } })
            })
            switch r {
            case .done: return (fd, true)
            case .wouldBlock: return (fd, false)
            }
        } catch {
            close(fd)
            throw error
        }
    }

    /// The error of a finished non-blocking connect (SO_ERROR), 0 on success.
    public static func pendingError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(4)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return errno }
        return err
    }

    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
    }

    /// Reads into `buffer`. `.done(0)` is end of stream.
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try systemCall("read", { Glibc.read(fd, buffer.baseAddress, buffer.count) })
    }

    /// Writes from `buffer` (MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE).
    @inline(__always)
    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try systemCall("send", { send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) })
    }

    public static func shutdownWrite(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with RST instead of FIN (SO_LINGER 0), for aborted exchanges.
    public static func abort(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    static func describe(_ st: sockaddr_storage) -> (String, UInt16) {
        var st = st
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if Int32(st.ss_family) == AF_INET {
            return withUnsafePointer(to: &st) { p in
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
                    var addr = a.pointee.sin_addr
                    inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
                    return (String(cString: buf), UInt16(bigEndian: a.pointee.sin_port))
                }
            }
        } else if Int32(st.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &st) { p in
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                    var addr = a.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
                    return (String(cString: buf), UInt16(bigEndian: a.pointee.sin6_port))
                }
            }
        }
        return ("unknown", 0)
    }
}
