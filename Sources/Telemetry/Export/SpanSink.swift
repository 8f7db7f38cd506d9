/// Where finished spans go (linkerd2-proxy's `SpanSink`): exporting never blocks the caller.
///
/// `trySend` is called on the proxy's worker loops at the end of a stream. It must be O(1) and
/// must never wait on I/O; when the sink cannot take the span it returns `false` and the span is
/// dropped (and counted by the sink).
public protocol SpanSink: Sendable {
    func trySend(_ span: FinishedSpan) -> Bool
}
