//! The raw `[agent]` section: every source merged into strings, with
//! where each key came from, before any value is parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{invalid, ConfigError};
use super::keys;
use super::values::{self, InvalidValue};

/// The merged `[agent]` section as strings, remembering where each key came from.
#[derive(Debug, Default)]
pub(super) struct RawAgentSection {
    values: BTreeMap<String, (String, String)>,
}

impl RawAgentSection {
    pub(super) fn merge_file(&mut self, path: &Path, required: bool) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            return if required {
                Err(file_error("no such file".into()))
            } else {
                Ok(())
            };
        }
        let parsed = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .build()
            .map_err(|e| file_error(syntax_error(path, &e.to_string())))?;
        let section = match parsed.get_table("agent") {
            Ok(table) => table,
            Err(config::ConfigError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(file_error(e.to_string())),
        };
        for (key, value) in section {
            self.set(&key, flatten(value), &path.display().to_string());
        }
        Ok(())
    }

    pub(super) fn set(&mut self, key: &str, value: String, origin: &str) {
        self.values
            .insert(key.to_string(), (value, origin.to_string()));
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Parses `key` (or `default` when absent); an error names key and value.
    pub(super) fn parse<T>(
        &self,
        key: &str,
        default: &str,
        parser: impl Fn(&str) -> Result<T, InvalidValue>,
    ) -> Result<T, ConfigError> {
        let value = self.get(key).unwrap_or(default);
        let value = if value == "default" { default } else { value };
        parser(value).map_err(|InvalidValue(accepted)| invalid(key, value, &accepted))
    }

    pub(super) fn trusted_client_ca(
        &self,
        dir: &Path,
        mtls: bool,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let raw = self.get("trusted_client_ca").unwrap_or("default");
        let names = match values::list(raw) {
            names if names.is_empty() || names == ["default"] => {
                vec!["cv_ca/cacert.crt".to_string()]
            }
            names => names,
        };
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        if mtls {
            for path in &paths {
                check_ca_file(path).map_err(|why| {
                    invalid(
                        "trusted_client_ca",
                        raw,
                        &format!(
                            "readable PEM CA certificate files ({}: {why})",
                            path.display()
                        ),
                    )
                })?;
            }
        }
        Ok(paths)
    }

    /// A free-text value; empty or `"default"` gives `default`.
    pub(super) fn text(&self, key: &str, default: &str) -> String {
        self.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "default")
            .unwrap_or(default)
            .to_string()
    }

    pub(super) fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut not_used = Vec::new();
        for (key, (value, origin)) in &self.values {
            if keys::USED.contains(&key.as_str()) {
                continue;
            }
            match keys::NOT_YET_USED.iter().find(|(k, _)| k == key) {
                Some((_, default)) if value == default => {}
                Some(_) => not_used.push(key.as_str()),
                None => warnings.push(format!(
                    "config: unknown key {key:?} (from {origin}) is ignored"
                )),
            }
        }
        if !not_used.is_empty() {
            warnings.push(format!(
                "config: these keys are accepted but not acted on by this agent version: {}",
                not_used.join(", ")
            ));
        }
        warnings
    }
}

/// A TOML value as one string; arrays become a comma-separated list.
fn flatten(value: config::Value) -> String {
    match value.clone().into_array() {
        Ok(items) => items.into_iter().map(flatten).collect::<Vec<_>>().join(","),
        Err(_) => value.into_string().unwrap_or_default(),
    }
}

/// A trusted CA file must exist and hold at least one PEM certificate.
pub(super) fn check_ca_file(path: &Path) -> Result<(), String> {
    let pem = crate::secure_fs::read_trusted(path).map_err(|e| e.to_string())?;
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        _ => Err("no PEM certificate in it".into()),
    }
}

/// A TOML syntax error as the parser tells it, without the excerpt of the
/// file it quotes: that line may hold a password. What is left is the line,
/// the column, the key on that line and the parser's description.
fn syntax_error(path: &Path, parser_text: &str) -> String {
    let mut lines = parser_text.lines();
    let head = lines.next().unwrap_or_default();
    let number = |word: &str| {
        head.split_once(word).and_then(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
    };
    let Some(line) = number("line ") else {
        return "not valid TOML".into();
    };
    let column = number("column ")
        .map(|c| format!(", column {c}"))
        .unwrap_or_default();
    let is_excerpt = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    };
    let description: Vec<&str> = lines
        .filter(|l| !l.trim().is_empty() && !is_excerpt(l) && !l.starts_with(" in "))
        .collect();
    let key = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let source_line = text.lines().nth(line.checked_sub(1)?)?.to_string();
            let (key, _) = source_line.split_once('=')?;
            let key = key.trim();
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                .then(|| format!(" (key {key})"))
        })
        .unwrap_or_default();
    format!(
        "TOML syntax error at line {line}{column}{key}: {} (the line's text is not shown: it may hold a secret)",
        description.join(" ")
    )
}
