import Testing
import Synchronization
@testable import EventLoop
import OutriderCore

/// Runs `loop` on its own thread until `done` is set by a task on the loop.
private func runLoop(_ body: @escaping @Sendable (EventLoop) -> Void) throws -> Bool {
    let finished = Atomic<Bool>(false)
    let box = LoopBox()
    try startThread(name: "test-loop") {
        guard let loop = try? EventLoop(index: 0) else { return }
        box.remote.withLock { $0 = loop.remote }
        body(loop)
        loop.run()
        finished.store(true, ordering: .releasing)
    }
    let deadline = monotonicNanos() + 5_000_000_000
    while !finished.load(ordering: .acquiring) && monotonicNanos() < deadline { usleep(1000) }
    return finished.load(ordering: .acquiring)
}

/// Appends its name to `log` when it writes, then runs `then` (on the loop thread).
private final class RecordingWriter: DeferredWriter, @unchecked Sendable {
    let name: String
    let log: WriteLog
    let then: () -> Void
    init(_ name: String, _ log: WriteLog, then: @escaping () -> Void = {}) {
        self.name = name; self.log = log; self.then = then
    }
    func writeDeferred() {
        log.lines.withLock { $0.append(name) }
        then()
    }
}

private final class WriteLog: Sendable {
    let lines = Mutex<[String]>([])
}

private final class LoopBox: Sendable {
    let remote = Mutex<EventLoopRemote?>(nil)
}

#if canImport(Glibc)
import Glibc
#endif

@Suite struct EventLoopTests {
    @Test func timersFireInDeadlineOrderAndCancelledOnesDoNot() throws {
        let order = Mutex<[Int]>([])
        let ok = try runLoop { loop in
            loop.schedule(afterNanos: 30_000_000) { order.withLock { $0.append(3) }; loop.stop() }
            loop.schedule(afterNanos: 10_000_000) { order.withLock { $0.append(1) } }
            let cancelled = loop.schedule(afterNanos: 5_000_000) { order.withLock { $0.append(99) } }
            loop.schedule(afterNanos: 20_000_000) { order.withLock { $0.append(2) } }
            loop.cancel(cancelled)
        }
        #expect(ok)
        #expect(order.withLock { $0 } == [1, 2, 3])
    }

    @Test func deferredWorkRunsAfterTheCurrentIteration() throws {
        let seen = Mutex<[String]>([])
        let ok = try runLoop { loop in
            loop.deferWork {
                seen.withLock { $0.append("first") }
                loop.deferWork { seen.withLock { $0.append("second") }; loop.stop() }
            }
        }
        #expect(ok)
        #expect(seen.withLock { $0 } == ["first", "second"])
    }

    @Test func writersRunOnceTheIterationsWorkIsDoneAndMayQueueMore() throws {
        let log = WriteLog()
        let ok = try runLoop { loop in
            let last = RecordingWriter("write c", log) { loop.stop() }
            let first = RecordingWriter("write a", log)
            // A writer queued by a write runs next iteration, without the loop blocking in
            // epoll first (no fd or timer would ever wake it here).
            let second = RecordingWriter("write b", log) { loop.writeAtEndOfIteration(last) }
            loop.deferWork {
                loop.writeAtEndOfIteration(first)
                log.lines.withLock { $0.append("deferred") }
                loop.writeAtEndOfIteration(second)
            }
        }
        #expect(ok)
        #expect(log.lines.withLock { $0 } == ["deferred", "write a", "write b", "write c"])
    }

    @Test func remoteExecuteWakesABlockedLoop() throws {
        let ran = Atomic<Int>(0)
        let finished = Atomic<Bool>(false)
        let remoteBox = LoopBox()
        try startThread(name: "test-loop") {
            guard let loop = try? EventLoop(index: 0) else { return }
            remoteBox.remote.withLock { $0 = loop.remote }
            loop.run()   // no timers: blocks in epoll_wait until woken
            finished.store(true, ordering: .releasing)
        }
        var remote: EventLoopRemote?
        let deadline = monotonicNanos() + 5_000_000_000
        while remote == nil && monotonicNanos() < deadline { remote = remoteBox.remote.withLock { $0 }; usleep(1000) }
        let r = try #require(remote)
        for _ in 0..<3 { r.execute { _ in ran.add(1, ordering: .relaxed) } }
        r.execute { loop in loop.stop() }
        while !finished.load(ordering: .acquiring) && monotonicNanos() < deadline { usleep(1000) }
        let didFinish = finished.load(ordering: .acquiring)
        let count = ran.load(ordering: .relaxed)
        #expect(didFinish)
        #expect(count == 3)
    }

    @Test func socketPairEchoThroughTheLoop() throws {
        // A listener, a non-blocking connect and accept, all through the Socket wrapper.
        let addr = try ResolvedAddress(SocketAddressSpec(host: "127.0.0.1", port: 0))
        let lfd = try Socket.listen(addr, reusePort: false)
        defer { close(lfd) }
        var sa = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(lfd, $0, &len) } }
        let port = UInt16(bigEndian: sa.sin_port)
        let (cfd, _) = try Socket.connect(try ResolvedAddress(SocketAddressSpec(host: "127.0.0.1", port: port)))
        defer { close(cfd) }
        var accepted: Int32 = -1
        let deadline = monotonicNanos() + 2_000_000_000
        while accepted < 0 && monotonicNanos() < deadline {
            if case .done(let c) = try Socket.accept(lfd) { accepted = c.fd; #expect(c.peer == "127.0.0.1") } else { usleep(1000) }
        }
        #expect(accepted >= 0)
        defer { close(accepted) }
        let msg: [UInt8] = Array("ping".utf8)
        while monotonicNanos() < deadline {
            if case .done(let n) = try msg.withUnsafeBytes({ try Socket.write(cfd, from: $0) }), n == 4 { break }
            usleep(1000)
        }
        var buf = [UInt8](repeating: 0, count: 16)
        var got = 0
        while got == 0 && monotonicNanos() < deadline {
            if case .done(let n) = try buf.withUnsafeMutableBytes({ try Socket.read(accepted, into: $0) }) { got = n } else { usleep(1000) }
        }
        #expect(Array(buf[0..<got]) == msg)
        let bound = try ResolvedAddress(SocketAddressSpec(host: "127.0.0.1", port: port))
        #expect(throws: SystemError.self) { _ = try Socket.listen(bound, reusePort: false) }
    }

    @Test func systemErrorNamesTheCallAndErrno() {
        let e = SystemError("connect(127.0.0.1:1)", errno: ECONNREFUSED)
        #expect(e.description.contains("connect(127.0.0.1:1)"))
        #expect(e.description.contains("errno \(ECONNREFUSED)"))
    }
}
