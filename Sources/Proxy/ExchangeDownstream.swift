import OutriderCore
import TLS

/// The client side of one exchange: an HTTP/1.1 connection (`DownstreamConnection`) or one
/// HTTP/2 stream (`HTTP2Stream`). The exchange decides *what* to send; this side knows *how*
/// its protocol frames it, and how to hold the client back when the upstream is slow.
protocol ExchangeDownstream: AnyObject {
    var worker: Worker { get }
    var peer: String { get }
    var peerPort: UInt16 { get }
    var peerDescription: String { get }
    /// "http" or "https".
    var scheme: String { get }
    var peerCertificate: PeerCertificateInfo? { get }
    /// The x-forwarded-client-cert element for a verified client certificate.
    var forwardedClientCert: String? { get }
    /// True while a batch of client input is processed (its output goes out in one write).
    var isProcessingInput: Bool { get }
    /// Close the connection after this response (HTTP/1.1; HTTP/2 ignores it).
    var closeAfterResponse: Bool { get set }

    /// Request-body backpressure: while set, the client's bytes are not taken.
    var readPaused: Bool { get set }
    /// Takes client input again after `readPaused` was cleared.
    func resumeInput()

    /// "100 Continue" for a client waiting to send its body (HTTP/1.1 only).
    func sendContinue()
    /// The response head (hop-by-hop fields already removed); `framing` is how the upstream
    /// delimits the body.
    func sendResponseHead(_ head: ResponseHead, framing: BodyFraming)
    func sendResponseBody(_ bytes: UnsafeRawBufferPointer)
    func sendResponseEnd(trailers: HTTPHeaders)
    func sendLocalReply(_ reply: LocalReply, requestID: String?)
    /// Too much response data waits for the client: stop reading the upstream.
    var outputAboveHighWatermark: Bool { get }
    func flush()
    /// `flush` once the loop iteration's work is done (HTTP/1.1: one write for every
    /// response the iteration produced for the connection).
    func flushAtEndOfIteration()

    /// 101 Switching Protocols, then raw bytes both ways (HTTP/1.1 only).
    func sendUpgradeHead(_ head: ResponseHead)
    func enterTunnel()
    func sendTunnelBytes(_ bytes: UnsafeRawBufferPointer)

    func finishStats(status: Int, details: String?, durationNanos: UInt64)
    func exchangeFinished()
    /// The exchange failed after its response started: end the stream abruptly.
    func abort(flags: String, details: String)
}
