#if canImport(Glibc)
import Glibc
#endif
import Config
import EventLoop
import Filters
import TLS
import OutriderCore

/// One worker: an event loop on its own thread with its own listeners (SO_REUSEPORT), its
/// connections, its upstream pools and its scratch buffer. Nothing here is shared with
/// other workers, so the request path takes no locks.
final class Worker {
    /// The largest request head the parser is allowed to buffer (bounded by the scratch size).
    static let maxHeadBytes = 96 * 1024
    static let scratchSize = 128 * 1024

    let index: Int
    let loop: EventLoop
    let shared: ProxyShared
    private(set) var snapshot: ConfigSnapshot
    let scratch: UnsafeMutableRawBufferPointer
    let random = FastRandom()
    /// What filters may use of this worker (loop, shard, per-worker state).
    private(set) lazy var services = WorkerServices(loop: loop, shard: index, random: random)
    var logBuffer: [UInt8] = []

    private var listeners: [ListenerHandler] = []
    private var connections: [ObjectIdentifier: any ClientConnection] = [:]
    private var pools: [String: UpstreamPool] = [:]
    private(set) var draining = false
    private var reportedDrained = false
    private let startupListeners: [String: ListenerRuntime]

    init(index: Int, shared: ProxyShared) throws(SystemError) {
        self.index = index
        self.shared = shared
        loop = try EventLoop(index: index)
        snapshot = shared.store.load()
        startupListeners = snapshot.listeners
        scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Worker.scratchSize, alignment: 16)
        for l in snapshot.config.listeners {
            let addr = try ResolvedAddress(l.address)
            let fd = try Socket.listen(addr, reusePort: true)
            listeners.append(ListenerHandler(fd: fd, name: l.name, worker: self))
        }
    }

    /// Runs the loop on the calling thread until the worker is stopped.
    func run() {
        loop.owner = self
        for l in listeners {
            do { try loop.register(fd: l.fd, handler: l, events: IOEvent.readable) }
            catch { logError("worker \(index): cannot watch listener \(l.name): \(error)") }
        }
        loop.endOfIteration = { [unowned self] in self.flushAccessLog() }
        scheduleSweep()
        loop.run()
    }

    /// The snapshot new requests use: re-read only when the published version moved.
    @inline(__always)
    func currentSnapshot() -> ConfigSnapshot {
        if shared.store.version != snapshot.version { snapshot = shared.store.load() }
        return snapshot
    }

    // MARK: connections

    func accepted(fd: Int32, peer: String, peerPort: UInt16, listenerName: String) {
        let snap = currentSnapshot()
        guard !draining, let listener = snap.listeners[listenerName] ?? listenerRuntimeFallback(listenerName) else {
            close(fd)
            return
        }
        if connections.count >= snap.config.limits.maxConnections {
            // Over the per-worker cap: refuse fast rather than queue without bound.
            Socket.abort(fd)
            return
        }
        Socket.setNoDelay(fd)
        let c = DownstreamConnection(fd: fd, worker: self, listener: listener, peer: peer, peerPort: peerPort)
        if let context = listener.tls {
            do {
                c.tls = try TLSConnection(context: context)
            } catch {
                logError("listener \(listener.name): cannot start TLS: \(error.message)")
                close(fd)
                return
            }
        }
        do {
            try loop.register(fd: fd, handler: c)
        } catch {
            close(fd)
            return
        }
        connections[ObjectIdentifier(c)] = c
        listener.stats.connectionsTotal.increment(shard: index)
        listener.stats.connectionsActive.add(1, shard: index)
    }

    /// A listener removed by a reload keeps serving with the runtime it had at start
    /// (listeners are bound once; changing them needs a restart).
    private func listenerRuntimeFallback(_ name: String) -> ListenerRuntime? {
        startupListeners[name]
    }

    func connectionClosed(_ c: any ClientConnection) {
        if connections.removeValue(forKey: ObjectIdentifier(c)) != nil {
            c.listener.stats.connectionsActive.add(-1, shard: index)
        }
        if draining { checkDrained() }
    }

    /// The same TCP connection continues under another protocol handler (HTTP/1.1 → HTTP/2).
    func connectionHandedOver(from old: any ClientConnection, to new: any ClientConnection) {
        guard connections.removeValue(forKey: ObjectIdentifier(old)) != nil else { return }
        connections[ObjectIdentifier(new)] = new
        if draining { new.drain() }
    }

    // MARK: upstream pools

    func pool(for listener: ListenerRuntime) -> UpstreamPool {
        let key = listener.poolKey
        if let p = pools[key] { return p }
        let p = UpstreamPool(key: key)
        pools[key] = p
        return p
    }

    // MARK: timeouts

    /// Deadlines are checked by one sweep per loop every 100 ms instead of a timer per
    /// connection: requests then only write a deadline field, and the heap stays tiny.
    private func scheduleSweep() {
        loop.schedule(afterNanos: 100_000_000) { [unowned self] in
            self.sweep()
            self.scheduleSweep()
        }
    }

    private func sweep() {
        let now = loop.now
        for c in Array(connections.values) { c.checkDeadlines(now: now) }
        let idleLimit = snapshot.config.timeouts.upstreamIdle
        for p in pools.values { p.closeExpired(now: now, idleNanos: idleLimit) }
    }

    // MARK: access log

    func log(_ record: AccessLogRecord) {
        guard shared.accessLog.enabled else { return }   // also checked by callers, before building records
        record.appendJSON(to: &logBuffer)
        if logBuffer.count > 32 * 1024 { flushAccessLog() }
    }

    private func flushAccessLog() {
        guard !logBuffer.isEmpty else { return }
        shared.accessLog.write(logBuffer)
        logBuffer.removeAll(keepingCapacity: true)
    }

    // MARK: drain

    /// Stops accepting, closes idle connections, and lets busy ones finish their exchange.
    func startDrain() {
        guard !draining else { return }
        draining = true
        for l in listeners {
            loop.deregister(fd: l.fd)
            close(l.fd)
        }
        listeners.removeAll()
        for c in Array(connections.values) { c.drain() }
        for p in pools.values { p.closeAll() }
        checkDrained()
    }

    private func checkDrained() {
        if connections.isEmpty && !reportedDrained {
            reportedDrained = true
            flushAccessLog()
            shared.drainedWorkers.add(1, ordering: .releasing)
        }
    }

    /// Closes everything now (drain deadline passed).
    func forceClose() {
        for c in Array(connections.values) { c.abort(flags: "DC", details: "drain_timeout") }
        flushAccessLog()
    }
}

