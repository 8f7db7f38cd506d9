/// A token bucket for per-connection frame-rate limits: `burst` tokens at most, refilled at
/// `rate` tokens per second. Times are monotonic nanoseconds.
struct TokenBucket {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var last: UInt64

    init(rate: Double, burst: Double, now: UInt64) {
        self.rate = max(0, rate)
        self.burst = max(1, burst)
        self.tokens = max(1, burst)
        self.last = now
    }

    /// Takes one token; false when the bucket is empty (the peer is over the limit).
    mutating func take(now: UInt64) -> Bool {
        if now > last {
            let elapsed = Double(now - last) / 1_000_000_000
            tokens = min(burst, tokens + elapsed * rate)
            last = now
        }
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }
}
