//! `--print-config`: the effective settings as TOML.

use super::Settings;

impl Settings {
    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        let mut out = format!("environment = \"{}\"\n\n", self.environment.as_str());
        out.push_str(&toml_string(self));
        out
    }
}

fn toml_string(settings: &Settings) -> String {
    // The `config` crate pulls in a TOML parser but no serializer; serde_json → a small
    // TOML writer keeps the dependency list as it is.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, body) in sections {
            if let serde_json::Value::Object(fields) = body {
                out.push_str(&format!("[{section}]\n"));
                for (k, v) in fields {
                    if !v.is_null() {
                        out.push_str(&format!("{k} = {v}\n"));
                    }
                }
                out.push('\n');
            }
        }
    }
    out
}