/// A listening socket of one worker. Level-triggered: pausing is a matter of not accepting.
final class ListenerHandler: EventHandler {
    let fd: Int32
    let name: String
    unowned let worker: Worker

    init(fd: Int32, name: String, worker: Worker) {
        self.fd = fd; self.name = name; self.worker = worker
    }

    func handleEvent(_ events: UInt32) {
        // Bounded per wake-up so a connection storm cannot starve established connections.
        for _ in 0..<64 {
            let r: IOResult<(fd: Int32, peer: String, peerPort: UInt16)>
            do { r = try Socket.accept(fd) } catch {
                // EMFILE and friends: log and try again on the next readiness event.
                logError("accept on \(name): \(error)")
                return
            }
            guard case .done(let c) = r else { return }
            worker.accepted(fd: c.fd, peer: c.peer, peerPort: c.peerPort, listenerName: name)
        }
    }
}

/// Idle keep-alive connections to one upstream address, most recently used first out.
final class UpstreamPool {
    let key: String
    private var idle: [UpstreamConnection] = []

    init(key: String) { self.key = key }

    func take() -> UpstreamConnection? {
        while let c = idle.popLast() {
            if !c.isClosed && c.canAcceptRequest { return c }
            c.close()
        }
        return nil
    }

    func put(_ c: UpstreamConnection, maxIdle: Int, now: UInt64) {
        guard idle.count < maxIdle else { c.close(); return }
        c.idleSince = now
        idle.append(c)
    }

    func remove(_ c: UpstreamConnection) {
        idle.removeAll { $0 === c }
    }

    func closeExpired(now: UInt64, idleNanos: UInt64) {
        guard idleNanos > 0, !idle.isEmpty else { return }
        let expired = idle.filter { now &- $0.idleSince > idleNanos }
        guard !expired.isEmpty else { return }
        idle.removeAll { now &- $0.idleSince > idleNanos }
        for c in expired { c.close() }
    }

    func closeAll() {
        let all = idle
        idle.removeAll()
        for c in all { c.close() }
    }
}

/// Diagnostic log line to stderr (not the access log).
func logError(_ message: String) {
    Diagnostics.log(.error, message)
}
