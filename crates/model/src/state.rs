//! The desired state as one value, its export/apply document, and the diff between two states.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ConnectionSpec, LocalGatewaySpec, VnetGatewaySpec, collection};

/// Everything an operator has asked for. Small (hundreds of resources), so a change is made on a copy,
/// validated whole, and only then stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// The gateway, at most one per daemon.
    pub gateway: Option<VnetGatewaySpec>,
    /// Local gateways by name.
    pub local_gateways: BTreeMap<String, LocalGatewaySpec>,
    /// Connections by name.
    pub connections: BTreeMap<String, ConnectionSpec>,
}

impl DesiredState {
    /// Fills in derived values (SKU tier, reference ids) so that equal intent compares equal.
    pub fn normalise(&mut self) {
        let gw_name = self.gateway.as_ref().map(|g| g.name.clone());
        if let Some(gw) = &mut self.gateway {
            gw.sku.tier = Some(gw.sku.name);
            if let Some(p2s) = &mut gw.vpn_client_configuration {
                for r in &mut p2s.vpn_client_revoked_certificates {
                    r.thumbprint = r.thumbprint.to_ascii_uppercase();
                }
            }
        }
        for c in self.connections.values_mut() {
            c.normalise_refs(gw_name.as_deref());
        }
    }

    /// The names of the connections that use local gateway `name`.
    pub fn connections_using(&self, local_gateway: &str) -> Vec<&str> {
        self.connections
            .values()
            .filter(|c| c.local_network_gateway2.name == local_gateway)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Builds a state from an apply document.
    pub fn from_document(doc: StateDocument) -> Result<Self, String> {
        let mut state = DesiredState {
            gateway: doc.virtual_network_gateway,
            ..Default::default()
        };
        for lg in doc.local_network_gateways {
            if state.local_gateways.insert(lg.name.clone(), lg).is_some() {
                return Err("a local gateway is listed twice in localNetworkGateways".into());
            }
        }
        for c in doc.connections {
            let name = c.name.clone();
            if state.connections.insert(name.clone(), c).is_some() {
                return Err(format!(
                    "connection '{name}' is listed twice in connections"
                ));
            }
        }
        state.normalise();
        Ok(state)
    }

    /// The export document; shared keys only when asked for.
    pub fn to_document(&self, include_secrets: bool) -> Value {
        let connections: Vec<Value> = self
            .connections
            .values()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                if include_secrets
                    && let (Some(key), Some(obj)) = (&c.shared_key, v.as_object_mut())
                {
                    obj.insert("sharedKey".into(), Value::String(key.clone()));
                }
                v
            })
            .collect();
        serde_json::json!({
            "apiVersion": API_VERSION,
            "virtualNetworkGateway": self.gateway,
            "localNetworkGateways": self.local_gateways.values().collect::<Vec<_>>(),
            "connections": connections,
        })
    }
}

/// The version tag of the export/apply document.
pub const API_VERSION: &str = "vgw/v1";

/// The document `vgw export` prints and `vgw apply -f` reads (as YAML or JSON).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateDocument {
    /// Must be `vgw/v1` when present.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The gateway.
    #[serde(default)]
    pub virtual_network_gateway: Option<VnetGatewaySpec>,
    /// Local gateways.
    #[serde(default)]
    pub local_network_gateways: Vec<LocalGatewaySpec>,
    /// Connections; a connection without `sharedKey` keeps its current key.
    #[serde(default)]
    pub connections: Vec<ConnectionSpec>,
}

/// What a change does to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ChangeAction {
    /// The resource is new.
    Create,
    /// Some fields change.
    Update,
    /// The resource goes.
    Delete,
}

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// Dotted path, e.g. `ipsecPolicies[0].dhGroup`.
    pub path: String,
    /// Old value (absent when created).
    pub before: Option<Value>,
    /// New value (absent when removed).
    pub after: Option<Value>,
}

/// One resource that differs between two states.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Create, update or delete.
    pub action: ChangeAction,
    /// Collection name, e.g. `connections`.
    pub resource_type: String,
    /// Resource name.
    pub name: String,
    /// The fields that differ (for updates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// The resources of `before` and `after` that differ, in a stable order. Secrets show as
