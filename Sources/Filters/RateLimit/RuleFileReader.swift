#if canImport(Glibc)
import Glibc
#endif
import Config
import Yams

/// Reads a rule file into a `ConfigNode` tree with lines, like `outrider.yaml` is read: the YAML
/// 1.2 core schema for scalars (so `value: no` stays a string), aliases expanded under a node
/// budget. Config's own reader is internal to that module; this is the same conversion.
enum RuleFileReader {
    static let maxBytes = 4 * 1024 * 1024
    static let maxNodes = 100_000

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
        let root: Node?
        do {
            let parser = try Parser(yaml: text, resolver: .basic, constructor: .default, encoding: .utf8)
            root = try parser.singleRoot()
        } catch let error as YamlError {
            return .failure(diagnostic(error, file: file))
        } catch {
            return .failure(ConfigDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(error)"))
        }
        guard let root else { return .success(nil) }
        var budget = maxNodes
        do throws(ConfigDiagnostic) {
            return .success(try convert(root, file: file, budget: &budget))
        } catch {
            return .failure(error)
        }
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

    private static func convert(_ node: Node, file: String, budget: inout Int) throws(ConfigDiagnostic) -> ConfigNode {
        budget -= 1
        let line = node.mark?.line ?? 0
        let column = node.mark?.column ?? 0
        if budget < 0 {
            throw ConfigDiagnostic(file: file, line: line, column: column, message: "document has more than \(maxNodes) nodes (alias expansion?)")
        }
        switch node {
        case let .scalar(s):
            let tag = s.tag.rawValue
            let value: ConfigNode.Value
            if s.style != .plain || tag == Tag.Name.str.rawValue || tag == "!" {
                value = .string(s.string)
            } else {
                value = plainScalar(s.string)
            }
            return ConfigNode(value: value, file: file, line: line, column: column)
        case let .sequence(seq):
            var items: [ConfigNode] = []
            for item in seq { items.append(try convert(item, file: file, budget: &budget)) }
            return ConfigNode(value: .list(items), file: file, line: line, column: column)
        case let .mapping(mapping):
            var entries: [(key: String, value: ConfigNode)] = []
            for (k, v) in mapping {
                guard case let .scalar(ks) = k else {
                    throw ConfigDiagnostic(file: file, line: k.mark?.line ?? line, column: k.mark?.column ?? 0,
                                           message: "map keys must be plain strings")
                }
                var value = try convert(v, file: file, budget: &budget)
                // A null value (`key:`) has no mark of its own: point at the key.
                if value.line == 0 { value.line = ks.mark?.line ?? line }
                entries.append((key: ks.string, value: value))
            }
            return ConfigNode(value: .map(entries), file: file, line: line, column: column)
        case .alias:
            throw ConfigDiagnostic(file: file, line: line, column: column, message: "unresolved alias")
        }
    }

    /// YAML 1.2 core schema for plain scalars (null, booleans, integers, floats; else strings).
    static func plainScalar(_ s: String) -> ConfigNode.Value {
        switch s {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        let u = Array(s.utf8)
        var start = 0
        if let f = u.first, f == UInt8(ascii: "-") || f == UInt8(ascii: "+") { start = 1 }
        if start < u.count, u[start...].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            if let i = Int(s) { return .int(i) }
            return .string(s)
        }
        var sawDigit = false
        var ok = start < u.count
        for c in u[start...] {
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { sawDigit = true; continue }
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") { continue }
            ok = false
            break
        }
        if ok, sawDigit, let d = Double(s) { return .double(d) }
        return .string(s)
    }

    private static func diagnostic(_ error: YamlError, file: String) -> ConfigDiagnostic {
        switch error {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            return ConfigDiagnostic(file: file, line: mark.line, column: mark.column, message: "YAML syntax error: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return ConfigDiagnostic(file: file, line: context.mark.line, column: context.mark.column,
                                    message: "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in the same map")
        default:
            return ConfigDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(error)")
        }
    }
}
