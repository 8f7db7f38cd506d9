@testable import HTTP2
import OutriderCore

/// Frame types and flags used by the hand-built frames.
enum FT {
    static let data: UInt8 = 0, headers: UInt8 = 1, priority: UInt8 = 2, rstStream: UInt8 = 3, settings: UInt8 = 4
    static let pushPromise: UInt8 = 5, ping: UInt8 = 6, goaway: UInt8 = 7, windowUpdate: UInt8 = 8, continuation: UInt8 = 9
}
enum FF {
    static let endStream: UInt8 = 0x1, ack: UInt8 = 0x1, endHeaders: UInt8 = 0x4, padded: UInt8 = 0x8, priority: UInt8 = 0x20
}

struct Frame: CustomStringConvertible {
    var type: UInt8
    var flags: UInt8
    var stream: Int32
    var payload: [UInt8]
    var description: String { "Frame(type: \(type), flags: \(flags), stream: \(stream), \(payload.count) bytes)" }

    /// RST_STREAM / GOAWAY error code, WINDOW_UPDATE increment.
    var errorCode: UInt32? {
        switch type {
        case FT.rstStream where payload.count >= 4: return be32(payload, 0)
        case FT.goaway where payload.count >= 8: return be32(payload, 4)
        default: return nil
        }
    }
    var goawayLastStream: Int32? { type == FT.goaway && payload.count >= 8 ? Int32(bitPattern: be32(payload, 0) & 0x7fff_ffff) : nil }
    var windowIncrement: UInt32? { type == FT.windowUpdate && payload.count >= 4 ? be32(payload, 0) & 0x7fff_ffff : nil }
    var settings: [UInt16: UInt32] {
        var out: [UInt16: UInt32] = [:]
        var i = 0
        while i + 6 <= payload.count {
            out[UInt16(payload[i]) << 8 | UInt16(payload[i + 1])] = be32(payload, i + 2)
            i += 6
        }
        return out
    }
}

func be32(_ b: [UInt8], _ i: Int) -> UInt32 {
    UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
}
func u32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }

func frame(_ type: UInt8, _ flags: UInt8, _ stream: Int32, _ payload: [UInt8] = []) -> [UInt8] {
    let n = payload.count
    return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags] + u32(UInt32(bitPattern: stream)) + payload
}

func settingsFrame(_ entries: [(UInt16, UInt32)] = [], ack: Bool = false) -> [UInt8] {
    var p: [UInt8] = []
    for (id, v) in entries { p += [UInt8(id >> 8), UInt8(id & 0xff)] + u32(v) }
    return frame(FT.settings, ack ? FF.ack : 0, 0, p)
}

/// A manual clock for rate-limit tests.
final class FakeClock {
    var now: UInt64 = 1_000_000_000
    func advance(seconds: Double) { now += UInt64(seconds * 1_000_000_000) }
}

/// A hand-driven HTTP/2 client against one server session: it builds frames (HPACK through
/// nghttp2's encoder) and parses what the server writes.
final class H2Client {
    let server: HTTP2ServerSession
    let encoder: HPACKEncoder
    let decoder: HPACKDecoder
    var events: [HTTP2Event] = []
    private var pendingOutput: [UInt8] = []

    init(settings: HTTP2Settings = HTTP2Settings(), clock: FakeClock? = nil) throws {
        if let clock {
            server = try HTTP2ServerSession(settings: settings, clock: { clock.now })
        } else {
            server = try HTTP2ServerSession(settings: settings)
        }
        guard let e = HPACKEncoder(), let d = HPACKDecoder() else { throw OutriderError(.internalError, source: .internal, "hpack") }
        encoder = e
        decoder = d
    }

    /// Preface + SETTINGS (+ ACK of the server's SETTINGS). Returns the server's frames.
    @discardableResult
    func handshake(settings: [(UInt16, UInt32)] = []) -> [Frame] {
        send(HTTP2Preface.bytes + settingsFrame(settings) + settingsFrame(ack: true))
        return read()
    }

    func send(_ bytes: [UInt8]) {
        events += server.receive(bytes)
    }

    /// Everything the server wrote since the last read, as frames.
    func read() -> [Frame] {
        var out = ByteBuffer()
        server.takeOutput(into: &out)
        events += server.takeEvents()
        pendingOutput += out.readableArray
        var frames: [Frame] = []
        var i = 0
        while pendingOutput.count - i >= 9 {
            let len = Int(pendingOutput[i]) << 16 | Int(pendingOutput[i + 1]) << 8 | Int(pendingOutput[i + 2])
            guard pendingOutput.count - i >= 9 + len else { break }
            let stream = Int32(bitPattern: be32(pendingOutput, i + 5) & 0x7fff_ffff)
            frames.append(Frame(type: pendingOutput[i + 3], flags: pendingOutput[i + 4], stream: stream,
                                payload: Array(pendingOutput[(i + 9)..<(i + 9 + len)])))
            i += 9 + len
        }
        pendingOutput.removeFirst(i)
        return frames
    }

    func takeEvents() -> [HTTP2Event] {
        let e = events
        events = []
        return e
    }

    func headersFrame(_ stream: Int32, _ fields: [(name: String, value: String)], endStream: Bool, endHeaders: Bool = true) -> [UInt8] {
        frame(FT.headers, (endStream ? FF.endStream : 0) | (endHeaders ? FF.endHeaders : 0), stream, encoder.encode(fields))
    }

    func request(_ stream: Int32, method: String = "GET", path: String = "/", extra: [(name: String, value: String)] = [], endStream: Bool = true) {
        let fields: [(name: String, value: String)] = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "example.com")] + extra
        send(headersFrame(stream, fields, endStream: endStream))
    }

    /// Decodes a HEADERS frame's block (no CONTINUATION, no padding/priority handling needed for
    /// server output).
    func fields(of f: Frame) -> [(name: String, value: String)] {
        decoder.decode(f.payload) ?? []
    }
}

extension HTTP2Event {
    var streamID: Int32? {
        switch self {
        case .requestHead(let id, _, _, _), .requestData(let id, _, _), .requestTrailers(let id, _), .streamReset(let id, _): return id
        default: return nil
        }
    }
    var isConnectionError: Bool { if case .connectionError = self { return true } else { return false } }
}

/// An HPACK integer (RFC 7541 §5.1) with the prefix bits clear.
func hpackInt(_ value: Int, prefix: Int) -> [UInt8] {
    let maxPrefix = (1 << prefix) - 1
    if value < maxPrefix { return [UInt8(value)] }
    var out: [UInt8] = [UInt8(maxPrefix)]
    var v = value - maxPrefix
    while v >= 128 { out.append(UInt8(v % 128 + 128)); v /= 128 }
    out.append(UInt8(v))
    return out
}
