import Config
import Filters
import Foundation

/// `outrider check`: validates the config and every rule file it names.
enum CheckCommand {
    static func run(_ args: Arguments) -> Int32 {
        guard let path = args.configPath else { return 2 }
        switch ConfigValidation.load(path: path, args: args) {
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
    static func load(path: String, args: Arguments) -> Result<LoadedConfig, ConfigErrors> {
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
        return .success(loaded)
    }
}
