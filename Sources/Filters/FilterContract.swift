import Config
import EventLoop
import OutriderCore
import Telemetry

/// What a filter phase decides (Envoy's FilterHeadersStatus, Pingora's `Ok(true)`).
public enum FilterVerdict: Sendable {
    /// Continue with the next filter, then the upstream.
    case proceed
    /// Stop here and answer the client with this reply. Later filters do not run.
    case respond(LocalReply)
    /// Stop here until the filter calls `StreamContext.resume()` (or `resume(with:)`).
    /// Only the request-head phase may pause; elsewhere `.pause` acts as `.proceed`.
    case pause
}

/// One filter's view of a stream: facts about the request that are not in its head, a way to
/// resume after `.pause`, and a small span API for decision events. Lives on the stream's loop
/// thread; filters never touch sockets.
public final class StreamContext {
    public let requestID: String
    public let clientAddress: String
    public let clientPort: UInt16
    public let listenerName: String
    /// The listener's own address (server.address / server.port).
    public let serverAddress: SocketAddressSpec
    public let upstreamAddress: SocketAddressSpec
    /// "http" (or "https" once TLS terminates here).
    public let scheme: String
    /// Metric shard of the worker running this stream.
    public let shard: Int
    /// Wall-clock start of the request head, nanoseconds since the epoch.
    public let startWallNanos: UInt64
    /// The worker's random source (ids), confined to this thread like the stream.
    public var random: FastRandom { worker.random }
    /// The worker running this stream: its loop (timers, deferred work, fds for clients such
    /// as Redis) and per-worker state that filters keep across streams.
    public let worker: WorkerServices
    /// The mTLS peer identity (SPIFFE id) when the client presented a verified certificate.
    public var peerIdentity: String?

    /// Set by the tracing filter so the access log and other filters can name the trace.
    public var traceID: String?
    public var spanID: String?

    /// Upstream timing, filled in by the proxy.
    public var upstreamStartWallNanos: UInt64 = 0
    public var upstreamEndWallNanos: UInt64 = 0
    public var upstreamStatus: Int?

    /// Events other filters attach to the request's span (WAF and rate-limit decisions).
    public private(set) var spanEvents: [SpanEvent] = []

    /// Set by the proxy while a filter has paused the stream.
    public var resumeHandler: ((LocalReply?) -> Void)?

    public init(requestID: String, clientAddress: String, clientPort: UInt16, listenerName: String,
                serverAddress: SocketAddressSpec, upstreamAddress: SocketAddressSpec, scheme: String,
                shard: Int, startWallNanos: UInt64, worker: WorkerServices) {
        self.requestID = requestID
        self.clientAddress = clientAddress
        self.clientPort = clientPort
        self.listenerName = listenerName
        self.serverAddress = serverAddress
        self.upstreamAddress = upstreamAddress
        self.scheme = scheme
        self.shard = shard
        self.startWallNanos = startWallNanos
        self.worker = worker
    }

    /// Records a decision on the request's span (if the stream is traced).
    public func addSpanEvent(_ name: String, attributes: [SpanAttribute] = []) {
        spanEvents.append(SpanEvent(name: name, timeUnixNano: wallClockNanos(), attributes: attributes))
    }

    /// Continues a paused stream with the next filter. Call on the stream's loop thread.
    public func resume() { resumeHandler?(nil) }
    /// Ends a paused stream with a local reply. Call on the stream's loop thread.
    public func resume(with reply: LocalReply) { resumeHandler?(reply) }
}

/// Per-worker services for filters. One per worker loop, confined to that loop's thread.
public final class WorkerServices {
    /// The worker's event loop: timers, deferred work, and registration of client sockets
    /// (filters never touch the downstream or upstream sockets).
    public let loop: EventLoop
    /// Metric shard of this worker.
    public let shard: Int
    public let random: FastRandom
    /// State a filter keeps per worker across streams (a Redis connection, bucket shards),
    /// keyed by whatever the filter chooses (usually `ObjectIdentifier` of its factory).
    public var state: [ObjectIdentifier: AnyObject] = [:]