/// `"<secret>"`, never their value.
pub fn diff(before: &DesiredState, after: &DesiredState) -> Vec<Change> {
    let mut out = Vec::new();
    let gw = |s: &DesiredState| -> BTreeMap<String, Value> {
        s.gateway
            .iter()
            .map(|g| (g.name.clone(), serde_json::to_value(g).unwrap_or_default()))
            .collect()
    };
    diff_collection(&mut out, collection::GATEWAYS, &gw(before), &gw(after));
    let lgs = |s: &DesiredState| -> BTreeMap<String, Value> {
        s.local_gateways
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect()
    };
    diff_collection(
        &mut out,
        collection::LOCAL_GATEWAYS,
        &lgs(before),
        &lgs(after),
    );
    let conns = |s: &DesiredState| -> BTreeMap<String, Value> {
        s.connections
            .iter()
            .map(|(k, v)| {
                let mut value = serde_json::to_value(v).unwrap_or_default();
                if let (Some(obj), Some(key)) = (value.as_object_mut(), &v.shared_key) {
                    // A digest, so a changed key shows as a change without revealing either key.
                    let digest =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
                    obj.insert(
                        "sharedKey".into(),
                        Value::String(format!("{:?}", &digest.as_ref()[..8])),
                    );
                }
                (k.clone(), value)
            })
            .collect()
    };
    let mut conn_changes = Vec::new();
    diff_collection(
        &mut conn_changes,
        collection::CONNECTIONS,
        &conns(before),
        &conns(after),
    );
    for change in &mut conn_changes {
        for f in &mut change.fields {
            if f.path == "sharedKey" {
                f.before = f.before.as_ref().map(|_| Value::String("<secret>".into()));
                f.after = f
                    .after
                    .as_ref()
                    .map(|_| Value::String("<secret, changed>".into()));
            }
        }
    }
    out.extend(conn_changes);
    out
}

fn diff_collection(
    out: &mut Vec<Change>,
    kind: &str,
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
) {
    for (name, b) in before {
        match after.get(name) {
            None => out.push(Change {
                action: ChangeAction::Delete,
                resource_type: kind.into(),
                name: name.clone(),
                fields: vec![],
            }),
            Some(a) if a != b => {
                let mut fields = Vec::new();
                diff_values(&mut fields, "", Some(b), Some(a));
                out.push(Change {
                    action: ChangeAction::Update,
                    resource_type: kind.into(),
                    name: name.clone(),
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        out.push(Change {
            action: ChangeAction::Create,
            resource_type: kind.into(),
            name: name.clone(),
            fields: vec![],
        });
    }
}

fn diff_values(
    out: &mut Vec<FieldChange>,
    path: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            for (k, bv) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(out, &p, Some(bv), a.get(k));
            }
            for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(out, &p, None, Some(av));
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                diff_values(out, &format!("{path}[{i}]"), Some(bv), Some(av));
            }
        }
        (b, a) if b != a => out.push(FieldChange {
            path: path.to_string(),
            before: b.cloned(),
            after: a.cloned(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn diff_reports_fields_and_hides_keys() {
        let mut a = DesiredState::default();
        let lg = LocalGatewaySpec {
            name: "s1".into(),
            gateway_ip_address: Some("198.18.0.1".into()),
            ..Default::default()
        };
        a.local_gateways.insert("s1".into(), lg.clone());
        let c = ConnectionSpec {
            name: "c1".into(),
            local_network_gateway2: ResourceRef::new(collection::LOCAL_GATEWAYS, "s1"),
            shared_key: Some("old-secret".into()),
            dpd_timeout_seconds: 45,
            ..Default::default()
        };
        a.connections.insert("c1".into(), c.clone());
        let mut b = a.clone();
        b.connections.get_mut("c1").unwrap().shared_key = Some("new-secret".into());
        b.connections.get_mut("c1").unwrap().dpd_timeout_seconds = 30;
        b.local_gateways.remove("s1");
        let changes = diff(&a, &b);
        assert_eq!(changes.len(), 2);
        let text = serde_json::to_string(&changes).unwrap();
        assert!(!text.contains("secret\""), "{text}");
        assert!(!text.contains("old-secret") && !text.contains("new-secret"));
        assert!(text.contains("dpdTimeoutSeconds"));
        assert!(diff(&a, &a).is_empty());
    }
}
