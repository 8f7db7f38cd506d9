/// A growable byte queue: append at the end, consume from the front.
/// Used for connection output; compacts lazily so steady-state traffic does not reallocate.
public struct ByteBuffer: Sendable {
    public private(set) var storage: [UInt8]
    public private(set) var readerIndex: Int = 0

    public init(capacity: Int = 0) {
        storage = []
        storage.reserveCapacity(capacity)
    }

    public var readableBytes: Int { storage.count - readerIndex }
    public var isEmpty: Bool { readerIndex == storage.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfUseful()
        storage.append(contentsOf: bytes)
    }
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        compactIfUseful()
        storage.append(contentsOf: bytes)
    }
    public mutating func append(_ string: String) {
        compactIfUseful()
        storage.append(contentsOf: string.utf8)
    }
    public mutating func append(byte: UInt8) { storage.append(byte) }

    /// Marks `n` bytes at the front as consumed.
    public mutating func consume(_ n: Int) {
        readerIndex += min(n, readableBytes)
        if readerIndex == storage.count {
            storage.removeAll(keepingCapacity: true)
            readerIndex = 0
        }
    }
    public mutating func clear() {
        storage.removeAll(keepingCapacity: true)
        readerIndex = 0
    }

    /// Calls `body` with the readable bytes.
    public func withReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[readerIndex...]))
        }
    }

    /// The readable bytes as an array (tests, small payloads).
    public var readableArray: [UInt8] { Array(storage[readerIndex...]) }

    private mutating func compactIfUseful() {
        // Move the unread tail to the front once more than half the storage is dead,
        // so a long-lived connection buffer does not grow without bound.
        if readerIndex > 0 && readerIndex >= storage.count / 2 {
            storage.removeSubrange(0..<readerIndex)
            readerIndex = 0
        }
    }
}
