/// The command line: `outrider run|check --config FILE [--workers N] [--log-level L]`, `outrider version`.
/// Hand-written: three subcommands and four flags do not justify a parser dependency.
struct Arguments {
    enum Command: String { case run, check, version, help }
    var command: Command = .help
    var configPath: String?
    var workers: Int?
    var logLevel: String?

    static let usage = """
    usage: outrider run   --config FILE [--workers N] [--log-level debug|info|warn|error]
           outrider check --config FILE
           outrider version

      run     start the proxy with FILE (outrider.yaml); reloads it on change or SIGHUP
      check   validate FILE and every rule file it names; prints OK, or file:line: reason (exit 1)

    environment: OUTRIDER_WORKERS, OUTRIDER_LOG_LEVEL, OUTRIDER_ADMIN_ADDRESS override the file.
    """

    init() {}

    init(_ argv: [String]) throws(UsageError) {
        var rest = argv.dropFirst()
        guard let first = rest.popFirst() else { return }
        switch first {
        case "-h", "--help", "help": command = .help; return
        case "-v", "--version": command = .version; return
        default:
            guard let c = Command(rawValue: first) else { throw UsageError("unknown command '\(first)'") }
            command = c
        }
        while let arg = rest.popFirst() {
            // Accept both "--flag value" and "--flag=value".
            var name = arg
            var inline: String?
            if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") {
                name = String(arg[..<eq])
                inline = String(arg[arg.index(after: eq)...])
            }
            func value() throws(UsageError) -> String {
                if let v = inline { return v }
                guard let v = rest.popFirst() else { throw UsageError("\(name) needs a value") }
                return v
            }
            switch name {
            case "-c", "--config", "--config-path": configPath = try value()
            case "--workers":
                let v = try value()
                guard let n = Int(v), n >= 0, n <= 256 else { throw UsageError("--workers must be an integer between 0 and 256") }
                workers = n
            case "-l", "--log-level":
                let v = try value()
                guard ["debug", "info", "warn", "error"].contains(v) else { throw UsageError("--log-level must be debug, info, warn or error") }
                logLevel = v
            default: throw UsageError("unknown flag '\(arg)'")
            }
        }
        if (command == .run || command == .check) && configPath == nil {
            throw UsageError("\(command.rawValue) needs --config FILE")
        }
    }
}

struct UsageError: Error {
    let message: String
    init(_ m: String) { message = m }
}
