#if canImport(Glibc)
import Glibc
#endif
import CHiredis
import EventLoop
import OutriderCore
import Telemetry

/// Why a Redis round trip gave no counts.
enum RedisFailure: String, Error, Sendable {
    /// No connection (down, refused, backing off before the next attempt).
    case unavailable
    /// No answer within `timeout`.
    case timeout
    /// The connection dropped with the command in flight.
    case disconnected
    /// Redis answered with an error (or something that is not an integer).
    case replyError = "reply_error"
}

/// Counters of the Redis side (shared by every connection of the process).
final class RedisMetrics: Sendable {
    let errors: CounterFamily
    let latency: Histogram
    let connects: CounterFamily
    init(_ r: MetricsRegistry) {
        errors = r.counter("outrider_ratelimit_redis_errors_total", help: "Global-limit checks that got no answer from Redis, by reason.", labelNames: ["reason"])
        latency = r.histogram("outrider_ratelimit_redis_latency_seconds", help: "Time from sending a global-limit check to Redis's answer.",
                              buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]).labels()
        connects = r.counter("outrider_ratelimit_redis_connects_total", help: "Connection attempts to Redis, by result.", labelNames: ["result"])
    }
}

/// One worker's connection to one Redis server, driven by the worker's event loop through
/// hiredis's async API: hiredis formats commands and parses replies; its adapter hooks
/// (addRead/delRead/addWrite/delWrite/cleanup) map to a level-triggered registration on the
/// loop, so readiness calls `redisAsyncHandleRead/Write` and reply callbacks run on the loop
/// thread. Never blocks: a command waits at most `timeout` (a loop timer), a dead server costs
/// one refused connect per backoff period, and requests while it is down are answered at once
/// (`submit` returns false: the caller applies the failure mode without pausing).
///
/// Loop-confined: created, used and called back on one worker's thread only.
final class RedisConnection: EventHandler {
    private enum State { case idle, connecting, connected }

    let host: String
    let port: Int32
    private let loop: EventLoop
    private let shard: Int
    private let metrics: RedisMetrics
    private let connectTimeout: UInt64
    private let maxBackoff: UInt64

    private var state = State.idle
    private var ac: UnsafeMutablePointer<redisAsyncContext>?
    private var fd: Int32 = -1
    private var registered = false
    private var interest: UInt32 = 0
    private var retryAt: UInt64 = 0
    private var backoff: UInt64 = 0
    private var retryTimer: TimerID?
    private var connectTimer: TimerID?
    private var consecutiveTimeouts = 0
    /// Set while hiredis tears the context down (NULL replies, cleanup): no new commands.
    private var dying = false

    private struct Pending {
        var counts: [Int64]
        var outstanding: Int
        var failed: RedisFailure?
        var timer: TimerID
        var sentAt: UInt64
        var completion: (Result<[Int64], RedisFailure>) -> Void
    }
    private var pending: [UInt64: Pending] = [:]
    private var nextToken: UInt64 = 1

    /// Retained once for the C side (`ac->data`) and never released: connections live as long
    /// as their worker, in `WorkerServices.state`.
    private var opaque: UnsafeMutableRawPointer?

    init(host: String, port: Int32, loop: EventLoop, shard: Int, metrics: RedisMetrics,
         connectTimeout: UInt64, maxBackoff: UInt64) {
        self.host = host; self.port = port; self.loop = loop; self.shard = shard; self.metrics = metrics
        self.connectTimeout = connectTimeout; self.maxBackoff = maxBackoff
    }

    var isConnected: Bool { state == .connected }

    // MARK: commands

    /// `INCRBY key 1` + `EXPIRE key ttl` for each key, pipelined; `completion` gets the counts
    /// in key order (on the loop, never before this returns). False when Redis is not usable
    /// now: the completion will not be called.
    func incr(_ keys: [(key: String, ttl: UInt64)], timeout: UInt64,
              completion: @escaping (Result<[Int64], RedisFailure>) -> Void) -> Bool {
        guard !keys.isEmpty, keys.count < 256 else { return false }
        if state == .idle { connectIfDue() }
        guard state != .idle, !dying, let ac else { return false }
        let token = nextToken
        nextToken &+= 1
        var sent = 0
        for (i, k) in keys.enumerated() {
            let priv = UnsafeMutableRawPointer(bitPattern: UInt((token << 8) | UInt64(i)))
            let ttl = String(k.ttl)
            let rc1 = command(ac, replyThunk, priv, "INCRBY", k.key, "1")
            let rc2 = command(ac, nil, nil, "EXPIRE", k.key, ttl)
            if rc1 != chiredis_ok() || rc2 != chiredis_ok() { break }
            sent += 1
        }
        if sent < keys.count {
            // The context refused (disconnecting): replies already queued for this token are
            // ignored because the token is never registered.
            return false
        }
        let timer = loop.schedule(afterNanos: timeout) { [weak self] in self?.timedOut(token) }
        pending[token] = Pending(counts: Array(repeating: 0, count: keys.count), outstanding: keys.count, failed: nil,
                                 timer: timer, sentAt: monotonicNanos(), completion: completion)
        return true
    }

