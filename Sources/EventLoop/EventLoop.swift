#if canImport(Glibc)
import Glibc
#endif
import CLinux
import OutriderCore
import Synchronization

/// Something registered with a loop for readiness events on one file descriptor.
/// Called on the loop's thread only.
public protocol EventHandler: AnyObject {
    /// `events` is the epoll bit set (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).
    func handleEvent(_ events: UInt32)
}

public struct TimerID: Hashable, Sendable {
    fileprivate let raw: UInt64
}

/// The thread-safe face of a loop: wake it and hand it work from other threads.
/// Synchronization: tasks go through a Mutex-protected array; the eventfd write wakes epoll_wait.
public final class EventLoopRemote: Sendable {
    fileprivate let wakeFD: Int32
    fileprivate let tasks = Mutex<[@Sendable (EventLoop) -> Void]>([])

    fileprivate init(wakeFD: Int32) { self.wakeFD = wakeFD }

    /// Runs `task` on the loop's thread, soon. Never blocks the caller beyond a short lock.
    public func execute(_ task: @escaping @Sendable (EventLoop) -> Void) {
        tasks.withLock { $0.append(task) }
        wake()
    }

    public func wake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(wakeFD, $0.baseAddress, 8) }
    }
}

/// One epoll event loop, confined to one thread: a selector, timers, deferred callbacks and
/// cross-thread tasks. One iteration (h2o's evloop, HAProxy's run_poll_loop):
/// poll with the timeout set to the next deadline → dispatch I/O events → run expired timers
/// → run deferred callbacks. Registrations are edge-triggered unless asked otherwise, so
/// interest never has to be changed on the request path.
public final class EventLoop {
    public let index: Int
    public let remote: EventLoopRemote
    private let epfd: Int32
    private let wakeFD: Int32

    private struct Slot {
        var handler: EventHandler?
        var generation: UInt32 = 0
    }
    /// Indexed by fd. The generation in the epoll data word lets us ignore stale events for a
    /// reused fd number (swift-nio's SelectorEpoll does the same).
    private var slots: [Slot] = []

    private var timerHeap = TimerHeap()
    private var timerCallbacks: [UInt64: () -> Void] = [:]
    private var nextTimerID: UInt64 = 1

    private var deferred: [() -> Void] = []
    private var writers: [DeferredWriter] = []
    private var stopped = false

    /// Monotonic time cached once per iteration: cheap enough to read on every request.
    public private(set) var now: UInt64

    private let eventCapacity = 256
    private let events: UnsafeMutableRawPointer

