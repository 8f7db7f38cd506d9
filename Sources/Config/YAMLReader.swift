import Yams

/// Turns YAML text into a `ConfigNode` tree, or a diagnostic with the line of the problem.
public enum YAMLReader {
    /// Aliases are expanded into copies; this bound stops a "billion laughs" document from
    /// expanding into an unbounded tree.
    static let maxNodes = 100_000

    /// Also the door for rule files that filters read (rate-limit rules, mTLS policy), so every
    /// YAML file Outrider reads has the same scalar rules and line numbers.
    public static func read(text: String, file: String) -> Result<ConfigNode?, ConfigDiagnostic> {
        let root: Node?
        do {
            // The basic resolver: scalars are typed by ConfigNode's core schema, not Yams' YAML 1.1
            // rules (which would read `off` as false). UTF-8 explicitly: Yams' default consults
            // an environment variable and prints to stdout.
            let parser = try Parser(yaml: text, resolver: .basic, constructor: .default, encoding: .utf8)
            root = try parser.singleRoot()
        } catch let error as YamlError {
            return .failure(diagnostic(for: error, text: text, file: file))
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

    private static func position(_ mark: Mark?) -> ConfigNode.Position {
        ConfigNode.Position(line: mark?.line ?? 0, column: mark?.column ?? 0)
    }

    private static func convert(_ node: Node, file: String, budget: inout Int) throws(ConfigDiagnostic) -> ConfigNode {
        budget -= 1
        let pos = position(node.mark)
        if budget < 0 {
            throw ConfigDiagnostic(file: file, line: pos.line, column: pos.column,
                                   message: "document has more than \(maxNodes) nodes (alias expansion?)")
        }
        switch node {
        case let .scalar(scalar):
            return ConfigNode(value: scalarValue(scalar), file: file, line: pos.line, column: pos.column)
        case let .sequence(seq):
            var items: [ConfigNode] = []
            items.reserveCapacity(seq.count)
            for item in seq { items.append(try convert(item, file: file, budget: &budget)) }
            return ConfigNode(value: .list(items), file: file, line: pos.line, column: pos.column)
        case let .mapping(mapping):
            var entries: [(key: String, value: ConfigNode)] = []
            var keyPositions: [String: ConfigNode.Position] = [:]
            for (k, v) in mapping {
                guard case let .scalar(keyScalar) = k else {
                    let kp = position(k.mark)
                    throw ConfigDiagnostic(file: file, line: kp.line, column: kp.column,
                                           message: "map keys must be plain strings")
                }
                let value = try convert(v, file: file, budget: &budget)
                entries.append((key: keyScalar.string, value: value))
                keyPositions[keyScalar.string] = position(keyScalar.mark)
            }
            var result = ConfigNode(value: .map(entries), file: file, line: pos.line, column: pos.column)
            result.keyPositions = keyPositions
            return result
        case .alias:
            // The parser resolves aliases to their anchored node; this case is for emitting.
            throw ConfigDiagnostic(file: file, line: pos.line, column: pos.column, message: "unresolved alias")
        }
    }

    private static func scalarValue(_ scalar: Node.Scalar) -> ConfigNode.Value {
        // Reading `tag.rawValue` does not resolve the tag: "" means untagged, and quoted
        // scalars arrive tagged !!str.
        let tag = scalar.tag.rawValue
        if scalar.style != .plain || tag == Tag.Name.str.rawValue || tag == "!" {
            return .string(scalar.string)
        }
        return .fromPlainScalar(scalar.string)
    }

    private static func diagnostic(for error: YamlError, text: String, file: String) -> ConfigDiagnostic {
        func diag(_ mark: Mark, _ context: YamlError.Context?, _ problem: String) -> ConfigDiagnostic {
            var message = "YAML syntax error: \(problem)"
            if let context {
                message += " (\(context.text) at line \(context.mark.line))"
            }
            return ConfigDiagnostic(file: file, line: mark.line, column: mark.column, message: message)
        }
        switch error {
        case let .scanner(context, problem, mark, _): return diag(mark, context, problem)
        case let .parser(context, problem, mark, _): return diag(mark, context, problem)
        case let .composer(context, problem, mark, _): return diag(mark, context, problem)
        case let .duplicatedKeysInMapping(duplicates, context):
            let names = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return ConfigDiagnostic(file: file, line: context.mark.line, column: context.mark.column,
                                    message: "duplicate key \(names) in the same map")
        case let .reader(problem, offset, _, _):
            var line = 1
            if let offset {
                // offset counts Characters from the start of the text.
                for ch in text.prefix(max(0, offset)) where ch == "\n" || ch == "\r\n" { line += 1 }
            }
            return ConfigDiagnostic(file: file, line: line, column: 0, message: "cannot read YAML: \(problem)")
        default:
            return ConfigDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(error)")
        }
    }
}
