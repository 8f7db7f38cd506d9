#if canImport(Glibc)
import Glibc
#endif
import OutriderCore

/// A minimal blocking HTTP/1.1 client for the exporter thread (never a proxy loop).
///
/// One keep-alive connection, re-established when the collector closed it or an exchange
/// failed. The socket is non-blocking and every wait is a `poll` bounded by the request
/// deadline, so connect, send and receive together never exceed the export timeout.
/// Responses are input: every length is checked, nothing traps.
final class OTLPHTTPClient {
    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> String? {
            let n = name.lowercased()
            return headers.first { $0.0.lowercased() == n }?.1
        }
    }

    enum TransportError: Error, Equatable {
        case resolve(String)
        case connect(Int32)
        case timeout
        case closed          // peer closed before a complete response
        case io(Int32)
        case malformed(String)

        var description: String {
            switch self {
            case .resolve(let h): return "cannot resolve \(h)"
            case .connect(let e): return "connect: \(errnoText(e))"
            case .timeout: return "timed out"
            case .closed: return "connection closed by the collector"
            case .io(let e): return "I/O: \(errnoText(e))"
            case .malformed(let m): return "malformed response: \(m)"
            }
        }
    }

    static let maxHeadBytes = 64 * 1024
    static let maxBodyBytes = 1 << 20

    let endpoint: OTLPEndpoint
    private var fd: Int32 = -1
    private var buffered: [UInt8] = []

    init(endpoint: OTLPEndpoint) { self.endpoint = endpoint }

    deinit { close() }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
        buffered.removeAll(keepingCapacity: false)
    }

    /// POST `body` to the endpoint path. A reused connection that turns out to be dead before
    /// any response byte arrived is retried once on a fresh connection (the collector's idle
    /// timeout is not an export failure).
    func post(body: [UInt8], contentType: String, headers: [(String, String)],
              deadline: UInt64) -> Result<Response, TransportError> {
        let reused = fd >= 0 && connectionLooksAlive()
        if !reused { close() }
        let first = exchange(body: body, contentType: contentType, headers: headers, deadline: deadline)
        if reused, case .failure(let e) = first, e == .closed || isResetError(e) {
            close()
            return exchange(body: body, contentType: contentType, headers: headers, deadline: deadline)
        }
        return first
    }

    private func isResetError(_ e: TransportError) -> Bool {
        if case .io(let code) = e { return code == ECONNRESET || code == EPIPE }
        return false
    }

    /// An idle keep-alive socket must not be readable: readable means EOF (or stray bytes).
    private func connectionLooksAlive() -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&p, 1, 0)
        return n == 0
    }

    private func exchange(body: [UInt8], contentType: String, headers: [(String, String)],
                          deadline: UInt64) -> Result<Response, TransportError> {
        if fd < 0 {
            if let e = connect(deadline: deadline) { return .failure(e) }
        }
        var head = "POST \(endpoint.path) HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\n"
        head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        head += "User-Agent: outrider-otlp-exporter\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        if let e = sendAll(Array(head.utf8), deadline: deadline) { close(); return .failure(e) }
        if let e = sendAll(body, deadline: deadline) { close(); return .failure(e) }
        switch readResponse(deadline: deadline) {
        case .success(let (resp, keepAlive)):
            if !keepAlive { close() }
            return .success(resp)
        case .failure(let e):
            close()
            return .failure(e)
        }
    }

    // MARK: - Connect

    private func connect(deadline: UInt64) -> TransportError? {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard rc == 0, let first = list else { return .resolve(endpoint.host) }
        defer { freeaddrinfo(list) }
        var lastError: TransportError = .resolve(endpoint.host)
        var cur: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cur {
            cur = ai.pointee.ai_next
            let s = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if s < 0 { lastError = .connect(errno); continue }
            var one: Int32 = 1
            _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let r = Glibc.connect(s, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
            if r == 0 { fd = s; return nil }
            let err = errno
            if err != EINPROGRESS { _ = Glibc.close(s); lastError = .connect(err); continue }
            switch waitFor(s, events: Int16(POLLOUT), deadline: deadline) {
            case .timeout:
                _ = Glibc.close(s)
                return .timeout
            case .error(let e):
                _ = Glibc.close(s); lastError = .connect(e); continue
            case .ready:
                var soErr: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(s, SOL_SOCKET, SO_ERROR, &soErr, &len)
                if soErr != 0 { _ = Glibc.close(s); lastError = .connect(soErr); continue }
                fd = s
                return nil
            }
        }
        return lastError
    }

    private enum WaitResult { case ready, timeout, error(Int32) }

    private func waitFor(_ s: Int32, events: Int16, deadline: UInt64) -> WaitResult {
        while true {
            let now = monotonicNanos()
            if now >= deadline { return .timeout }
            let remainingMs = (deadline - now + 999_999) / 1_000_000
            var p = pollfd(fd: s, events: events, revents: 0)
            let n = poll(&p, 1, Int32(min(remainingMs, UInt64(Int32.max))))
            if n < 0 {
                if errno == EINTR { continue }
                return .error(errno)
            }
            if n == 0 { continue }  // loop re-checks the deadline
            return .ready
        }
    }

    // MARK: - Send

    private func sendAll(_ bytes: [UInt8], deadline: UInt64) -> TransportError? {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return send(fd, base + off, raw.count - off, Int32(MSG_NOSIGNAL))
            }
            if n > 0 { off += n; continue }
            let err = errno
            if n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
                switch waitFor(fd, events: Int16(POLLOUT), deadline: deadline) {
                case .ready: continue
                case .timeout: return .timeout
                case .error(let e): return .io(e)
                }
            }
            return .io(n < 0 ? err : EPIPE)
        }
        return nil
    }

    // MARK: - Receive

    /// Reads more bytes into `buffered`; `.closed` on EOF.
    private func fill(deadline: UInt64) -> TransportError? {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return recv(fd, base, raw.count, 0)
            }
            if n > 0 { buffered.append(contentsOf: chunk[0..<n]); return nil }
            if n == 0 { return .closed }
            let err = errno
            if err == EAGAIN || err == EWOULDBLOCK || err == EINTR {
                switch waitFor(fd, events: Int16(POLLIN), deadline: deadline) {
                case .ready: continue
                case .timeout: return .timeout
                case .error(let e): return .io(e)
                }
            }
            return .io(err)
        }
    }

    private func readResponse(deadline: UInt64) -> Result<(Response, Bool), TransportError> {
        while true {
            // Head.
            var headEnd: Int?
            while headEnd == nil {
                headEnd = OTLPHTTPClient.findHeadEnd(buffered)
                if headEnd != nil { break }
                if buffered.count > OTLPHTTPClient.maxHeadBytes { return .failure(.malformed("head too large")) }
                if let e = fill(deadline: deadline) { return .failure(e) }
            }
            guard let end = headEnd else { return .failure(.malformed("no head")) }
            let headBytes = Array(buffered[0..<end])
            buffered.removeFirst(end + 4)
            guard let (status, version, headers) = OTLPHTTPClient.parseHead(headBytes) else {
                return .failure(.malformed("bad status line or header"))
            }
            if status >= 100 && status < 200 { continue }  // 100 Continue and friends
            var resp = Response(status: status, headers: headers, body: [])
            let connection = resp.header("connection")?.lowercased() ?? ""
            var keepAlive = version == "HTTP/1.1" ? !connection.contains("close") : connection.contains("keep-alive")
            if status == 204 || status == 304 { return .success((resp, keepAlive)) }
            let te = resp.header("transfer-encoding")?.lowercased()
            if let te, te.contains("chunked") {
                switch readChunked(deadline: deadline) {
                case .success(let (b, complete)): resp.body = b; if !complete { keepAlive = false }
                case .failure(let e): return .failure(e)
                }
            } else if let cl = resp.header("content-length") {
                guard let len = Int(cl.trimmingWhitespace()), len >= 0 else {
                    return .failure(.malformed("bad Content-Length"))
                }
                let keep = min(len, OTLPHTTPClient.maxBodyBytes)
                while buffered.count < keep {
                    if let e = fill(deadline: deadline) { return .failure(e) }
                }
                resp.body = Array(buffered[0..<keep])
                buffered.removeFirst(keep)
                if len > keep { keepAlive = false }  // the rest is not worth reading
            } else {
                // Delimited by close.
                while buffered.count < OTLPHTTPClient.maxBodyBytes {
                    if let e = fill(deadline: deadline) {
                        if e == .closed { break }
                        return .failure(e)
                    }
                }
                resp.body = Array(buffered.prefix(OTLPHTTPClient.maxBodyBytes))
                buffered.removeAll()
                keepAlive = false
            }
            return .success((resp, keepAlive))
        }
    }

    /// Chunked body, bounded: returns (body, complete). Trailers are skipped.
    private func readChunked(deadline: UInt64) -> Result<([UInt8], Bool), TransportError> {
        var body: [UInt8] = []
        while true {
            // Chunk size line.
            var lineEnd: Int?
            while true {
                lineEnd = OTLPHTTPClient.findCRLF(buffered, from: 0)
                if lineEnd != nil { break }
                if buffered.count > 4096 { return .failure(.malformed("chunk size line too long")) }
                if let e = fill(deadline: deadline) { return .failure(e) }
            }
            guard let le = lineEnd else { return .failure(.malformed("chunk")) }
            var sizeText = Array(buffered[0..<le])
            if let semi = sizeText.firstIndex(of: 0x3B) { sizeText = Array(sizeText[0..<semi]) }
            buffered.removeFirst(le + 2)
            let trimmed = String(decoding: sizeText, as: UTF8.self).trimmingWhitespace()
            guard !trimmed.isEmpty, trimmed.count <= 15, let size = Int(trimmed, radix: 16), size >= 0 else {
                return .failure(.malformed("bad chunk size"))
            }
            if size == 0 {
                // Trailers until an empty line.
                while true {
                    guard let l = OTLPHTTPClient.findCRLF(buffered, from: 0) else {
                        if buffered.count > OTLPHTTPClient.maxHeadBytes { return .failure(.malformed("trailers too large")) }
                        if let e = fill(deadline: deadline) { return .failure(e) }
                        continue
                    }
                    buffered.removeFirst(l + 2)
                    if l == 0 { return .success((body, true)) }
                }
            }
            if body.count + size > OTLPHTTPClient.maxBodyBytes {
                return .success((body, false))  // too large: keep what we have, drop the connection
            }
            while buffered.count < size + 2 {
                if let e = fill(deadline: deadline) { return .failure(e) }
            }
            body.append(contentsOf: buffered[0..<size])
            guard buffered[size] == 0x0D, buffered[size + 1] == 0x0A else {
                return .failure(.malformed("chunk not followed by CRLF"))
            }
            buffered.removeFirst(size + 2)
        }
    }

    static func findHeadEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        var i = 0
        while i + 3 < b.count {
            if b[i] == 0x0D && b[i + 1] == 0x0A && b[i + 2] == 0x0D && b[i + 3] == 0x0A { return i }
            i += 1
        }
        return nil
    }

    static func findCRLF(_ b: [UInt8], from: Int) -> Int? {
        var i = from
        while i + 1 < b.count {
            if b[i] == 0x0D && b[i + 1] == 0x0A { return i }
            i += 1
        }
        return nil
    }

    /// Status line and header fields; nil when the status line is not `HTTP/1.x NNN …`.
    static func parseHead(_ bytes: [UInt8]) -> (Int, String, [(String, String)])? {
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        guard !lines.isEmpty else { return nil }
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3,
              let status = Int(parts[1]), status >= 100, status <= 999 else { return nil }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }  // tolerate junk lines
            let name = String(line[..<colon]).trimmingWhitespace()
            let value = String(line[line.index(after: colon)...]).trimmingWhitespace()
            headers.append((name, value))
        }
        return (status, String(parts[0]), headers)
    }
}

func errnoText(_ e: Int32) -> String {
    guard let p = strerror(e) else { return "errno \(e)" }
    return String(cString: p) + " (errno \(e))"
}
