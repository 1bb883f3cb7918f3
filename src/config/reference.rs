//! Text generated from [`KEYS`]: the README's configuration table, `parallax.example.toml`, the
//! output of `parallax-mcp config check`, and warnings about unknown `PARALLAX_*` variables.

use super::schema::OTHER_VARIABLES;
use super::{Config, KEYS, Key};

/// Marks the generated part of the README.
pub const README_START: &str = "<!-- config-reference:start (generated from src/config/schema.rs; PARALLAX_UPDATE_SCHEMAS=1 cargo test --test it config_reference rewrites it) -->";
pub const README_END: &str = "<!-- config-reference:end -->";

/// A key's doc comment as one line.
fn doc(key: &Key) -> String {
    key.doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The default as the reference shows it.
fn default_text(key: &Key, value: Option<&String>) -> String {
    match (value, key.unset) {
        (Some(v), _) => format!("`{v}`"),
        (None, Some(unset)) => unset.to_owned(),
        (None, None) => "unset".to_owned(),
    }
}

/// The README's table of keys and variables (between [`README_START`] and [`README_END`]).
pub fn readme_table() -> String {
    let defaults = Config::default().shown_values();
    let mut out = String::new();
    out.push_str("| key | variable | default | what it sets |\n| --- | --- | --- | --- |\n");
    for (key, value) in KEYS.iter().zip(&defaults) {
        let name = if key.table.is_empty() {
            key.name.to_owned()
        } else {
            format!("[{}] {}", key.table, key.name)
        };
        out.push_str(&format!(
            "| `{name}` | `{}` | {} | {} |\n",
            key.env,
            default_text(key, value.as_ref()).replace('|', "\\|"),
            doc(key).replace('|', "\\|")
        ));
    }
    out.push_str("\nOther variables:\n\n");
    for (name, what) in OTHER_VARIABLES {
        out.push_str(&format!("- `{name}`: {what}\n"));
    }
    out
}

/// Wraps `text` as `# ` comment lines of at most 100 characters.
fn comment(text: &str, out: &mut String) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 100 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// `parallax.example.toml`: every key, commented out, with its doc, variable and default.
pub fn example_toml() -> String {
    let defaults = Config::default().shown_values();
    let mut out = String::new();
    comment(
        "parallax-mcp configuration. Every key is optional and shown commented out with its default \
         (or an example, for keys without one); uncomment what you change. Pass the file with \
         --config FILE or PARALLAX_CONFIG. Variables override the file, flags override both; \
         `parallax-mcp config check` shows the result and where each value came from.",
        &mut out,
    );
    comment(
        "Generated from src/config/schema.rs; `PARALLAX_UPDATE_SCHEMAS=1 cargo test --test it \
         config_reference` rewrites it.",
        &mut out,
    );
    let mut table = "";
    for (key, value) in KEYS.iter().zip(&defaults) {
        if key.table != table {
            table = key.table;
            out.push_str(&format!("\n[{table}]\n"));
        }
        out.push('\n');
        comment(&doc(key), &mut out);
        let default = match (value, key.unset) {
            (Some(_), _) => String::new(),
            (None, Some(unset)) => format!(" Default: {}.", unset.replace('`', "")),
            (None, None) => String::new(),
        };
        comment(&format!("Variable: {}.{default}", key.env), &mut out);
        let shown = value.as_deref().or(key.example).unwrap_or("\"\"");
        out.push_str(&format!("# {} = {shown}\n", key.name));
    }
    out
}

/// What `config check` prints: each key's effective value (secrets hidden) and its source.
pub fn check_report(config: &Config) -> String {
    let values = config.shown_values();
    let mut out = String::new();
    let mut table = "";
    let width = KEYS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for (key, value) in KEYS.iter().zip(&values) {
        if key.table != table {
            table = key.table;
            out.push_str(&format!("\n[{table}]\n"));
        }
        let source = config.origins.of(key.path);
        match value {
            Some(v) => out.push_str(&format!("{:<width$} = {v}  # {source}\n", key.name)),
            None => out.push_str(&format!(
                "# {:<width$} unset: {}  # {source}\n",
                key.name,
                key.unset.unwrap_or("").replace('`', "")
            )),
        }
    }
    out
}

/// One warning line for each `PARALLAX_*` variable in `names` that nothing reads, with the closest
/// known name when one is close.
pub fn unknown_variables<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let known: Vec<&str> = KEYS
        .iter()
        .map(|k| k.env)
        .chain(OTHER_VARIABLES.iter().map(|(n, _)| *n))
        .collect();
    let mut warnings = Vec::new();
    for name in names {
        let name = name.as_ref();
        if !name.starts_with("PARALLAX_") || known.contains(&name) {
            continue;
        }
        // Every name shares the prefix, so compare what follows it: a typo or two, not more.
        let suffix = |n: &str| n.trim_start_matches("PARALLAX_").to_owned();
        let wrong = suffix(name);
        let closest = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(&wrong, &suffix(k)), *k))
            .min_by_key(|(distance, _)| *distance)
            .filter(|(distance, _)| *distance <= (wrong.len() / 4).clamp(1, 3));
        warnings.push(match closest {
            Some((_, k)) => format!("unknown variable {name} is ignored (did you mean {k}?)"),
            None => format!("unknown variable {name} is ignored"),
        });
    }
    warnings.sort();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_get_a_suggestion() {
        let w = unknown_variables(["PARALLAX_LISTN", "PARALLAX_LISTEN", "HOME", "PARALLAX_ZZZ"]);
        assert_eq!(
            w,
            [
                "unknown variable PARALLAX_LISTN is ignored (did you mean PARALLAX_LISTEN?)",
                "unknown variable PARALLAX_ZZZ is ignored",
            ]
        );
    }

    /// Keys left unset here take their defaults from the transports; the reference states those
    /// defaults, so this fails when one changes without the other.
    #[test]
    fn documented_defaults_are_the_ones_in_use() {
        let http = crate::http::HttpOptions::default();
        let events = crate::events::EventOptions::default();
        let ms = |d: std::time::Duration| d.as_millis().to_string();
        let secs = |d: std::time::Duration| d.as_secs().to_string();
        let in_use = [
            ("http.max_body_bytes", http.max_body_bytes.to_string()),
            (
                "http.header_read_timeout_secs",
                secs(http.header_read_timeout),
            ),
            ("http.idle_timeout_secs", secs(http.idle_timeout)),
            ("http.body_read_timeout_secs", secs(http.body_read_timeout)),
            ("http.max_connections", http.max_connections.to_string()),
            (
                "stdio.max_line_bytes",
                crate::mcp::stdio::DEFAULT_MAX_LINE_BYTES.to_string(),
            ),
            ("webhooks.base_delay_ms", ms(events.webhooks.base_delay)),
            ("webhooks.max_delay_ms", ms(events.webhooks.max_delay)),
            (
                "webhooks.attempt_timeout_ms",
                ms(events.webhooks.attempt_timeout),
            ),
            (
                "webhooks.give_up_after_secs",
                secs(events.webhooks.give_up_after),
            ),
            (
                "webhooks.poll_interval_ms",
                ms(events.webhooks.poll_interval),
            ),
            ("events.poll_interval_ms", ms(events.poll_interval)),
            ("events.keepalive_ms", ms(events.keepalive)),
            ("events.access_check_ms", ms(events.access_check)),
        ];
        for (path, value) in in_use {
            let key = KEYS.iter().find(|k| k.path == path).unwrap();
            let unset = key.unset.unwrap_or_default();
            assert!(
                unset.split_whitespace().next() == Some(value.as_str()),
                "{path}: documented {unset:?}, in use {value}"
            );
        }
        let hosts = http.allowed_hosts.join(", ");
        let documented = KEYS
            .iter()
            .find(|k| k.path == "http.allowed_hosts")
            .unwrap();
        assert_eq!(
            documented.unset.unwrap().replace('`', ""),
            format!("loopback names: {hosts}")
        );
    }

    #[test]
    fn every_key_has_a_variable_and_a_doc() {
        for key in KEYS {
            // `[otel]` keys use OpenTelemetry's standard variables, as collectors expect.
            let standard = key.table == "otel" && key.env.starts_with("OTEL_");
            assert!(key.env.starts_with("PARALLAX_") || standard, "{key:?}");
            assert!(!doc(key).is_empty(), "{key:?}");
        }
        // Uncommented, every example line is a valid setting of its key.
        let uncommented: String = example_toml()
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let parsed: Result<crate::config::schema::FileConfig, _> = toml::from_str(&uncommented);
        assert!(
            parsed.is_ok(),
            "{parsed:?}\n{uncommented}",
            parsed = parsed.err()
        );
        assert_eq!(uncommented.matches(" = ").count(), KEYS.len());
    }
}
