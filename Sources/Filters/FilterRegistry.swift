import Config

/// The filters this build knows, by the name used in `outrider.yaml` (`filters: - name: …`).
/// Each filter validates its own settings here, so `outrider check` and reloads reject a bad
/// entry with its file:line before anything is published.
public enum FilterRegistry {
    /// Names of the available filters. The chain and its first filters arrive with the
    /// filter-chain work; until then any entry is reported as unknown.
    public static let available: [String] = []

    public static func validate(_ entries: [FilterEntry]) -> [ConfigDiagnostic] {
        var errors: [ConfigDiagnostic] = []
        for e in entries where !available.contains(e.name) {
            let known = available.isEmpty ? "none in this build" : available.joined(separator: ", ")
            errors.append(ConfigDiagnostic(file: e.file, line: e.line, column: 1,
                                           message: "unknown filter '\(e.name)' (available: \(known))"))
        }
        return errors
    }
}
