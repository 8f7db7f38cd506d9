#if canImport(Glibc)
import Glibc
#endif

/// What to do with a batch after one export attempt (CONVENTIONS §3, OTLP/HTTP "Failures").
enum ExportOutcome: Equatable {
    /// 2xx: accepted; `rejected` spans of the batch were refused (partial_success).
    case accepted(rejected: Int64, message: String)
    /// 429, 502, 503, 504, connection errors and timeouts; `retryAfterNanos` from the header.
    case retryable(retryAfterNanos: UInt64?, reason: String)
    /// 400, 413 and every other status: never retried.
    case rejected(status: Int)
}

/// Exponential backoff with ±20 % jitter: base × 2^(attempt−1), capped.
struct ExportRetryPolicy: Sendable, Equatable {
    var baseNanos: UInt64 = 500_000_000
    var capNanos: UInt64 = 30_000_000_000
    /// Jitter fraction either side (0.2 = ±20 %).
    var jitter: Double = 0.2

    static let `default` = ExportRetryPolicy()

    /// Delay before retry number `attempt` (1-based). `unit` is a uniform random number in
    /// [0, 1) (injected so tests are deterministic).
    func delay(attempt: Int, unit: Double) -> UInt64 {
        let shift = min(max(attempt - 1, 0), 40)
        let (raw, overflow) = baseNanos.multipliedReportingOverflow(by: UInt64(1) << UInt64(shift))
        let capped = overflow ? capNanos : min(raw, capNanos)
        let factor = 1.0 - jitter + 2.0 * jitter * min(max(unit, 0), 1)
        let v = Double(capped) * factor
        guard v.isFinite, v >= 0 else { return capped }
        return v >= Double(UInt64.max / 2) ? capped : UInt64(v)
    }

    static func isRetryableStatus(_ status: Int) -> Bool {
        status == 429 || status == 502 || status == 503 || status == 504
    }
}

/// `Retry-After`: delta-seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) turned
/// into a delay from `nowWallNanos` (a date in the past means "now"). nil when unparseable.
func parseRetryAfter(_ value: String, nowWallNanos: UInt64) -> UInt64? {
    let v = value.trimmingWhitespace()
    if let secs = UInt64(v) {
        let (ns, overflow) = secs.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? UInt64.max : ns
    }
    guard let epoch = parseIMFFixdate(v) else { return nil }
    let target = epoch.multipliedReportingOverflow(by: 1_000_000_000)
    if target.overflow { return UInt64.max }
    return target.partialValue > nowWallNanos ? target.partialValue - nowWallNanos : 0
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the epoch (nil on anything else).
func parseIMFFixdate(_ s: String) -> UInt64? {
    let parts = s.split(separator: " ")
    guard parts.count == 6, parts[5] == "GMT", parts[0].hasSuffix(",") else { return nil }
    guard let day = Int(parts[1]), (1...31).contains(day), let year = Int(parts[3]), (1970...9999).contains(year) else { return nil }
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    guard let mi = months.firstIndex(of: String(parts[2])) else { return nil }
    let hms = parts[4].split(separator: ":")
    guard hms.count == 3, let h = Int(hms[0]), let m = Int(hms[1]), let sec = Int(hms[2]),
          (0...23).contains(h), (0...59).contains(m), (0...60).contains(sec) else { return nil }
    // Days from civil (Howard Hinnant's algorithm).
    let month = mi + 1
    let y = month <= 2 ? year - 1 : year
    let era = y / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146_097 + doe - 719_468
    let total = days * 86_400 + h * 3600 + m * 60 + sec
    return total >= 0 ? UInt64(total) : nil
}

/// Classifies one HTTP exchange. `encoding` tells how to read a 2xx body (the response uses
/// the request's content type).
func classifyExport(_ result: Result<OTLPHTTPClient.Response, OTLPHTTPClient.TransportError>,
                    encoding: OTLPExporterConfig.Encoding, nowWallNanos: UInt64) -> ExportOutcome {
    switch result {
    case .failure(let e):
        return .retryable(retryAfterNanos: nil, reason: e.description)
    case .success(let r):
        if r.status >= 200 && r.status < 300 {
            guard !r.body.isEmpty else { return .accepted(rejected: 0, message: "") }
            let ct = r.header("content-type")?.lowercased() ?? ""
            let parsed: (rejectedSpans: Int64, errorMessage: String)?
            if ct.contains("json") || (ct.isEmpty && encoding == .json) {
                parsed = OTLPTraceEncoding.parseResponse(json: r.body)
            } else {
                parsed = OTLPTraceEncoding.parseResponse(protobuf: r.body)
            }
            // An unparseable success body is still a success: the spans were accepted.
            guard let p = parsed else { return .accepted(rejected: 0, message: "") }
            return .accepted(rejected: max(p.rejectedSpans, 0), message: p.errorMessage)
        }
        if ExportRetryPolicy.isRetryableStatus(r.status) {
            let ra = r.header("retry-after").flatMap { parseRetryAfter($0, nowWallNanos: nowWallNanos) }
            return .retryable(retryAfterNanos: ra, reason: "HTTP \(r.status)")
        }
        return .rejected(status: r.status)
    }
}
