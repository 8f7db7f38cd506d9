import Config
import OutriderCore
import Telemetry

/// What a filter builder gets besides its config entry.
public struct FilterBuildContext: Sendable {
    public var metrics: MetricsRegistry
    public var environment: [String: String]
    public var version: String
    public init(metrics: MetricsRegistry, environment: [String: String], version: String) {
        self.metrics = metrics; self.environment = environment; self.version = version
    }
}

/// One kind of filter: how to validate an `outrider.yaml` entry and build its factory.
public protocol FilterBuilder {
    static var name: String { get }
    /// Parses and checks the entry (and any rule files it names) without side effects:
    /// `outrider check` calls only this. Errors carry file:line.
    static func validate(_ entry: FilterEntry, environment: [String: String]) -> [ConfigDiagnostic]
    /// Builds the immutable factory for a config version. Called after `validate` passed.
    static func build(_ entry: FilterEntry, context: FilterBuildContext) throws(ConfigErrors) -> any FilterFactory
    /// Files this entry reads (rule files), watched like the config so an edit reloads.
    static func watchedFiles(_ entry: FilterEntry) -> [String]
}

extension FilterBuilder {
    public static func watchedFiles(_ entry: FilterEntry) -> [String] { [] }
}

/// The filters this build knows, by the name used in `outrider.yaml` (`filters: - name: …`).
public enum FilterRegistry {
    // Computed, not stored: a stored array of metatypes is global state to Swift 6.
    static var builders: [any FilterBuilder.Type] { [TracingFilterBuilder.self, RateLimitFilterBuilder.self, WAFFilterBuilder.self, MTLSFilterBuilder.self] }

    public static var available: [String] { builders.map { $0.name } }

    static func builder(_ name: String) -> (any FilterBuilder.Type)? {
        builders.first { $0.name == name }
    }

    /// Every entry's own validation, plus unknown names. Used by `check` and every (re)load.
    public static func validate(_ entries: [FilterEntry], environment: [String: String]) -> [ConfigDiagnostic] {
        var errors: [ConfigDiagnostic] = []
        for e in entries {
            guard let b = builder(e.name) else {
                errors.append(ConfigDiagnostic(file: e.file, line: e.line, column: 1,
                                               message: "unknown filter '\(e.name)' (available: \(available.joined(separator: ", ")))"))
                continue
            }
            errors += b.validate(e, environment: environment)
        }
        return errors
    }

    /// Every rule file the entries name, for the file watcher.
    public static func watchedFiles(_ entries: [FilterEntry]) -> [String] {
        var files: [String] = []
        for e in entries {
            guard let b = builder(e.name) else { continue }
            for f in b.watchedFiles(e) where !files.contains(f) { files.append(f) }
        }
        return files
    }

    /// The chain for one config version, in file order.
    public static func buildChain(_ entries: [FilterEntry], context: FilterBuildContext) throws(ConfigErrors) -> FilterChain {
        var factories: [any FilterFactory] = []
        for e in entries where e.mode != .off {
            guard let b = builder(e.name) else {
                throw ConfigErrors([ConfigDiagnostic(file: e.file, line: e.line, column: 1, message: "unknown filter '\(e.name)'")])
            }
            factories.append(try b.build(e, context: context))
        }
        return FilterChain(factories: factories, metrics: context.metrics)
    }
}