    public init(loop: EventLoop, shard: Int, random: FastRandom) {
        self.loop = loop; self.shard = shard; self.random = random
    }
}

/// How a stream ended, for the logging phase.
public struct StreamOutcome: Sendable {
    public var status: Int
    /// "via_upstream" or the local reply's reason.
    public var details: String
    /// Envoy-style response flags ("-", "UF", "UT", "UC", "DC", "DPE", …).
    public var flags: String
    public var localReply: Bool
    public var bytesReceived: UInt64
    public var bytesSent: UInt64
    public var endWallNanos: UInt64
    public init(status: Int, details: String, flags: String, localReply: Bool, bytesReceived: UInt64, bytesSent: UInt64, endWallNanos: UInt64) {
        self.status = status; self.details = details; self.flags = flags; self.localReply = localReply
        self.bytesReceived = bytesReceived; self.bytesSent = bytesSent; self.endWallNanos = endWallNanos
    }
}

/// A per-stream filter instance (Envoy's StreamFilter, Pingora's ProxyHttp phases).
/// Created cheaply for each stream by its `FilterFactory`; runs on the stream's loop thread.
/// Every phase has a no-op default. A phase that throws fails the request with 500 and a
/// counted reason; it never takes the process down.
public protocol HTTPFilter: AnyObject {
    /// The request head as received (before hop-by-hop removal and X-Forwarded-* are added).
    /// May change headers; `.respond` answers without contacting the upstream; `.pause` waits.
    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict
    /// Each request body chunk as it streams through (decoded from chunked framing).
    /// `.respond` is honoured only while no response has started.
    func requestBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext) throws -> FilterVerdict
    /// The upstream's final response head, before it is sent to the client. May change headers;
    /// `.respond` replaces the upstream response.
    func responseHead(_ head: inout ResponseHead, context: StreamContext) throws -> FilterVerdict
    /// How many request body bytes this filter needs to see before the request may be
    /// forwarded (0: none, the body streams). Asked once, after the request-head phase. When
    /// any filter asks, the proxy holds the body up to the largest limit, calls `requestBody`
    /// for each chunk and once with `endStream: true`, and forwards only if all proceed.
    func requestBodyBufferLimit(context: StreamContext) -> Int
    /// The body grew past the buffer limit. `.respond` refuses it (e.g. 413); `.proceed`
    /// forwards what was held and streams the rest without further inspection.
    func requestBodyOverLimit(context: StreamContext) -> FilterVerdict
    /// Each response body chunk as it streams through (observe only).
    func responseBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext)
    /// The logging phase: the stream is over (answered, failed or abandoned). Cannot fail.
    func streamComplete(_ outcome: StreamOutcome, context: StreamContext)
}

extension HTTPFilter {
    public func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict { .proceed }
    public func requestBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext) throws -> FilterVerdict { .proceed }
    public func responseHead(_ head: inout ResponseHead, context: StreamContext) throws -> FilterVerdict { .proceed }
    public func requestBodyBufferLimit(context: StreamContext) -> Int { 0 }
    public func requestBodyOverLimit(context: StreamContext) -> FilterVerdict { .proceed }
    public func responseBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext) {}
    public func streamComplete(_ outcome: StreamOutcome, context: StreamContext) {}
}

/// A filter's configuration, parsed and validated once per config version, immutable and
/// shared by every worker (Envoy's FilterConfig). Makes the per-stream instances.
public protocol FilterFactory: Sendable {
    /// The name used in `outrider.yaml` and as the metric prefix.
    var name: String { get }
    var mode: FilterMode { get }
    /// A new instance for one stream, or nil when the filter has nothing to do for it.
    func makeFilter(context: StreamContext) -> (any HTTPFilter)?
}
