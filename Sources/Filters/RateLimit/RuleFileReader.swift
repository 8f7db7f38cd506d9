#if canImport(Glibc)
import Glibc
#endif
import Config

/// Reads a rule file into a `ConfigNode` tree with lines, exactly as `outrider.yaml` is read
/// (Config's `YAMLReader`), with a size bound.
enum RuleFileReader {
    static let maxBytes = 4 * 1024 * 1024

    static func read(path: String) -> Result<ConfigNode?, ConfigDiagnostic> {
        guard let text = readFile(path) else {
            return .failure(ConfigDiagnostic(file: path, line: 0, message: "cannot read rule file (\(String(cString: strerror(errno))))"))
        }
        if text.utf8.count > maxBytes {
            return .failure(ConfigDiagnostic(file: path, line: 0, message: "rule file larger than \(maxBytes) bytes"))
        }
        return parse(text: text, file: path)
    }

    static func parse(text: String, file: String) -> Result<ConfigNode?, ConfigDiagnostic> {
        YAMLReader.read(text: text, file: file)
    }

    private static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 65536, f) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < 65536 { break }
            if bytes.count > maxBytes { break }
        }
        if ferror(f) != 0 { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
