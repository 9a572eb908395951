//! az-style output: `-o json|jsonc|table|tsv|yaml|none` and `--query JMESPATH`.
//!
//! Table and TSV follow az: one row per object, scalar fields only (nested objects and lists are left
//! out), headers from field names with the first letter upper-cased. The table also leaves out `id`,
//! `etag` and `type`, which are long and the same shape for every row; `-o json` shows them.

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::Value;

/// Output formats, as az names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Indented JSON (the default).
    Json,
    /// Coloured JSON.
    Jsonc,
    /// Aligned columns.
    Table,
    /// Tab-separated values, no headers.
    Tsv,
    /// YAML.
    Yaml,
    /// Nothing.
    None,
}

/// Applies `--query` and prints `value` in `format`.
pub fn print(value: &Value, format: Format, query: Option<&str>) -> Result<()> {
    let value = match query {
        Some(q) => apply_query(value, q)?,
        None => value.clone(),
    };
    let text = render(&value, format)?;
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

/// Evaluates a JMESPath expression, as az's `--query` does.
pub fn apply_query(value: &Value, query: &str) -> Result<Value> {
    let expr = jmespath::compile(query)
        .with_context(|| format!("--query: '{query}' is not a valid JMESPath expression"))?;
    let result = expr
        .search(value.clone())
        .with_context(|| format!("--query '{query}' failed"))?;
    Ok(serde_json::to_value(&*result)?)
}

/// Renders `value` as text in `format`.
pub fn render(value: &Value, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Jsonc => colour_json(value, 0),
        Format::Yaml => serde_yaml::to_string(value)?.trim_end().to_string(),
        Format::None => String::new(),
        Format::Tsv => rows(value)
            .iter()
            .map(|r| {
                r.iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Table => table(value),
    })
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// (header, text) pairs per row.
fn rows(value: &Value) -> Vec<Vec<(String, String)>> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) => map
                .iter()
                .filter_map(|(k, v)| scalar_text(v).map(|t| (header(k), t)))
                .collect(),
            other => vec![(
                "Result".to_string(),
                scalar_text(other).unwrap_or_else(|| other.to_string()),
            )],
        })
        .collect()
}

fn header(key: &str) -> String {
    let mut c = key.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn table(value: &Value) -> String {
    const HIDDEN: &[&str] = &["Id", "Etag", "Type"];
    let rows = rows(value);
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (h, _) in row {
            if !HIDDEN.contains(&h.as_str()) && !columns.contains(h) {
                columns.push(h.clone());
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let cell = |row: &Vec<(String, String)>, col: &str| {
        row.iter()
            .find(|(h, _)| h == col)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![
        line(columns.clone()),
        line(widths.iter().map(|w| "-".repeat(*w)).collect()),
    ];
    for row in &rows {
        out.push(line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    out.join("\n")
}

fn colour_json(v: &Value, indent: usize) -> String {
    const KEY: &str = "\x1b[94m";
    const STR: &str = "\x1b[32m";
    const NUM: &str = "\x1b[36m";
    const RESET: &str = "\x1b[0m";
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{KEY}{}{RESET}: {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        colour_json(v, indent + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        Value::Array(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|v| format!("{pad}{}", colour_json(v, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        Value::String(_) => format!("{STR}{v}{RESET}"),
        Value::Number(_) | Value::Bool(_) | Value::Null => format!("{NUM}{v}{RESET}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_and_tsv_like_az() {
        let v = json!([{"name": "a", "id": "/x", "dpdTimeoutSeconds": 45, "nested": {"x": 1}}, {"name": "bb", "id": "/y", "dpdTimeoutSeconds": 9}]);
        let t = render(&v, Format::Table).unwrap();
        assert_eq!(t.lines().next().unwrap(), "Name  DpdTimeoutSeconds");
        assert!(t.lines().nth(1).unwrap().starts_with("----"));
        assert_eq!(render(&v, Format::Tsv).unwrap(), "a\t/x\t45\nbb\t/y\t9");
        let q = apply_query(&v, "[].name").unwrap();
        assert_eq!(q, json!(["a", "bb"]));
        assert_eq!(render(&q, Format::Tsv).unwrap(), "a\nbb");
    }
}
