//! `STOREGATE_<SECTION>_<KEY>` environment overrides, as the README promises store IT.

use super::ConfigError;

const PREFIX: &str = "STOREGATE_";

/// Applies every `STOREGATE_SECTION_KEY=value` to the table. The value is read as a TOML value
/// when it parses as one (`8080`, `true`, `["a","b"]`) and as a plain string otherwise, so
/// `STOREGATE_MQTT_URL=mqtt://broker:1883` needs no quoting.
pub(super) fn apply_overrides(
    table: toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    apply_overrides_noting(table, vars, &mut |_, _| {})
}

/// `apply_overrides`, telling `note` each dotted key it set and the variable that set it.
pub(super) fn apply_overrides_noting(
    mut table: toml::Table,
    vars: impl Iterator<Item = (String, String)>,
    note: &mut dyn FnMut(String, String),
) -> Result<toml::Table, ConfigError> {
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        // Variables the CLI reads itself (STOREGATE_LOG, STOREGATE_CONFIG) have no section.
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let value = parse_value(&raw);
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(ConfigError::Env {
                var,
                message: format!("`{section}` is not a table in the config file"),
            });
        };
        note(format!("{section}.{key}"), var.clone());
        section_table.insert(key, value);
    }
    Ok(table)
}

fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_sets_nested_key_and_keeps_strings_unquoted() {
        let table: toml::Table = "[mqtt]\nurl = \"mqtt://a:1\"\n".parse().unwrap();
        let vars = vec![
            ("STOREGATE_MQTT_URL".to_string(), "mqtt://b:2".to_string()),
            (
                "STOREGATE_API_LISTEN".to_string(),
                "127.0.0.1:9".to_string(),
            ),
            ("STOREGATE_SYNC_BATCH_EVENTS".to_string(), "7".to_string()),
            ("STOREGATE_LOG".to_string(), "debug".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let out = apply_overrides(table, vars.into_iter()).unwrap();
        assert_eq!(out["mqtt"]["url"].as_str(), Some("mqtt://b:2"));
        assert_eq!(out["api"]["listen"].as_str(), Some("127.0.0.1:9"));
        assert_eq!(out["sync"]["batch_events"].as_integer(), Some(7));
        assert!(!out.contains_key("log"));
    }
}
