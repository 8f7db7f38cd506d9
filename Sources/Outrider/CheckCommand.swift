import Config
import Filters
import Foundation
import Proxy
import Telemetry

/// `outrider check`: validates the config and every rule file it names.
enum CheckCommand {
    static func run(_ args: Arguments) -> Int32 {
        guard let path = args.configPath else { return 2 }
        switch ConfigValidation.load(path: path, args: args, buildSnapshot: true) {
        case .success:
            print("OK")
            return 0
        case .failure(let errors):
            for d in errors.diagnostics { print(d.description) }
            return 1
        }
    }
}

/// Loading shared by `check`, start-up and reloads: the file, the environment, the command
/// line, then every filter's own validation.
enum ConfigValidation {
    /// `buildSnapshot`: also load certificates and resolve addresses, as start-up and reloads do
    /// when they build the snapshot (so `check` reports those errors too).
    static func load(path: String, args: Arguments, buildSnapshot: Bool = false) -> Result<LoadedConfig, ConfigErrors> {
        var loaded: LoadedConfig
        let environment = ProcessInfo.processInfo.environment
        do {
            loaded = try ConfigLoader.load(path: path, environment: environment)
        } catch {
            return .failure(error)
        }
        // Command-line flags win over the file and the environment.
        if let w = args.workers { loaded.config.workers = w }
        if let l = args.logLevel, let level = LogLevel(rawValue: l) { loaded.config.logLevel = level }
        let filterErrors = FilterRegistry.validate(loaded.config.filters, environment: environment)
        if !filterErrors.isEmpty { return .failure(ConfigErrors(filterErrors)) }
        // Certificates, keys and addresses: build the data-path snapshot once, without filters.
        if buildSnapshot { do {
            let registry = MetricsRegistry()
            _ = try ConfigSnapshot(version: 0, loaded: loaded, chain: FilterChain.empty(metrics: registry), metrics: ProxyMetrics(registry: registry))
        } catch {
            return .failure(error)
        } }
        return .success(loaded)
    }
}
