#if canImport(Glibc)
import Glibc
#endif

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC). Deadlines and durations use this.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Wall-clock time in nanoseconds since the Unix epoch (CLOCK_REALTIME), for logs and spans.
@inline(__always)
public func wallClockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. "2026-11-26T14:56:36.123Z".
public func rfc3339(wallNanos: UInt64) -> String {
    var secs = time_t(wallNanos / 1_000_000_000)
    let millis = Int((wallNanos / 1_000_000) % 1000)
    var tmv = tm()
    gmtime_r(&secs, &tmv)
    func pad(_ v: Int32, _ w: Int) -> String {
        let s = String(v)
        return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
    }
    let ms = String(millis)
    return "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2)).\(String(repeating: "0", count: 3 - ms.count))\(ms)Z"
}
