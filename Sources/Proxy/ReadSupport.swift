import EventLoop
import OutriderCore
#if canImport(Glibc)
import Glibc
#endif

/// Outcome of one read attempt through a worker's scratch buffer.
enum ReadOutcome {
    /// New bytes (with any previously pending bytes in front), valid until the next read on this worker.
    /// `drained`: the read returned less than there was room for, so the socket was empty.
    case data(UnsafeRawBufferPointer, fresh: Int, drained: Bool)
    case wouldBlock
    case endOfStream
    case failed(Int32)
}

/// Connections keep no read buffer of their own while idle: every read lands in the worker's
/// scratch buffer, and only bytes that could not be processed yet (a partial head, a pipelined
/// request) are copied out to a small per-connection `pending` array. 1,000 idle keep-alive
/// connections therefore cost almost nothing.
@inline(__always)
func readThroughScratch(fd: Int32, pending: inout [UInt8], scratch: UnsafeMutableRawBufferPointer) -> ReadOutcome {
    let have = pending.count
    if have > 0 {
        guard have < scratch.count else { return .data(UnsafeRawBufferPointer(start: nil, count: 0), fresh: 0, drained: false) }
        pending.withUnsafeBytes { scratch.copyMemory(from: $0) }
    }
    let room = UnsafeMutableRawBufferPointer(rebasing: scratch[have...])
    do {
        switch try Socket.read(fd, into: room) {
        case .wouldBlock:
            return .wouldBlock
        case .done(0):
            return .endOfStream
        case .done(let n):
            pending.removeAll(keepingCapacity: false)
            return .data(UnsafeRawBufferPointer(rebasing: scratch[0..<(have + n)]), fresh: n, drained: n < room.count)
        }
    } catch {
        return .failed(error.errno)
    }
}

/// Output watermarks: above `high` the producing side stops reading; below `low` it resumes.
enum Watermark {
    static let high = 256 * 1024
    static let low = 64 * 1024
}

/// Writes as much of `out` as the socket takes. Returns false on a write error.
@inline(__always)
func flushBuffer(fd: Int32, out: inout ByteBuffer, writable: inout Bool, sent: inout UInt64) -> Bool {
    while !out.isEmpty && writable {
        let r: IOResult<Int>
        do {
            r = try out.withReadableBytes { try Socket.write(fd, from: $0) }
        } catch {
            return false
        }
        switch r {
        case .wouldBlock: writable = false
        case .done(let n):
            out.consume(n)
            sent &+= UInt64(n)
        }
    }
    return true
}
