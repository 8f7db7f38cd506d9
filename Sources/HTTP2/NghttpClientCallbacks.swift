import CNghttp2

// nghttp2 callbacks of the client session: the same pattern as NghttpCallbacks.swift (private
// global thunks, the session recovered unretained from user_data), cast to HTTP2ClientSession.

@inline(__always)
private func clientOwner(_ user: UnsafeMutableRawPointer?) -> HTTP2ClientSession? {
    guard let user else { return nil }
    return Unmanaged<HTTP2ClientSession>.fromOpaque(user).takeUnretainedValue()
}

private let clientCallbackFailure = NGHTTP2_ERR_CALLBACK_FAILURE.rawValue

func clientThunkBeginHeaders(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = clientOwner(user) else { return clientCallbackFailure }
    session.onBeginHeaders(frame)
    return 0
}

func clientThunkHeader(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
                       _ name: UnsafePointer<UInt8>?, _ namelen: Int,
                       _ value: UnsafePointer<UInt8>?, _ valuelen: Int,
                       _ flags: UInt8, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = clientOwner(user) else { return clientCallbackFailure }
    session.onHeader(frame, name: UnsafeRawBufferPointer(start: name, count: name == nil ? 0 : namelen),
                     value: UnsafeRawBufferPointer(start: value, count: value == nil ? 0 : valuelen))
    return 0
}

func clientThunkFrameRecv(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = clientOwner(user) else { return clientCallbackFailure }
    session.onFrameRecv(frame)
    return 0
}

func clientThunkDataChunk(_ s: OpaquePointer?, _ flags: UInt8, _ streamID: Int32,
                          _ data: UnsafePointer<UInt8>?, _ len: Int, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let session = clientOwner(user) else { return clientCallbackFailure }
    session.onDataChunk(streamID: streamID, UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : len))
    return 0
}

func clientThunkStreamClose(_ s: OpaquePointer?, _ streamID: Int32, _ errorCode: UInt32, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let session = clientOwner(user) else { return clientCallbackFailure }
    session.onStreamClose(streamID: streamID, errorCode: errorCode)
    return 0
}

func clientThunkInvalidFrame(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ libError: Int32, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = clientOwner(user) else { return clientCallbackFailure }
    session.onInvalidFrame(frame, libError: libError)
    return 0
}

func clientThunkFrameSend(_ s: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let frame, let session = clientOwner(user) else { return clientCallbackFailure }
    session.onFrameSend(frame)
    return 0
}

func clientThunkDataSourceRead(_ s: OpaquePointer?, _ streamID: Int32, _ buf: UnsafeMutablePointer<UInt8>?, _ length: Int,
                               _ flags: UnsafeMutablePointer<UInt32>?, _ source: UnsafeMutablePointer<nghttp2_data_source>?,
                               _ user: UnsafeMutableRawPointer?) -> Int {
    guard let buf, let flags, let session = clientOwner(user) else { return Int(clientCallbackFailure) }
    return session.readData(streamID: streamID, into: buf, length: length, flags: flags)
}
