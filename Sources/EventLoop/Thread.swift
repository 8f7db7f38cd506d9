#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// Starts a detached OS thread running `body` (each worker loop gets one).
/// pthreads directly: the loops need nothing from Foundation's Thread.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
    final class Box: @unchecked Sendable {   // handed to exactly one new thread, then released by it
        let body: @Sendable () -> Void
        let name: String
        init(_ body: @escaping @Sendable () -> Void, name: String) { self.body = body; self.name = name }
    }
    let box = Unmanaged.passRetained(Box(body, name: name)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        guard let arg else { return nil }
        let b = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
        clinux_set_thread_name(b.name)
        b.body()
        return nil
    }, box)
    if rc != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        throw SystemError("pthread_create", errno: rc)
    }
    pthread_detach(tid)
}