    public init(index: Int) throws(SystemError) {
        self.index = index
        epfd = Int32(try systemCallChecked("epoll_create1", { Int(epoll_create1(Int32(EPOLL_CLOEXEC))) }))
        wakeFD = Int32(try systemCallChecked("eventfd", { Int(eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))) }))
        remote = EventLoopRemote(wakeFD: wakeFD)
        events = UnsafeMutableRawPointer.allocate(byteCount: clinux_epoll_event_size() * eventCapacity, alignment: 8)
        now = monotonicNanos()
        try systemCallChecked("epoll_ctl(eventfd)", {
            Int(clinux_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, EPOLLIN.rawValue, UInt64(UInt32.max)))
        })
    }

    deinit {
        events.deallocate()
        close(epfd)
        close(wakeFD)
    }

    // MARK: registration

    /// Registers `fd` for `events` (default: in, out, rdhup, edge-triggered).
    public func register(fd: Int32, handler: EventHandler,
                         events: UInt32 = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue) throws(SystemError) {
        let i = Int(fd)
        if i >= slots.count { slots.append(contentsOf: repeatElement(Slot(), count: i - slots.count + 64)) }
        slots[i].generation &+= 1
        slots[i].handler = handler
        let data = UInt64(UInt32(bitPattern: fd)) | (UInt64(slots[i].generation) << 32)
        do {
            try systemCallChecked("epoll_ctl(ADD)", { Int(clinux_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, events, data)) })
        } catch {
            slots[i].handler = nil
            throw error
        }
    }

    /// Changes the interest set (used for level-triggered listeners that pause accepting).
    public func modify(fd: Int32, events: UInt32) throws(SystemError) {
        let i = Int(fd)
        guard i < slots.count else { return }
        let data = UInt64(UInt32(bitPattern: fd)) | (UInt64(slots[i].generation) << 32)
        try systemCallChecked("epoll_ctl(MOD)", { Int(clinux_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, events, data)) })
    }

    /// Hands `fd`'s events to another handler (a connection switching protocol, e.g. HTTP/1.1
    /// seeing the HTTP/2 preface). The epoll registration stays as it is.
    public func replaceHandler(fd: Int32, with handler: EventHandler) {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i].handler != nil else { return }
        slots[i].handler = handler
    }

    /// Forgets `fd`. Call before closing it.
    public func deregister(fd: Int32) {
        let i = Int(fd)
        guard i >= 0, i < slots.count else { return }
        slots[i].handler = nil
        slots[i].generation &+= 1
        _ = clinux_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0)
    }

    // MARK: timers and deferred work

    /// Calls `callback` on this loop at or after `deadline` (monotonic ns).
    @discardableResult
    public func schedule(at deadline: UInt64, _ callback: @escaping () -> Void) -> TimerID {
        let id = nextTimerID
        nextTimerID &+= 1
        timerCallbacks[id] = callback
        timerHeap.push(.init(deadline: deadline, id: id))
        return TimerID(raw: id)
    }

    @discardableResult
    public func schedule(afterNanos delay: UInt64, _ callback: @escaping () -> Void) -> TimerID {
        schedule(at: now &+ delay, callback)
    }

    public func cancel(_ timer: TimerID) {
        timerCallbacks[timer.raw] = nil
    }

    /// Runs `work` after the current batch of events, before the next poll.
    /// Used to continue work that was cut short for fairness, and to re-drive edge-triggered
    /// sources after backpressure lifts.
    public func deferWork(_ work: @escaping () -> Void) {
        deferred.append(work)
    }

    /// Has `writer` write its buffered output once this iteration's events, timers and
    /// deferred work are done (the writer keeps itself from being queued twice). Everything a
    /// batch of events produced for one socket then goes out in one write, and a peer waiting
    /// for several responses is woken once for all of them instead of once per response:
    /// on loopback each wake-up runs the peer's receive path on this core, between two
    /// requests' work, which costs more than the write itself when requests are expensive.
    public func writeAtEndOfIteration(_ writer: DeferredWriter) {
        writers.append(writer)
    }

    /// Work run at the end of every iteration (e.g. flushing buffered access-log lines).
    public var endOfIteration: (() -> Void)?

    public func stop() { stopped = true }

    /// The object that owns this loop (a worker), for tasks handed over by `remote.execute`.
    /// Unowned-unsafe, not weak: a weak reference would put the worker on the slow refcount
    /// path. The worker outlives its loop's run (it owns the loop and runs it).
    public unowned(unsafe) var owner: AnyObject? = nil

    // MARK: running

    /// Runs until `stop()`.
    public func run() {
        while !stopped {
            runOnce()
        }
    }

    private func pollTimeoutMillis() -> Int32 {
        if !deferred.isEmpty || !writers.isEmpty { return 0 }
        // Drop cancelled entries at the top so they don't cause spurious wake-ups.
        while let top = timerHeap.earliest, timerCallbacks[top.id] == nil { _ = timerHeap.pop() }
        guard let top = timerHeap.earliest else { return -1 }
        if top.deadline <= now { return 0 }
        let ms = (top.deadline - now + 999_999) / 1_000_000
        return Int32(min(ms, 60_000))
    }

    private func runOnce() {
        let timeout = pollTimeoutMillis()
        let ev = events.assumingMemoryBound(to: epoll_event.self)
        let n = epoll_wait(epfd, ev, Int32(eventCapacity), timeout)
        now = monotonicNanos()
        if n > 0 {
            for k in 0..<Int(n) {
                let e = clinux_epoll_event_at(ev, Int32(k))
                let data = clinux_epoll_event_data(e)
                let bits = clinux_epoll_event_events(e)
                if data == UInt64(UInt32.max) {
                    drainWakeups()
                    continue
                }
                let fd = Int(UInt32(truncatingIfNeeded: data))
                let gen = UInt32(truncatingIfNeeded: data >> 32)
                guard fd < slots.count, slots[fd].generation == gen, let h = slots[fd].handler else { continue }
                h.handleEvent(bits)
            }
        }
        runTimers()
        runDeferred()
        runWriters()
        endOfIteration?()
    }

    private func drainWakeups() {
        var buf: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &buf) { read(wakeFD, $0.baseAddress, 8) }
        let tasks = remote.tasks.withLock { t -> [@Sendable (EventLoop) -> Void] in
            let taken = t
            t.removeAll()
            return taken
        }
        for t in tasks { t(self) }
    }

    private func runTimers() {
        // Bounded: timers scheduled by expiring timers wait for the next iteration.
        var budget = timerHeap.count
        while budget > 0, let top = timerHeap.earliest, top.deadline <= now {
            budget -= 1
            _ = timerHeap.pop()
            if let cb = timerCallbacks.removeValue(forKey: top.id) { cb() }
        }
    }

    private func runDeferred() {
        // Deferred work may defer more; that runs next iteration (poll timeout 0).
        guard !deferred.isEmpty else { return }
        let work = deferred
        deferred.removeAll(keepingCapacity: true)
        for w in work { w() }
    }

    private func runWriters() {
        // A write may queue another writer (a drained client resumes its upstream); that one
        // writes next iteration (poll timeout 0).
        guard !writers.isEmpty else { return }
        let queued = writers
        writers.removeAll(keepingCapacity: true)
        for w in queued { w.writeDeferred() }
    }
}

/// A connection that buffers output and writes it at the end of the loop iteration
/// (`EventLoop.writeAtEndOfIteration`).
public protocol DeferredWriter: AnyObject {
    func writeDeferred()
}

/// epoll event bits under readable names, so code above the loop never imports CLinux.
public enum IOEvent {
    public static let readable: UInt32 = EPOLLIN.rawValue
    public static let writable: UInt32 = EPOLLOUT.rawValue
    /// The peer shut down its write side (EPOLLRDHUP).
    public static let readHangup: UInt32 = EPOLLRDHUP.rawValue
    public static let hangup: UInt32 = EPOLLHUP.rawValue
    public static let error: UInt32 = EPOLLERR.rawValue
    public static let edgeTriggered: UInt32 = EPOLLET.rawValue
}
