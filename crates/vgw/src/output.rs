//! az-style output: `-o json|jsonc|table|tsv|yaml|none` and `--query JMESPATH`.
//!
//! Table and TSV follow az: one row per object, scalar fields only (nested objects and lists are left
//! out), headers from field names with the first letter upper-cased. The table also leaves out `id`,
//! `etag` and `type`, which are long and the same shape for every row; `-o json` shows them.
//! An answer wrapped as `{"value": [...]}` (the BGP and route commands) is a list of its items. Where az
//! has a table transformer (`command_modules/network/_format.py`) the command names a [`Table`] and
//! the columns are az's; as in az, the transformer is not applied when `--query` is given. A result that
//! has items never prints an empty table.

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
    /// Coloured YAML.
    Yamlc,
    /// Aligned columns.
    Table,
    /// Tab-separated values, no headers.
    Tsv,
    /// YAML.
    Yaml,
    /// Nothing.
    None,
}

/// az's table transformers: the columns az prints for a command's `-o table`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// No transformer: every scalar field.
    Auto,
    /// `list-bgp-peer-status` (az's transform_vnet_gateway_bgp_peer_table).
    BgpPeers,
    /// `list-learned-routes` and `list-advertised-routes` (transform_vnet_gateway_routes_table).
    Routes,
    /// `local-gateway list` (transform_local_gateway_table_output).
    LocalGateways,
}

impl Table {
    /// The (header, field) pairs of the transformer, `None` for [`Table::Auto`].
    fn columns(self) -> Option<&'static [(&'static str, &'static str)]> {
        match self {
            Table::Auto => None,
            Table::BgpPeers => Some(&[
                ("Neighbor", "neighbor"),
                ("ASN", "asn"),
                ("State", "state"),
                ("ConnectedDuration", "connectedDuration"),
                ("RoutesReceived", "routesReceived"),
                ("MessagesSent", "messagesSent"),
                ("MessagesReceived", "messagesReceived"),
            ]),
            Table::Routes => Some(&[
                ("Network", "network"),
                ("NextHop", "nextHop"),
                ("Origin", "origin"),
                ("SourcePeer", "sourcePeer"),
                ("AsPath", "asPath"),
                ("Weight", "weight"),
            ]),
            Table::LocalGateways => Some(&[
                ("Name", "name"),
                ("Location", "location"),
                ("ResourceGroup", "resourceGroup"),
                ("ProvisioningState", "provisioningState"),
                ("GatewayIpAddress", "gatewayIpAddress"),
                ("AddressPrefixes", "localNetworkAddressSpace"),
            ]),
        }
    }
}

/// Applies `--query` and prints `value` in `format`.
pub fn print(value: &Value, format: Format, query: Option<&str>) -> Result<()> {
    print_table(value, format, query, Table::Auto)
}

/// Like [`print`], with az's table transformer for `-o table` (not applied with `--query`, as az).
pub fn print_table(value: &Value, format: Format, query: Option<&str>, table: Table) -> Result<()> {
    let (value, table) = match query {
        Some(q) => (apply_query(value, q)?, Table::Auto),
        None => (value.clone(), table),
    };
    let text = match format {
        Format::Table => table_with(&value, table),
        other => render(&value, other)?,
    };
    if !text.is_empty() {
        emit(&format!("{text}\n"))?;
    }
    Ok(())
}

/// Writes to standard output; a closed pipe (`vgw export | head -1`) is an [`std::io::ErrorKind::BrokenPipe`]
/// error that `main` turns into a quiet exit 0.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Evaluates a JMESPath expression, as az's `--query` does. A multiselect hash (`{a: x, b: y}`) keeps
/// the order its keys are written in, as az prints it.
pub fn apply_query(value: &Value, query: &str) -> Result<Value> {
    let expr = jmespath::compile(query)
        .with_context(|| format!("--query: '{query}' is not a valid JMESPath expression"))?;
    let result = expr
        .search(value.clone())
        .with_context(|| format!("--query '{query}' failed"))?;
    let mut out = serde_json::to_value(&*result)?;
    let mut orders = Vec::new();
    multiselect_orders(expr.as_ast(), &mut orders);
    if !orders.is_empty() {
        reorder(&mut out, &orders);
    }
    Ok(out)
}

/// The key lists of every multiselect hash in the expression, in written order.
fn multiselect_orders(ast: &jmespath::ast::Ast, out: &mut Vec<Vec<String>>) {
    use jmespath::ast::Ast;
    match ast {
        Ast::MultiHash { elements, .. } => {
            out.push(elements.iter().map(|kv| kv.key.clone()).collect());
            for kv in elements {
                multiselect_orders(&kv.value, out);
            }
        }
        Ast::MultiList { elements, .. } | Ast::Function { args: elements, .. } => {
            for e in elements {
                multiselect_orders(e, out);
            }
        }
        Ast::Projection { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Comparison { lhs, rhs, .. }
        | Ast::Condition {
            predicate: lhs,
            then: rhs,
            ..
        } => {
            multiselect_orders(lhs, out);
            multiselect_orders(rhs, out);
        }
        Ast::Flatten { node, .. }
        | Ast::ObjectValues { node, .. }
        | Ast::Not { node, .. }
        | Ast::Expref { ast: node, .. } => multiselect_orders(node, out),
        _ => {}
    }
}

/// Puts the keys of every object whose key set is a multiselect's into the multiselect's order.
fn reorder(v: &mut Value, orders: &[Vec<String>]) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| reorder(i, orders)),
        Value::Object(map) => {
            for child in map.values_mut() {
                reorder(child, orders);
            }
            let order = orders
                .iter()
                .find(|o| o.len() == map.len() && o.iter().all(|k| map.contains_key(k.as_str())));
            if let Some(order) = order {
                let mut sorted = serde_json::Map::new();
                for k in order {
                    if let Some(x) = map.shift_remove(k.as_str()) {
                        sorted.insert(k.clone(), x);
                    }
                }
                *map = sorted;
            }
        }
        _ => {}
    }
}

