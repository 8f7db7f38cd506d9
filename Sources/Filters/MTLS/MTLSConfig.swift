import Config
import OutriderCore

/// The mtls filter's settings, from its `outrider.yaml` entry:
/// ```yaml
/// - name: mtls
///   mode: enforce                    # enforce | shadow (count and log, never refuse) | off
///   policy: filters/mtls/policy.yaml # relative to outrider.yaml's directory
/// ```
/// The policy file's format is in filters/mtls/README.md.
struct MTLSSettings: Sendable {
    var policyFile: String
    var policy: MTLSPolicy
}

enum MTLSFilterBuilder: FilterBuilder {
    static let name = "mtls"
    static let knownKeys: Set<String> = ["name", "mode", "policy"]

    static func validate(_ entry: FilterEntry, environment: [String: String]) -> [ConfigDiagnostic] {
        switch parse(entry) {
        case .success: return []
        case .failure(let e): return e.diagnostics
        }
    }

    static func build(_ entry: FilterEntry, context: FilterBuildContext) throws(ConfigErrors) -> any FilterFactory {
        let settings: MTLSSettings
        switch parse(entry) {
        case .success(let s): settings = s
        case .failure(let e): throw e
        }
        return MTLSFactory(mode: entry.mode, settings: settings, metrics: context.metrics)
    }

    /// The policy file, so that editing it reloads the config.
    static func watchedFiles(_ entry: FilterEntry) -> [String] {
        policyPath(entry).map { [$0] } ?? []
    }

    static func policyPath(_ entry: FilterEntry) -> String? {
        guard let p = entry.settings["policy"]?.stringValue, !p.isEmpty else { return nil }
        return resolve(p, against: entry.file)
    }

    static func resolve(_ path: String, against configFile: String) -> String {
        if path.hasPrefix("/") { return path }
        guard let slash = configFile.lastIndex(of: "/") else { return path }
        return String(configFile[...slash]) + path
    }

    static func parse(_ entry: FilterEntry) -> Result<MTLSSettings, ConfigErrors> {
        var errors: [ConfigDiagnostic] = []
        let node = entry.settings
        func error(_ n: ConfigNode?, _ message: String) {
            errors.append(ConfigDiagnostic(file: entry.file, line: n?.line ?? entry.line, column: n?.column ?? 0, message: "filter 'mtls': \(message)"))
        }
        for (key, value) in node.mapEntries ?? [] where !knownKeys.contains(key) {
            error(value, "unknown key '\(key)' (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }
        guard let policyNode = node["policy"] else {
            error(node, "missing `policy:` (the policy file, e.g. filters/mtls/policy.yaml)")
            return .failure(ConfigErrors(errors))
        }
        guard let path = policyPath(entry) else {
            error(policyNode, "policy must be a file path")
            return .failure(ConfigErrors(errors))
        }
        var policy: MTLSPolicy?
        switch MTLSPolicyParser.load(path: path) {
        case .success(let p): policy = p
        case .failure(let e):
            if e.diagnostics.count == 1, e.diagnostics[0].line == 0 {
                // Unreadable: say which entry named it.
                error(policyNode, "policy: \(path): \(e.diagnostics[0].message)")
            } else {
                errors += e.diagnostics
            }
        }
        guard errors.isEmpty, let policy else { return .failure(ConfigErrors(errors)) }
        return .success(MTLSSettings(policyFile: path, policy: policy))
    }
}
