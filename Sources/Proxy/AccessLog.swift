#if canImport(Glibc)
import Glibc
#endif
import OutriderCore

/// Where access-log lines go: a file descriptor (stdout or an O_APPEND file) or nowhere.
/// Workers buffer lines and hand whole lines to `write`, so lines from different workers never
/// interleave: each write is at most PIPE_BUF bytes and ends on a line boundary.
public final class AccessLogSink: Sendable {
    let fd: Int32
    public var enabled: Bool { fd >= 0 }

    public init(path: String) throws {
        switch path {
        case "off": fd = -1
        case "stdout", "": fd = 1
        case "stderr": fd = 2
        default:
            let f = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if f < 0 { throw OutriderError(.internalError, source: .internal, "cannot open access log \(path): errno \(errno)") }
            fd = f
        }
    }

    /// Writes `bytes` (whole lines) in PIPE_BUF-sized pieces cut at newlines.
    func write(_ bytes: [UInt8]) {
        guard fd >= 0, !bytes.isEmpty else { return }
        bytes.withUnsafeBytes { raw in
            var start = 0
            while start < raw.count {
                var end = min(start + 4096, raw.count)
                if end < raw.count {
                    // Back up to the last newline inside the piece (a line longer than 4 KiB goes whole).
                    var k = end
                    while k > start && raw[k - 1] != UInt8(ascii: "\n") { k -= 1 }
                    if k > start { end = k }
                }
                var off = start
                while off < end {
                    let n = Glibc.write(fd, raw.baseAddress.map { $0 + off }, end - off)
                    if n < 0 { if errno == EINTR { continue }; return }   // a full disk loses log lines, never requests
                    off += n
                }
                start = end
            }
        }
    }
}

/// One request's access-log record (CONVENTIONS.md §6: Istio's JSON keys, plus trace ids).
struct AccessLogRecord {
    var startWallNanos: UInt64 = 0
    var method: String = ""
    var path: String = ""
    var proto: String = ""
    var responseCode: Int = 0
    var responseFlags: String = "-"
    var details: String = "-"
    var bytesReceived: UInt64 = 0
    var bytesSent: UInt64 = 0
    var durationMillis: Double = 0
    var upstreamServiceMillis: Double? = nil
    var xForwardedFor: String? = nil
    var userAgent: String? = nil
    var requestID: String = ""
    var authority: String? = nil
    var upstreamHost: String? = nil
    var upstreamCluster: String = ""
    var downstreamRemote: String = ""
    var listener: String = ""
    var traceID: String? = nil
    var spanID: String? = nil

    func appendJSON(to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        field(&out, "start_time", rfc3339(wallNanos: startWallNanos), first: true)
        field(&out, "method", method)
        field(&out, "path", path)
        field(&out, "protocol", proto)
        number(&out, "response_code", Double(responseCode), integer: true)
        field(&out, "response_flags", responseFlags)
        field(&out, "response_code_details", details)
        number(&out, "bytes_received", Double(bytesReceived), integer: true)
        number(&out, "bytes_sent", Double(bytesSent), integer: true)
        number(&out, "duration", durationMillis, integer: false)
        if let u = upstreamServiceMillis { number(&out, "upstream_service_time", u, integer: false) } else { null(&out, "upstream_service_time") }
        optional(&out, "x_forwarded_for", xForwardedFor)
        optional(&out, "user_agent", userAgent)
        field(&out, "request_id", requestID)
        optional(&out, "authority", authority)
        optional(&out, "upstream_host", upstreamHost)
        field(&out, "upstream_cluster", upstreamCluster)
        field(&out, "downstream_remote_address", downstreamRemote)
        field(&out, "listener", listener)
        optional(&out, "trace_id", traceID)
        optional(&out, "span_id", spanID)
        out.append(contentsOf: "}\n".utf8)
    }

    private func key(_ out: inout [UInt8], _ k: String, first: Bool) {
        if !first { out.append(UInt8(ascii: ",")) }
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: k.utf8)
        out.append(contentsOf: "\":".utf8)
    }
    private func field(_ out: inout [UInt8], _ k: String, _ v: String, first: Bool = false) {
        key(&out, k, first: first)
        appendJSONString(v, to: &out)
    }
    private func optional(_ out: inout [UInt8], _ k: String, _ v: String?) {
        if let v { field(&out, k, v) } else { null(&out, k) }
    }
    private func null(_ out: inout [UInt8], _ k: String) {
        key(&out, k, first: false)
        out.append(contentsOf: "null".utf8)
    }
    private func number(_ out: inout [UInt8], _ k: String, _ v: Double, integer: Bool) {
        key(&out, k, first: false)
        if integer || v == v.rounded() { out.append(contentsOf: String(Int64(v)).utf8) }
        else {
            // Milliseconds with microsecond precision.
            let micros = Int64((v * 1000).rounded())
            out.append(contentsOf: "\(micros / 1000).".utf8)
            let frac = String(micros % 1000)
            out.append(contentsOf: (String(repeating: "0", count: 3 - frac.count) + frac).utf8)
        }
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
        case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
        case 0x0A: out.append(contentsOf: "\\n".utf8)
        case 0x0D: out.append(contentsOf: "\\r".utf8)
        case 0x09: out.append(contentsOf: "\\t".utf8)
        case 0..<0x20:
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            out.append(contentsOf: "\\u00".utf8)
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0xF)])
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}
