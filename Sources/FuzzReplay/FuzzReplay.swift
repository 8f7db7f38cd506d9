#if canImport(Glibc)
import Glibc
#endif

/// The replay driver of the fuzz targets' plain builds (`swift build` without libFuzzer): runs
/// each file named on the command line through the target's fuzz entry, so a crash input found
/// by `make fuzz` / `make fuzz-waf` can be reproduced (and debugged) without the fuzzer.
public func replayFiles(_ paths: some Sequence<String>, through entry: (UnsafePointer<UInt8>, Int) -> Int32) {
    var files = 0
    for path in paths {
        guard let bytes = readFile(path) else {
            print("cannot read \(path)")
            continue
        }
        bytes.withUnsafeBufferPointer { buffer in
            if let base = buffer.baseAddress { _ = entry(base, buffer.count) }
        }
        files += 1
    }
    print("ok \(files) files")
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return bytes
}
