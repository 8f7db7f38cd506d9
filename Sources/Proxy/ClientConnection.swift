/// A client connection a worker tracks, whatever its protocol: for deadlines, drain and
/// shutdown. HTTP/1.1 (`DownstreamConnection`) and HTTP/2 (`HTTP2Connection`).
protocol ClientConnection: AnyObject {
    var listener: ListenerRuntime { get }
    func checkDeadlines(now: UInt64)
    /// Drain: finish what is in flight, take nothing new, then close.
    func drain()
    /// Close now, failing whatever is in flight.
    func abort(flags: String, details: String)
}
