/// xoshiro256** per worker: request, trace and span ids need uniqueness, not secrecy, and the
/// system generator costs a getrandom(2) call per request on Linux. One instance per loop
/// thread; never shared between threads.
public final class FastRandom {
    private var s0, s1, s2, s3: UInt64

    public init() {
        var seed = SystemRandomNumberGenerator()
        s0 = seed.next(); s1 = seed.next(); s2 = seed.next(); s3 = seed.next()
        if s0 | s1 | s2 | s3 == 0 { s0 = 0x9E37_79B9_7F4A_7C15 }
    }

    @inline(__always)
    public func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// A non-zero value (span and trace ids must not be all zero).
    public func nonZero() -> UInt64 {
        while true {
            let v = next()
            if v != 0 { return v }
        }
    }

    /// A version-4 UUID in its canonical text form.
    public func uuid() -> String {
        var hi = next(), lo = next()
        hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000      // version 4
        lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000      // variant 10
        return hexUUID(hi, lo)
    }

    /// `n` random bytes as lowercase hex (trace and span ids).
    public func hex(bytes n: Int) -> String {
        var out = [UInt8]()
        out.reserveCapacity(n * 2)
        var left = n
        while left > 0 {
            var v = next()
            for _ in 0..<min(8, left) {
                appendHexByte(UInt8(truncatingIfNeeded: v), &out)
                v >>= 8
                left -= 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

@inline(__always)
public func appendHexByte(_ b: UInt8, _ out: inout [UInt8]) {
    out.append(hexDigits[Int(b >> 4)])
    out.append(hexDigits[Int(b & 0xF)])
}

private func hexUUID(_ hi: UInt64, _ lo: UInt64) -> String {
    var out = [UInt8]()
    out.reserveCapacity(36)
    for i in 0..<8 {
        if i == 4 || i == 6 { out.append(UInt8(ascii: "-")) }
        appendHexByte(UInt8(truncatingIfNeeded: hi >> UInt64(56 - 8 * i)), &out)
    }
    for i in 0..<8 {
        if i == 0 || i == 2 { out.append(UInt8(ascii: "-")) }
        appendHexByte(UInt8(truncatingIfNeeded: lo >> UInt64(56 - 8 * i)), &out)
    }
    return String(decoding: out, as: UTF8.self)
}