    private func command(_ ac: UnsafeMutablePointer<redisAsyncContext>, _ fn: (@convention(c) (UnsafeMutablePointer<redisAsyncContext>?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void)?,
                         _ priv: UnsafeMutableRawPointer?, _ a0: String, _ a1: String, _ a2: String) -> Int32 {
        a0.withCString { p0 in
            a1.withCString { p1 in
                a2.withCString { p2 in
                    chiredis_command3(ac, fn, priv, p0, a0.utf8.count, p1, a1.utf8.count, p2, a2.utf8.count)
                }
            }
        }
    }

    /// A reply (or NULL when hiredis drops the connection) for INCRBY `index` of `token`.
    fileprivate func onReply(_ reply: UnsafeMutableRawPointer?, privdata: UInt) {
        let token = UInt64(privdata) >> 8
        let index = Int(privdata & 0xff)
        guard var p = pending[token], index < p.counts.count else { return }
        if let reply {
            if chiredis_reply_type(reply) == chiredis_reply_integer_type() {
                p.counts[index] = Int64(chiredis_reply_integer(reply))
            } else {
                let message = chiredis_reply_type(reply) == chiredis_reply_error_type() ? String(cString: chiredis_reply_str(reply)) : "unexpected reply type"
                Diagnostics.log(.warn, "ratelimit: redis \(host):\(port): \(message)")
                p.failed = p.failed ?? .replyError
            }
        } else {
            dying = true
            p.failed = p.failed ?? .disconnected
        }
        p.outstanding -= 1
        if p.outstanding > 0 { pending[token] = p; return }
        pending[token] = nil
        loop.cancel(p.timer)
        consecutiveTimeouts = 0
        if let f = p.failed {
            metrics.errors.labels(f.rawValue).increment(shard: shard)
        } else {
            metrics.latency.observe(Double(monotonicNanos() &- p.sentAt) / 1e9, shard: shard)
        }
        let result: Result<[Int64], RedisFailure> = p.failed.map { .failure($0) } ?? .success(p.counts)
        let completion = p.completion
        // Out of hiredis's callback before resuming streams: no re-entry into the context.
        loop.deferWork { completion(result) }
    }

    private func timedOut(_ token: UInt64) {
        guard let p = pending.removeValue(forKey: token) else { return }
        metrics.errors.labels(RedisFailure.timeout.rawValue).increment(shard: shard)
        consecutiveTimeouts += 1
        p.completion(.failure(.timeout))
        // A server that stopped answering: drop the connection so the next requests fail fast
        // (failure mode at once) instead of each waiting for the timeout.
        if consecutiveTimeouts >= 3, let ac {
            Diagnostics.log(.warn, "ratelimit: redis \(host):\(port) stopped answering; reconnecting")
            consecutiveTimeouts = 0
            loop.deferWork { [weak self] in
                guard let self, self.ac == ac else { return }
                redisAsyncFree(ac)
            }
        }
    }

    // MARK: connection

    private func connectIfDue() {
        guard state == .idle, loop.now >= retryAt else { return }
        connect()
    }

    private func connect() {
        if let t = retryTimer { loop.cancel(t); retryTimer = nil }
        guard let ctx = host.withCString({ redisAsyncConnect($0, port) }) else {
            failedAttempt("cannot allocate a context")
            return
        }
        if chiredis_err(ctx) != 0 {
            let message = String(cString: chiredis_errstr(ctx))
            redisAsyncFree(ctx)
            failedAttempt(message)
            return
        }
        if opaque == nil { opaque = Unmanaged.passRetained(self).toOpaque() }
        chiredis_attach(ctx, opaque, addReadThunk, delReadThunk, addWriteThunk, delWriteThunk, cleanupThunk)
        ac = ctx
        fd = chiredis_fd(ctx)
        state = .connecting
        dying = false
        _ = redisAsyncSetConnectCallback(ctx, connectThunk)
        connectTimer = loop.schedule(afterNanos: connectTimeout) { [weak self] in
            guard let self, self.state == .connecting, self.ac == ctx else { return }
            Diagnostics.log(.warn, "ratelimit: redis \(self.host):\(self.port): connect timed out")
            redisAsyncFree(ctx)
        }
    }

    fileprivate func onConnect(status: Int32) {
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        if status == chiredis_ok() {
            state = .connected
            backoff = 0
            consecutiveTimeouts = 0
            metrics.connects.labels("ok").increment(shard: shard)
            Diagnostics.log(.info, "ratelimit: connected to redis \(host):\(port) (worker \(shard))")
        } else if let ac {
            Diagnostics.log(.warn, "ratelimit: redis \(host):\(port): connect failed: \(String(cString: chiredis_errstr(ac)))")
        }
        // On failure hiredis frees the context right after this callback (cleanup follows).
    }

    /// hiredis is freeing the context: forget the fd and plan the next attempt.
    fileprivate func onCleanup() {
        if registered, fd >= 0 { loop.deregister(fd: fd) }
        registered = false
        interest = 0
        fd = -1
        ac = nil
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        let wasConnected = state == .connected
        state = .idle
        dying = false
        if wasConnected {
            Diagnostics.log(.warn, "ratelimit: lost redis \(host):\(port); reconnecting")
            backoff = 0
            scheduleRetry()
        } else {
            failedAttempt(nil)
        }
        // Commands still waiting (hiredis answered them NULL before this) are settled there;
        // anything left is failed now.
        for (token, p) in pending {
            pending[token] = nil
            loop.cancel(p.timer)
            metrics.errors.labels(RedisFailure.disconnected.rawValue).increment(shard: shard)
            let c = p.completion
            loop.deferWork { c(.failure(.disconnected)) }
        }
    }

    private func failedAttempt(_ message: String?) {
        metrics.connects.labels("failed").increment(shard: shard)
        if let message { Diagnostics.log(.warn, "ratelimit: redis \(host):\(port): \(message)") }
        state = .idle
        // 50 ms, doubling, capped; jittered so workers and replicas do not retry in step.
        backoff = backoff == 0 ? 50_000_000 : min(maxBackoff, backoff &* 2)
        scheduleRetry()
    }

    private func scheduleRetry() {
        let jitter = backoff / 4 > 0 ? UInt64.random(in: 0...(backoff / 4)) : 0
        retryAt = loop.now &+ backoff &+ jitter
        if let t = retryTimer { loop.cancel(t) }
        retryTimer = loop.schedule(at: retryAt) { [weak self] in
            guard let self else { return }
            self.retryTimer = nil
            if self.state == .idle { self.connect() }
        }
    }

    // MARK: event loop adapter

    fileprivate func setInterest(add: UInt32, remove: UInt32) {
        guard ac != nil, fd >= 0 else { return }
        let next = (interest | add) & ~remove
        if registered && next == interest { return }
        interest = next
        do {
            if registered {
                try loop.modify(fd: fd, events: next)
            } else {
                try loop.register(fd: fd, handler: self, events: next)
                registered = true
            }
        } catch {
            Diagnostics.log(.error, "ratelimit: redis fd registration failed: \(error)")
        }
    }

    func handleEvent(_ events: UInt32) {
        guard let ctx = ac else { return }
        if events & (IOEvent.readable | IOEvent.hangup | IOEvent.error | IOEvent.readHangup) != 0 {
            redisAsyncHandleRead(ctx)
        }
        // The read may have freed the context (EOF, error): check before writing.
        if events & (IOEvent.writable | IOEvent.error) != 0, let again = ac, again == ctx {
            redisAsyncHandleWrite(ctx)
        }
    }
}

// MARK: C callbacks: recover the connection from `ac->data` / `ev.data` and forward.

private func connection(_ data: UnsafeMutableRawPointer?) -> RedisConnection? {
    guard let data else { return nil }
    return Unmanaged<RedisConnection>.fromOpaque(data).takeUnretainedValue()
}

private func replyThunk(_ ac: UnsafeMutablePointer<redisAsyncContext>?, _ reply: UnsafeMutableRawPointer?, _ privdata: UnsafeMutableRawPointer?) {
    guard let ac, let c = connection(chiredis_data(ac)) else { return }
    c.onReply(reply, privdata: UInt(bitPattern: privdata))
}

private func connectThunk(_ ac: UnsafePointer<redisAsyncContext>?, _ status: Int32) {
    guard let ac, let c = connection(chiredis_data(ac)) else { return }
    c.onConnect(status: status)
}

private func addReadThunk(_ data: UnsafeMutableRawPointer?) { connection(data)?.setInterest(add: IOEvent.readable, remove: 0) }
private func delReadThunk(_ data: UnsafeMutableRawPointer?) { connection(data)?.setInterest(add: 0, remove: IOEvent.readable) }
private func addWriteThunk(_ data: UnsafeMutableRawPointer?) { connection(data)?.setInterest(add: IOEvent.writable, remove: 0) }
private func delWriteThunk(_ data: UnsafeMutableRawPointer?) { connection(data)?.setInterest(add: 0, remove: IOEvent.writable) }
private func cleanupThunk(_ data: UnsafeMutableRawPointer?) { connection(data)?.onCleanup() }

/// The worker's Redis connections, by address (one per distinct server), in `WorkerServices.state`.
final class RedisConnections {
    var byAddress: [String: RedisConnection] = [:]

    static func connection(for settings: RedisSettings, worker: WorkerServices, metrics: RedisMetrics) -> RedisConnection {
        let id = ObjectIdentifier(RedisConnections.self)
        let all: RedisConnections
        if let existing = worker.state[id] as? RedisConnections { all = existing } else {
            all = RedisConnections()
            worker.state[id] = all
        }
        let key = "\(settings.host):\(settings.port)"
        if let c = all.byAddress[key] { return c }
        let c = RedisConnection(host: settings.host, port: Int32(settings.port), loop: worker.loop, shard: worker.shard,
                                metrics: metrics, connectTimeout: settings.connectTimeoutNanos, maxBackoff: settings.maxBackoffNanos)
        all.byAddress[key] = c
        return c
    }
}
