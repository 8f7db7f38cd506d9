#if canImport(Glibc)
import Glibc
#endif
import OutriderCore

/// The bounded hand-off between the proxy's worker loops (producers) and the exporter thread
/// (the one consumer): a ring buffer behind a mutex, with a condition variable the exporter
/// sleeps on.
///
/// Why a lock is acceptable here: this is one of the few documented cross-thread hand-offs in
/// the process (ARCHITECTURE.md), and the critical section is O(1) — a slot store and two
/// integer updates, no allocation (the ring is preallocated), no I/O, no syscalls except the
/// rare `signal` when a batch becomes full. Producers never wait for the consumer: the
/// exporter holds the lock only to move up to one batch out (slot moves, O(batch)) and never
/// while exporting. A `pthread_mutex` is used rather than `Synchronization.Mutex` because the
/// exporter needs a condition variable on the same lock (Mutex has none), so it can sleep
/// until "a batch is full", "the schedule delay elapsed" or "shutdown" without busy-waiting.
final class SpanQueue: @unchecked Sendable {
    // All mutable state below is guarded by `mutex`.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var ring: [FinishedSpan?]
    private var head = 0
    private var count = 0
    private var inFlight = 0
    private var stopping = false
    private var closed = false
    private var flushDeadline: UInt64 = 0
    private var workerFinished = false

    let capacity: Int
    let batchSize: Int

    init(capacity: Int, batchSize: Int) {
        self.capacity = max(capacity, 1)
        self.batchSize = min(max(batchSize, 1), max(capacity, 1))
        ring = Array(repeating: nil, count: self.capacity)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        // Deadlines are monotonic; a wall-clock jump must not stall or hurry the exporter.
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    @inline(__always)
    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    enum PushResult { case queued, full, closed }

    /// O(1). Wakes the exporter only when a full batch just became available.
    func push(_ span: FinishedSpan) -> PushResult {
        pthread_mutex_lock(mutex)
        if closed { pthread_mutex_unlock(mutex); return .closed }
        if count >= capacity { pthread_mutex_unlock(mutex); return .full }
        var tail = head + count
        if tail >= capacity { tail -= capacity }
        ring[tail] = span
        count += 1
        let wake = count == batchSize
        pthread_mutex_unlock(mutex)
        if wake { pthread_cond_signal(cond) }
        return .queued
    }

    /// Queued spans plus the batch being exported.
    var depth: Int { locked { count + inFlight } }

    /// Waits until a full batch is queued, `deadline` passes or shutdown starts, then moves up
    /// to `batchSize` spans out and marks them in flight. Returns an empty batch on timeout
    /// with nothing queued. `stopping`/`flushDeadline` report the shutdown state.
    func takeBatch(waitUntil deadline: UInt64) -> (batch: [FinishedSpan], stopping: Bool, flushDeadline: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !stopping && count < batchSize {
            if monotonicNanos() >= deadline { break }
            timedWait(until: deadline)
        }
        let n = min(count, batchSize)
        var batch: [FinishedSpan] = []
        batch.reserveCapacity(n)
        for _ in 0..<n {
            if let s = ring[head] { batch.append(s) }
            ring[head] = nil
            head += 1
            if head == capacity { head = 0 }
        }
        count -= n
        inFlight = batch.count
        return (batch, stopping, flushDeadline)
    }

    /// The in-flight batch is accounted for (exported or dropped).
    func finishInFlight() { locked { inFlight = 0 } }

    /// Sleeps until `until`; returns early when shutdown starts, unless `wakeOnStop` is false.
    /// Returns the shutdown state.
    func sleep(until: UInt64, wakeOnStop: Bool) -> (stopping: Bool, flushDeadline: UInt64) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while monotonicNanos() < until {
            if wakeOnStop && stopping { break }
            timedWait(until: until)
        }
        return (stopping, flushDeadline)
    }

    var shutdownState: (stopping: Bool, flushDeadline: UInt64) { locked { (stopping, flushDeadline) } }

    /// Starts shutdown: no more spans are accepted, the exporter flushes until `flushDeadline`.
    func beginShutdown(flushDeadline: UInt64) {
        locked {
            closed = true
            if !stopping { self.flushDeadline = flushDeadline }
            stopping = true
        }
        pthread_cond_broadcast(cond)
    }

    /// The exporter thread is about to return.
    func markWorkerFinished() {
        locked { workerFinished = true }
        pthread_cond_broadcast(cond)
    }

    /// Waits until the exporter thread called `markWorkerFinished` or `until` passed.
    func waitWorkerFinished(until: UInt64) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !workerFinished && monotonicNanos() < until { timedWait(until: until) }
        return workerFinished
    }

    /// Removes everything still queued (not the in-flight batch); returns how many.
    func drainAll() -> Int {
        locked {
            let n = count
            for i in 0..<capacity { ring[i] = nil }
            head = 0
            count = 0
            return n
        }
    }

    /// Caller holds `mutex`.
    private func timedWait(until deadline: UInt64) {
        var ts = timespec()
        ts.tv_sec = Int(min(deadline / 1_000_000_000, UInt64(Int.max)))
        ts.tv_nsec = Int(deadline % 1_000_000_000)
        _ = pthread_cond_timedwait(cond, mutex, &ts)
    }
}