/// Renders `value` as text in `format`.
pub fn render(value: &Value, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Jsonc => colour_json(value, 0),
        Format::Yaml => serde_yaml::to_string(value)?.trim_end().to_string(),
        Format::Yamlc => colour_yaml(&serde_yaml::to_string(value)?),
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
        Format::Table => table_with(value, Table::Auto),
    })
}

/// YAML with az's yamlc colours: keys blue, the rest as written.
fn colour_yaml(text: &str) -> String {
    const KEY: &str = "\x1b[94m";
    const RESET: &str = "\x1b[0m";
    text.trim_end()
        .lines()
        .map(|line| {
            let body = line.trim_start_matches([' ', '-']);
            let lead = &line[..line.len() - body.len()];
            match body
                .find(": ")
                .or_else(|| body.strip_suffix(':').map(|b| b.len()))
            {
                Some(i) if !body.starts_with(['"', '\'']) => {
                    format!("{lead}{KEY}{}{RESET}{}", &body[..i], &body[i..])
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The items a table or TSV shows: a list's elements, the `value` list of a `{"value": [...]}` answer,
/// or the one object.
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(a) => a.iter().collect(),
        Value::Null => vec![],
        Value::Object(map) => match map.get("value") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => vec![value],
        },
        other => vec![other],
    }
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
    items(value)
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

/// Rows through a transformer's columns: a list field shows its first entry and `, ...` when there
/// are more, as az's local-gateway table does.
fn transformed_rows(value: &Value, columns: &[(&str, &str)]) -> Vec<Vec<(String, String)>> {
    items(value)
        .into_iter()
        .map(|item| {
            columns
                .iter()
                .map(|(h, field)| {
                    let v = &item[*field];
                    let text = match v {
                        Value::Object(o) => {
                            match o.get("addressPrefixes").and_then(Value::as_array) {
                                Some(list) => list_text(list),
                                None => v.to_string(),
                            }
                        }
                        Value::Array(list) => list_text(list),
                        other => scalar_text(other).unwrap_or_default(),
                    };
                    (h.to_string(), text)
                })
                .collect()
        })
        .collect()
}

fn list_text(list: &[Value]) -> String {
    let first = list.first().and_then(scalar_text).unwrap_or_default();
    if list.len() > 1 {
        format!("{first}, ...")
    } else {
        first
    }
}

fn header(key: &str) -> String {
    let mut c = key.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Renders a table, with az's columns when `table` names a transformer.
pub fn table_with(value: &Value, table: Table) -> String {
    const HIDDEN: &[&str] = &["Id", "Etag", "Type"];
    let (rows, mut columns) = match table.columns() {
        Some(cols) => (
            transformed_rows(value, cols),
            cols.iter().map(|(h, _)| h.to_string()).collect(),
        ),
        None => {
            let rows = rows(value);
            let mut columns: Vec<String> = Vec::new();
            for row in &rows {
                for (h, _) in row {
                    if !HIDDEN.contains(&h.as_str()) && !columns.contains(h) {
                        columns.push(h.clone());
                    }
                }
            }
            (rows, columns)
        }
    };
    if rows.is_empty() {
        return String::new();
    }
    // Items with no scalar field (or only hidden ones) still get one row each, never an empty table.
    let rows = if columns.is_empty() {
        columns.push("Result".to_string());
        items(value)
            .into_iter()
            .map(|i| vec![("Result".to_string(), i.to_string())])
            .collect()
    } else {
        rows
    };
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

    #[test]
    fn wrapped_lists_never_print_an_empty_table() {
        let peers = json!({"value": [
            {"localAddress": "10.2.255.254", "neighbor": "10.1.255.254", "asn": 65001, "state": "Connected",
             "connectedDuration": "00:05:01.0000000", "routesReceived": 2, "messagesSent": 9, "messagesReceived": 8},
            {"localAddress": "10.2.255.254", "neighbor": "10.3.255.254", "asn": 65020, "state": "Connecting",
             "connectedDuration": "", "routesReceived": 0, "messagesSent": 0, "messagesReceived": 0}
        ]});
        let t = table_with(&peers, Table::BgpPeers);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "Neighbor",
                "ASN",
                "State",
                "ConnectedDuration",
                "RoutesReceived",
                "MessagesSent",
                "MessagesReceived"
            ]
        );
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[2].starts_with("10.1.255.254"));
        // Without a transformer the wrapper's items are still the rows.
        assert_eq!(table_with(&peers, Table::Auto).lines().count(), 4);
        assert_eq!(render(&peers, Format::Tsv).unwrap().lines().count(), 2);
        let routes = json!({"value": [{"network": "10.1.0.0/16", "nextHop": "10.1.255.254", "origin": "EBgp",
            "sourcePeer": "10.1.255.254", "asPath": "65001", "weight": 32768, "localAddress": "10.2.255.254"}]});
        let t = table_with(&routes, Table::Routes);
        assert!(t.starts_with("Network"), "{t}");
        assert_eq!(t.lines().count(), 3);
        // Items with only nested fields still get a row each.
        assert_eq!(
            table_with(&json!([{"a": {"b": 1}}, {"a": [1]}]), Table::Auto)
                .lines()
                .count(),
            4
        );
        // A multiselect keeps its order.
        let q = apply_query(&json!([{"a": 1, "b": 2}]), "[].{z: b, a: a}").unwrap();
        assert_eq!(q.to_string(), r#"[{"z":2,"a":1}]"#);
    }
}
