//! The OpenAPI 3.1 document served at `/openapi.json`: paths listed here, schemas generated from the
//! model types, so the document cannot drift from what the API parses.

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::model::{
    ConnectionSpec, LocalGatewaySpec, NatRule, RevokedCertificate, RootCertificate, VnetGatewaySpec,
};
use crate::state::{Change, StateDocument};
use crate::status::ConnectionStatus;

/// (method, path, summary, request schema, response schema)
const OPERATIONS: &[(&str, &str, &str, Option<&str>, &str)] = &[
    (
        "get",
        "/api/virtualNetworkGateways",
        "List the gateway (at most one)",
        None,
        "List",
    ),
    (
        "get",
        "/api/virtualNetworkGateways/{gw}",
        "Show the gateway",
        None,
        "VnetGatewaySpec",
    ),
    (
        "put",
        "/api/virtualNetworkGateways/{gw}",
        "Create or replace the gateway",
        Some("VnetGatewaySpec"),
        "VnetGatewaySpec",
    ),
    (
        "delete",
        "/api/virtualNetworkGateways/{gw}",
        "Delete the gateway (no connections may remain)",
        None,
        "Empty",
    ),
    (
        "get",
        "/api/scope",
        "The subscription id and resource group of this daemon's resources",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/reset",
        "Re-establish every tunnel (?gatewayVip=IP for one instance)",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/getBgpPeerStatus",
        "BGP peer status",
        None,
        "List",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/getLearnedRoutes",
        "Routes learned from BGP peers and static",
        None,
        "List",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/getAdvertisedRoutes",
        "Routes advertised to ?peer=IP",
        None,
        "List",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/getVpnClientConnectionHealth",
        "Point-to-site clients",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/generatevpnclientpackage",
        "Build the client profile package",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/getvpnclientpackageurl",
        "URL of the client profile package",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/revokevpnclientpackageurls",
        "Revoke package URLs: {url}, {wireGuardPeer} or {all: true} (vgw)",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/startPacketCapture",
        "Start a gateway packet capture",
        None,
        "Object",
    ),
    (
        "post",
        "/api/virtualNetworkGateways/{gw}/stopPacketCapture",
        "Stop it and write the pcapng file; the answer names it",
        None,
        "Object",
    ),
    (
        "get",
        "/api/packetCaptures/{file}",
        "Download a finished capture (application/octet-stream, pcapng)",
        None,
        "Object",
    ),
    (
        "get",
        "/api/virtualNetworkGateways/{gw}/natRules",
        "List NAT rules",
        None,
        "List",
    ),
    (
        "get",
        "/api/virtualNetworkGateways/{gw}/natRules/{item}",
        "Show a NAT rule",
        None,
        "NatRule",
    ),
    (
        "put",
        "/api/virtualNetworkGateways/{gw}/natRules/{item}",
        "Create or replace a NAT rule",
        Some("NatRule"),
        "NatRule",
    ),
    (
        "delete",
        "/api/virtualNetworkGateways/{gw}/natRules/{item}",
        "Delete a NAT rule",
        None,
        "Empty",
    ),
    (
        "put",
        "/api/virtualNetworkGateways/{gw}/vpnClientRootCertificates/{item}",
        "Add a P2S root certificate",
        Some("RootCertificate"),
        "RootCertificate",
    ),
    (
        "delete",
        "/api/virtualNetworkGateways/{gw}/vpnClientRootCertificates/{item}",
        "Remove a P2S root certificate",
        None,
        "Empty",
    ),
    (
        "put",
        "/api/virtualNetworkGateways/{gw}/vpnClientRevokedCertificates/{item}",
        "Revoke a client certificate",
        Some("RevokedCertificate"),
        "RevokedCertificate",
    ),
    (
        "delete",
        "/api/virtualNetworkGateways/{gw}/vpnClientRevokedCertificates/{item}",
        "Un-revoke a client certificate",
        None,
        "Empty",
    ),
    (
        "get",
        "/api/localNetworkGateways",
        "List local gateways",
        None,
        "List",
    ),
    (
        "get",
        "/api/localNetworkGateways/{name}",
        "Show a local gateway",
        None,
        "LocalGatewaySpec",
    ),
    (
        "put",
        "/api/localNetworkGateways/{name}",
        "Create or replace a local gateway",
        Some("LocalGatewaySpec"),
        "LocalGatewaySpec",
    ),
    (
        "delete",
        "/api/localNetworkGateways/{name}",
        "Delete a local gateway (no connection may use it)",
        None,
        "Empty",
    ),
    (
        "get",
        "/api/connections",
        "List connections with status",
        None,
        "List",
    ),
    (
        "get",
        "/api/connections/{name}",
        "Show a connection with status",
        None,
        "ConnectionStatus",
    ),
    (
        "put",
        "/api/connections/{name}",
        "Create or replace a connection",
        Some("ConnectionSpec"),
        "ConnectionSpec",
    ),
    (
        "delete",
        "/api/connections/{name}",
        "Delete a connection",
        None,
        "Empty",
    ),
    (
        "get",
        "/api/connections/{name}/sharedkey",
        "Show the pre-shared key",
        None,
        "Object",
    ),
    (
        "put",
        "/api/connections/{name}/sharedkey",
        "Set the pre-shared key ({\"value\": KEY})",
        Some("Object"),
        "Object",
    ),
    (
        "post",
        "/api/connections/{name}/sharedkey/reset",
        "Generate a new key ({\"keyLength\": N})",
        Some("Object"),
        "Object",
    ),
    (
        "post",
        "/api/connections/{name}/resetconnection",
        "Re-establish one connection",
        None,
        "Object",
    ),
    (
        "post",
        "/api/connections/{name}/startPacketCapture",
        "Start a connection packet capture",
        None,
        "Object",
    ),
    (
        "post",
        "/api/connections/{name}/stopPacketCapture",
        "Stop it and return the file",
        None,
        "Object",
    ),
    (
        "get",
        "/api/desiredState",
        "Export the desired state (?includeSecrets=true adds shared keys)",
        None,
        "Object",
    ),
    (
        "post",
        "/api/desiredState",
        "Apply a desired-state document (?whatIf=true only diffs)",
        Some("StateDocument"),
        "Changes",
    ),
];

/// Builds the document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    generator.subschema_for::<VnetGatewaySpec>();
    generator.subschema_for::<LocalGatewaySpec>();
    generator.subschema_for::<ConnectionSpec>();
    generator.subschema_for::<NatRule>();
    generator.subschema_for::<RootCertificate>();
    generator.subschema_for::<RevokedCertificate>();
    generator.subschema_for::<StateDocument>();
    generator.subschema_for::<ConnectionStatus>();
    generator.subschema_for::<Vec<Change>>();
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.insert(
        "List".into(),
        json!({"type": "object", "properties": {"value": {"type": "array", "items": {}}}}),
    );
    schemas.insert("Object".into(), json!({"type": "object"}));
    schemas.insert("Empty".into(), json!({"description": "no body"}));
    schemas.insert("Changes".into(), json!({"type": "object", "properties": {
        "whatIf": {"type": "boolean"}, "changes": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}}}}));
    schemas.insert("Error".into(), json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "target": {"type": "string"}}, "required": ["code", "message"]}}}));

    let mut paths = Map::new();
    for (method, path, summary, request, response) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "4XX": {"description": "Caller mistake", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(req) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "vgw API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Desired state and status of a vgw VPN gateway, with Azure VPN Gateway's resource and field names."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "TCP listener only; the Unix socket is protected by its file mode"}}
        },
        "paths": paths,
    })
}
