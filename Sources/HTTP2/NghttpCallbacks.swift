import CNghttp2

// nghttp2 callbacks: each is a private global thunk that recovers the session from user_data
// (Unmanaged, unretained: the session owns the nghttp2 session and outlives every call) and
// forwards to a Swift method (swift-nio-http2's NGHTTP2Session pattern). The Swift methods do
// not throw; a missing pointer maps to NGHTTP2_ERR_CALLBACK_FAILURE (a connection error).

@inline(__always)
private func owner(_ user: UnsafeMutableRawPointer?) -> HTTP2ServerSession? {
    guard let user else { return nil }
    return Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
}

private let callbackFailure = NGHTTP2_ERR_CALLBACK_FAILURE.rawValue

func thunkBeginHeaders(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = owner(user) else { return callbackFailure }
    session.onBeginHeaders(frame)
    return 0
}

func thunkHeader(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                 _ name: UnsafePointer<UInt8>?, _ namelen: Int,
                 _ value: UnsafePointer<UInt8>?, _ valuelen: Int,
                 _ flags: UInt8, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = owner(user) else { return callbackFailure }
    session.onHeader(frame, name: UnsafeRawBufferPointer(start: name, count: name == nil ? 0 : namelen),
                     value: UnsafeRawBufferPointer(start: value, count: value == nil ? 0 : valuelen))
    return 0
}

func thunkFrameRecv(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = owner(user) else { return callbackFailure }
    session.onFrameRecv(frame)
    return 0
}

func thunkDataChunk(_ s: OpaquePointer?, _ flags: UInt8, _ streamID: Int32,
                    _ data: UnsafePointer<UInt8>?, _ len: Int, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let session = owner(user) else { return callbackFailure }
    session.onDataChunk(streamID: streamID, UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : len))
    return 0
}

func thunkStreamClose(_ s: OpaquePointer?, _ streamID: Int32, _ errorCode: UInt32, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let session = owner(user) else { return callbackFailure }
    session.onStreamClose(streamID: streamID, errorCode: errorCode)
    return 0
}

func thunkInvalidFrame(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ libError: Int32, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = owner(user) else { return callbackFailure }
    session.onInvalidFrame(frame, libError: libError)
    return 0
}

func thunkFrameSend(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = owner(user) else { return callbackFailure }
    session.onFrameSend(frame)
    return 0
}

func thunkDataSourceRead(_ s: OpaquePointer?, _ streamID: Int32, _ buf: UnsafeMutablePointer<UInt8>?, _ length: Int,
                         _ flags: UnsafeMutablePointer<UInt32>?, _ source: UnsafeMutablePointer<nghttp2_data_source>?,
                         _ user: UnsafeMutableRawPointer?) -> Int {
    guard let buf, let flags, let session = owner(user) else { return Int(callbackFailure) }
    return session.readData(streamID: streamID, into: buf, length: length, flags: flags)
}

func thunkBeginFrame(_ s: OpaquePointer?, _ hd: UnsafePointer<nghttp2_frame_hd>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let hd, let session = owner(user) else { return callbackFailure }
    session.onBeginFrame(type: hd.pointee.type, streamID: hd.pointee.stream_id)
    return 0
}
