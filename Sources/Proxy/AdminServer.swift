#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import HTTP1
import OutriderCore

/// What an admin handler returns.
public struct AdminResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String
    public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String) {
        self.status = status; self.contentType = contentType; self.body = body
    }
}

/// The admin listener: a tiny HTTP/1.1 server on its own loop thread, so a slow scrape never
/// competes with proxied traffic. Loopback by default (CONVENTIONS.md §1).
public final class AdminServer: Sendable {
    public typealias Handler = @Sendable (_ method: String, _ path: String) -> AdminResponse
    public let address: SocketAddressSpec
    private let handler: Handler
    private let listenFD: Int32

    public init(address: SocketAddressSpec, handler: @escaping Handler) throws(SystemError) {
        self.address = address
        self.handler = handler
        listenFD = try Socket.listen(try ResolvedAddress(address), reusePort: false)
    }

    public func start() throws(SystemError) {
        let fd = listenFD
        let handler = self.handler
        try startThread(name: "outrider-admin") {
            do {
                let loop = try EventLoop(index: -1)
                let acceptor = AdminAcceptor(fd: fd, loop: loop, handler: handler)
                try loop.register(fd: fd, handler: acceptor, events: IOEvent.readable)
                loop.run()
            } catch {
                Diagnostics.log(.error, "admin listener stopped: \(error)")
            }
        }
    }
}

private final class AdminAcceptor: EventHandler {
    let fd: Int32
    let loop: EventLoop
    let handler: AdminServer.Handler
    init(fd: Int32, loop: EventLoop, handler: @escaping AdminServer.Handler) { self.fd = fd; self.loop = loop; self.handler = handler }

    func handleEvent(_ events: UInt32) {
        for _ in 0..<32 {
            guard let r = try? Socket.accept(fd), case .done(let c) = r else { return }
            let conn = AdminConnection(fd: c.fd, loop: loop, handler: handler)
            do { try loop.register(fd: c.fd, handler: conn) } catch { close(c.fd) }
        }
    }
}

/// One admin client. Requests are small; bodies are read and ignored.
private final class AdminConnection: EventHandler {
    let fd: Int32
    let loop: EventLoop
    let handler: AdminServer.Handler
    var parser = HTTP1RequestParser()
    var input: [UInt8] = []
    var out = ByteBuffer()
    var writable = true
    var closed = false
    var closeAfterWrite = false
    var current: (method: String, path: String, keepAlive: Bool)?

    init(fd: Int32, loop: EventLoop, handler: @escaping AdminServer.Handler) {
        self.fd = fd; self.loop = loop; self.handler = handler
    }

    func handleEvent(_ events: UInt32) {
        if events & IOEvent.writable != 0 { writable = true; flush() }
        guard events & (IOEvent.readable | IOEvent.readHangup | IOEvent.hangup | IOEvent.error) != 0 else { return }
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        while !closed {
            let r = buf.withUnsafeMutableBytes { try? Socket.read(fd, into: $0) }
            guard let r else { shut(); return }
            switch r {
            case .wouldBlock: return
            case .done(0): shut(); return
            case .done(let n):
                if input.count + n > 128 * 1024 { shut(); return }
                input.append(contentsOf: buf[0..<n])
                process()
            }
        }
    }

    private func process() {
        while !closed && !closeAfterWrite {
            var parser = self.parser
            let result = input.withUnsafeBytes { raw -> Result<(HTTP1RequestEvent?, Int), HTTP1ParseError> in
                do throws(HTTP1ParseError) { let r = try parser.parse(raw); return .success((r.event, r.consumed)) }
                catch { return .failure(error) }
            }
            self.parser = parser
            switch result {
            case .failure(let e):
                let oe = e.outriderError(source: .downstream)
                respond(AdminResponse(status: oe.status, body: "\(oe.context)\n"), keepAlive: false)
                return
            case .success(let (event, consumed)):
                input.removeFirst(consumed)
                guard let event else { return }
                switch event {
                case .head(let head, _, let keepAlive, _, _):
                    current = (head.method, String(head.path), keepAlive)
                case .body:
                    break
                case .end:
                    guard let c = current else { return }
                    current = nil
                    respond(handler(c.method, c.path), keepAlive: c.keepAlive)
                }
            }
        }
    }

    private func respond(_ r: AdminResponse, keepAlive: Bool) {
        var head = ResponseHead(status: r.status, reason: reasonPhrase(r.status))
        head.headers.add(name: "content-type", value: r.contentType)
        head.headers.add(name: "content-length", value: String(r.body.utf8.count))
        head.headers.add(name: "cache-control", value: "no-cache")
        if !keepAlive {
            head.headers.add(name: "connection", value: "close")
            closeAfterWrite = true
        }
        HTTP1Serializer.writeResponseHead(head, into: &out)
        out.append(r.body)
        flush()
    }

    private func flush() {
        var sent: UInt64 = 0
        if !flushBuffer(fd: fd, out: &out, writable: &writable, sent: &sent) { shut(); return }
        if out.isEmpty && closeAfterWrite { shut() }
    }

    private func shut() {
        guard !closed else { return }
        closed = true
        loop.deregister(fd: fd)
        close(fd)
    }
}
