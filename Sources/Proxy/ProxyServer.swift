#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import OutriderCore

/// The data plane: `workers` loops, each on its own thread with its own SO_REUSEPORT listeners.
public final class ProxyServer: Sendable {
    public let shared: ProxyShared
    private let remotes: [EventLoopRemote]
    private let handoff: WorkerHandoff

    /// Binds every listener for every worker (so address errors surface before start).
    public init(shared: ProxyShared, workers: Int) throws(SystemError) {
        self.shared = shared
        var ws: [Worker] = []
        for i in 0..<max(1, workers) { ws.append(try Worker(index: i, shared: shared)) }
        remotes = ws.map { $0.loop.remote }
        handoff = WorkerHandoff(ws)
    }

    public var workerCount: Int { remotes.count }

    /// Starts one thread per worker.
    public func start() throws(SystemError) {
        for (i, w) in handoff.take().enumerated() {
            let box = WorkerHandoff([w])
            try startThread(name: "outrider-w\(i)") {
                for w in box.take() { w.run() }
            }
        }
    }

    /// Graceful drain on every worker: stop accepting, finish in-flight exchanges.
    public func drain() {
        for r in remotes { r.execute { loop in (loop.owner as? Worker)?.startDrain() } }
    }

    /// After the drain deadline: close whatever is left.
    public func forceClose() {
        for r in remotes { r.execute { loop in (loop.owner as? Worker)?.forceClose() } }
    }

    public var allDrained: Bool { shared.drainedWorkerCount >= remotes.count }
}

/// Moves non-Sendable workers to their threads exactly once.
/// Synchronization: `take()` is called once per box, on the thread that will own the workers;
/// nothing touches the workers from the creating thread afterwards.
final class WorkerHandoff: @unchecked Sendable {
    private var workers: [Worker]
    init(_ w: [Worker]) { workers = w }
    func take() -> [Worker] {
        let w = workers
        workers = []
        return w
    }
}

