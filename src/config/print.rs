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
    let mut value = serde_json::to_value(settings).unwrap_or_default();
    // A password pasted into the URL is not printed.
    for section in ["redis", "database"] {
        if let Some(url) = value[section]["url"].as_str() {
            value[section]["url"] = super::values::redact_url(url).into();
        }
    }
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, body) in sections {
            if let serde_json::Value::Object(fields) = body {
                table(&mut out, &section, &fields);
            }
        }
    }
    out
}

/// One `[name]` table, its nested tables after its own keys.
fn table(out: &mut String, name: &str, fields: &serde_json::Map<String, serde_json::Value>) {
    out.push_str(&format!("[{name}]\n"));
    for (k, v) in fields {
        if !v.is_null() && !v.is_object() {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out.push('\n');
    for (k, v) in fields {
        if let serde_json::Value::Object(nested) = v {
            table(out, &format!("{name}.{k}"), nested);
        }
    }
}
