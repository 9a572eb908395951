//! The REST API: resources under `/api`, Azure's names, JSON in and out, errors in Azure's shape.
//!
//! Paths mirror Azure's REST layout without subscription and resource group (one daemon serves one
//! gateway): `/api/virtualNetworkGateways/{name}`, `/api/localNetworkGateways/{name}`,
//! `/api/connections/{name}`, and Azure's action names (`resetconnection`, `getBgpPeerStatus`, ...).
//! PUT creates or replaces (201 / 200), `If-Match` gives optimistic concurrency, DELETE answers 204 when
//! there was nothing to delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::controller::Controller;
use crate::model::*;
use crate::state::{DesiredState, StateDocument};
use crate::status::StatusSource;
use crate::store::ResourceKey;
use crate::validate::{self, certificate_thumbprint, kind};

/// Largest request body accepted; a desired-state document with thousands of resources fits.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    /// The desired-state owner.
    pub controller: Arc<Controller>,
    /// Live status.
    pub status: Arc<dyn StatusSource>,
    /// Diagnostic logs.
    pub log: Arc<crate::ops::diaglog::DiagLog>,
    /// The tunnel reconciler, when the data plane runs.
    pub tunnels: Option<crate::drivers::tunnels::TunnelHandle>,
    /// Live tunnel state (tunnel ids, the data plane), when the data plane runs.
    pub live: Option<Arc<crate::drivers::tunnels::LiveStatus>>,
    /// Packet captures.
    pub captures: Arc<crate::ops::capture::CaptureManager>,
    /// What the BGP speaker publishes.
    pub bgp: Arc<crate::plan::bgp::BgpStatus>,
    /// Signed client-package URLs.
    pub downloads: Arc<crate::api::p2s_download::Downloads>,
    /// This instance's own status (without the other active-active instance's tunnels).
    pub local_status: Arc<dyn StatusSource>,
    /// The active-active interconnect, when `vgw serve --peer-instance` is given.
    pub ha: Option<Arc<crate::ha::Ha>>,
}

type ApiResult = Result<Response, ApiError>;

/// The API router (without authentication; [`crate::server`] adds it per listener).
pub fn router(state: AppState) -> Router {
    use collection::*;
    let gw = format!("/api/{GATEWAYS}/{{gw}}");
    Router::new()
        .route("/openapi.json", get(openapi))
        .route(&format!("/api/{GATEWAYS}"), get(list_gateways))
        .route(
            &gw,
            get(get_gateway).put(put_gateway).delete(delete_gateway),
        )
        .route(&format!("{gw}/reset"), post(reset_gateway))
        .route(&format!("{gw}/failoverDrill"), post(failover_drill))
        .route("/api/instance", get(instance_report))
        .route("/api/scope", get(resource_scope_view))
        .route(&format!("{gw}/getBgpPeerStatus"), post(bgp_peer_status))
        .route(&format!("{gw}/getLearnedRoutes"), post(learned_routes))
        .route(
            &format!("{gw}/getAdvertisedRoutes"),
            post(advertised_routes),
        )
        .route(
            &format!("{gw}/getVpnClientConnectionHealth"),
            post(client_health),
        )
        .route(
            &format!("{gw}/generatevpnclientpackage"),
            post(vpn_client_package),
        )
        .route(
            &format!("{gw}/disconnectVirtualNetworkGatewayVpnConnections"),
            post(disconnect_clients),
        )
        .route(
            &format!("{gw}/getvpnclientpackageurl"),
            post(vpn_client_package),
        )
        .route(
            &format!("{gw}/revokevpnclientpackageurls"),
            post(revoke_package_urls),
        )
        .route(
            &format!("{gw}/startPacketCapture"),
            post(start_gateway_capture),
        )
        .route(
            &format!("{gw}/stopPacketCapture"),
            post(stop_gateway_capture),
        )
        .route("/api/packetCaptures/{file}", get(download_capture))
        .route(&format!("{gw}/natRules"), get(list_nat_rules))
        .route(
            &format!("{gw}/natRules/{{item}}"),
            get(get_nat_rule).put(put_nat_rule).delete(delete_nat_rule),
        )
        .route(
            &format!("{gw}/vpnClientRootCertificates/{{item}}"),
            put(put_root_cert).delete(delete_root_cert),
        )
        .route(
            &format!("{gw}/vpnClientRevokedCertificates/{{item}}"),
            put(put_revoked_cert).delete(delete_revoked_cert),
        )
        .route(&format!("/api/{LOCAL_GATEWAYS}"), get(list_local_gateways))
        .route(
            &format!("/api/{LOCAL_GATEWAYS}/{{name}}"),
            get(get_local_gateway)
                .put(put_local_gateway)
                .delete(delete_local_gateway),
        )
        .route(&format!("/api/{CONNECTIONS}"), get(list_connections))
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}"),
            get(get_connection)
                .put(put_connection)
                .delete(delete_connection),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/sharedkey"),
            get(get_shared_key).put(put_shared_key),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/sharedkey/reset"),
            post(reset_shared_key),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/resetconnection"),
            post(reset_connection),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/diagnostics"),
            get(connection_diagnostics),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/startPacketCapture"),
            post(start_connection_capture),
        )
        .route(
            &format!("/api/{CONNECTIONS}/{{name}}/stopPacketCapture"),
            post(stop_connection_capture),
        )
        .route("/api/desiredState", get(export_state).post(apply_state))
        .route("/api/logs", get(read_logs))
        .merge(crate::evidence_api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::evidence_api::reset_hook,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError {
        status: 404,
        code: "NotFound".into(),
        message: "no such API path; see /openapi.json".into(),
        target: None,
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: 405,
        code: "MethodNotAllowed".into(),
        message: "this path does not take that HTTP method; see /openapi.json".into(),
        target: None,
    }
}

async fn openapi() -> Response {
    axum::Json(crate::api::openapi::document()).into_response()
}

// ---- request parsing ----------------------------------------------------------------------------------

/// Turns the body into bytes, mapping a too-large body to 413 in Azure's error shape.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(BODY_LIMIT)
        } else {
            ApiError::bad_content(format!("cannot read the request body: {r}"), None)
        }
    })
}

/// Fields vgw computes; a client may send them back (GET, edit, PUT) and they are ignored.
const READ_ONLY: &[&str] = &[
    "id",
    "etag",
    "type",
    "resourceGroup",
    "location",
    "provisioningState",
    "resourceGuid",
    "connectionStatus",
    "connectionStatusReason",
    "lastError",
    "ingressBytesTransferred",
    "egressBytesTransferred",
    "tunnelConnectionStatus",
];

fn strip_read_only(value: &mut Value) {
    if let Some(obj) = value.as_object_mut() {
        for k in READ_ONLY {
            obj.shift_remove(*k);
        }
        // Every status field is read-only, whatever the engines add to it.
        if let Ok(Value::Object(status)) =
            serde_json::to_value(crate::status::ConnectionStatus::default())
        {
            for k in status.keys() {
                obj.shift_remove(k);
            }
        }
        if let Some(Value::Array(rules)) = obj.get_mut("natRules") {
            rules.iter_mut().for_each(strip_item_meta);
        }
        if let Some(Value::Object(p2s)) = obj.get_mut("vpnClientConfiguration") {
            for list in ["vpnClientRootCertificates", "vpnClientRevokedCertificates"] {
                if let Some(Value::Array(items)) = p2s.get_mut(list) {
                    for item in items.iter_mut() {
                        strip_item_meta(item);
                        if list == "vpnClientRootCertificates"
                            && let Some(o) = item.as_object_mut()
                        {
                            o.shift_remove("thumbprint");
                        }
                    }
                }
            }
        }
    }
}

fn strip_item_meta(item: &mut Value) {
    if let Some(o) = item.as_object_mut() {
        for k in ["id", "etag", "type", "resourceGroup", "provisioningState"] {
            o.shift_remove(k);
        }
    }
}

/// Parses a JSON body into `T`, naming the offending field and position on error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], strip: bool) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_content(
            "the request body is empty; send a JSON object",
            None,
        ));
    }
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_content(
            format!("the body is not valid JSON: {e}"),
            Some(format!("line {} column {}", e.line(), e.column())),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_content(
            "the body must be a JSON object",
            None,
        ));
    }
    if strip {
        strip_read_only(&mut value);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde says "unknown field `x`, expected one of ..."; the path points at the object holding it.
        let target = match inner
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(field) if path == "." || path == field || path.ends_with(&format!(".{field}")) => {
                if path == "." {
                    field.to_string()
                } else {
                    path.clone()
                }
            }
            Some(field) => format!("{path}.{field}"),
            None => path.clone(),
        };
        let target = if target == "." {
            "body".to_string()
        } else {
            target
        };
        ApiError::invalid(target.clone(), format!("{target}: {inner}"))
    })
}

/// Checks `If-Match` against the current etag (`*` means "must exist").
fn check_if_match(
    headers: &HeaderMap,
    target: &str,
    current: Option<&String>,
) -> Result<(), ApiError> {
    let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    match current {
        Some(etag) if wanted == "*" || wanted == etag => Ok(()),
        Some(etag) => Err(ApiError::precondition_failed(target, etag)),
        None => Err(ApiError::precondition_failed(
            target,
            "(none: it does not exist)",
        )),
    }
}

fn check_path_name(kind: &str, path_name: &str, body_name: &mut String) -> Result<(), ApiError> {
    validate::check_name(kind, path_name)?;
    if body_name.is_empty() {
        *body_name = path_name.to_string();
    } else if body_name != path_name {
        return Err(ApiError::invalid(
            "name",
            format!(
                "the body names '{body_name}' but the path names '{path_name}'; they must agree"
            ),
        ));
    }
    Ok(())
}

// ---- views --------------------------------------------------------------------------------------------

fn with_meta(
    mut body: Value,
    collection: &str,
    name: &str,
    rtype: &str,
    etag: Option<&String>,
) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("name".into(), json!(name));
    out.insert("id".into(), json!(resource_id(collection, name)));
    out.insert("type".into(), json!(format!("Microsoft.Network/{rtype}")));
    let scope = crate::model::resource_scope();
    out.insert("resourceGroup".into(), json!(scope.resource_group));
    if !collection.contains('/') {
        out.insert("location".into(), json!(scope.location));
    }
    out.insert("etag".into(), json!(etag.cloned().unwrap_or_default()));
    out.insert("provisioningState".into(), json!("Succeeded"));
    if let Some(obj) = body.as_object_mut() {
        obj.shift_remove("name");
        out.extend(std::mem::take(obj));
    }
    Value::Object(out)
}

/// A sub-resource etag: a digest of its content, so it changes exactly when the item changes.
fn content_etag(item: &Value) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, item.to_string().as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("W/\"{hex}\"")
}

fn item_view(item: &Value, gw: &str, sub: &str, name: &str) -> Value {
    let mut v = with_meta(
        item.clone(),
        &format!("{}/{gw}/{sub}", collection::GATEWAYS),
        name,
        &format!("virtualNetworkGateways/{sub}"),
        None,
    );
    v["etag"] = json!(content_etag(item));
    v
}

fn gateway_view(gw: &VnetGatewaySpec, etags: &HashMap<ResourceKey, String>) -> Value {
    let etag = etags.get(&ResourceKey::new(collection::GATEWAYS, &gw.name));
    let mut v = with_meta(
        serde_json::to_value(gw).unwrap_or_default(),
        collection::GATEWAYS,
        &gw.name,
        "virtualNetworkGateways",
        etag,
    );
    if let Some(Value::Array(rules)) = v.get_mut("natRules") {
        for r in rules.iter_mut() {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            *r = item_view(r, &gw.name, "natRules", &name);
        }
    }
    if let Some(p2s) = v.get_mut("vpnClientConfiguration") {
        for list in ["vpnClientRootCertificates", "vpnClientRevokedCertificates"] {
            if let Some(Value::Array(items)) = p2s.get_mut(list) {
                for item in items.iter_mut() {
                    let name = item["name"].as_str().unwrap_or_default().to_string();
                    let thumb = item["publicCertData"]
                        .as_str()
                        .and_then(certificate_thumbprint);
                    *item = item_view(item, &gw.name, list, &name);
                    if let Some(t) = thumb {
                        item["thumbprint"] = json!(t);
                    }
                }
            }
        }
    }
    v
}

fn local_gateway_view(lg: &LocalGatewaySpec, etags: &HashMap<ResourceKey, String>) -> Value {
    let etag = etags.get(&ResourceKey::new(collection::LOCAL_GATEWAYS, &lg.name));
    with_meta(
        serde_json::to_value(lg).unwrap_or_default(),
        collection::LOCAL_GATEWAYS,
        &lg.name,
        "localNetworkGateways",
        etag,
    )
}

fn connection_view(
    c: &ConnectionSpec,
    etags: &HashMap<ResourceKey, String>,
    status: &dyn StatusSource,
) -> Value {
    let etag = etags.get(&ResourceKey::new(collection::CONNECTIONS, &c.name));
    let mut v = with_meta(
        serde_json::to_value(c).unwrap_or_default(),
        collection::CONNECTIONS,
        &c.name,
        "connections",
        etag,
    );
    if let (Some(obj), Ok(Value::Object(st))) = (
        v.as_object_mut(),
        serde_json::to_value(status.connection_status(&c.name)),
    ) {
        obj.extend(st);
    }
    v
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn require_gateway<'a>(
    state: &'a DesiredState,
    name: &str,
) -> Result<&'a VnetGatewaySpec, ApiError> {
    state
        .gateway
        .as_ref()
        .filter(|g| g.name == name)
        .ok_or_else(|| ApiError::not_found(kind::GATEWAY, name))
}

fn require_gateway_mut<'a>(
    state: &'a mut DesiredState,
    name: &str,
) -> Result<&'a mut VnetGatewaySpec, ApiError> {
    state
        .gateway
        .as_mut()
        .filter(|g| g.name == name)
        .ok_or_else(|| ApiError::not_found(kind::GATEWAY, name))
}

// ---- gateway ------------------------------------------------------------------------------------------

/// `GET /api/scope`: the subscription id and resource group every resource of this daemon lives in
/// (set with `vgw serve --subscription-id/--resource-group`); the CLI checks `-g`/`--subscription`
/// against it.
async fn resource_scope_view() -> ApiResult {
    let scope = crate::model::resource_scope();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "subscriptionId": scope.subscription_id,
            "resourceGroup": scope.resource_group,
            "location": scope.location,
        }),
    ))
}

async fn list_gateways(State(app): State<AppState>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    let value: Vec<Value> = state
        .gateway
        .iter()
        .map(|g| gateway_view(g, &etags))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "value": value })))
}

async fn get_gateway(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    Ok(json_response(
        StatusCode::OK,
        gateway_view(require_gateway(&state, &name)?, &etags),
    ))
}

async fn put_gateway(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut spec: VnetGatewaySpec =
        parse_json(&bytes, true).map_err(|e| e.for_resource(kind::GATEWAY, &name))?;
    check_path_name(kind::GATEWAY, &name, &mut spec.name)?;
    let mut created = false;
    let applied = app
        .controller
        .mutate(false, |state, etags| {
            let key = ResourceKey::new(collection::GATEWAYS, &name);
            if let Some(existing) = &state.gateway
                && existing.name != name
            {
                return Err(ApiError::conflict(
                    "GatewayAlreadyExists",
                    &name,
                    format!(
                        "this daemon already serves vnet-gateway '{}'; one gateway per daemon",
                        existing.name
                    ),
                ));
            }
            check_if_match(&headers, &name, etags.get(&key))?;
            created = state.gateway.is_none();
            state.gateway = Some(spec);
            Ok(())
        })
        .await?;
    let gw = applied
        .state
        .gateway
        .as_ref()
        .ok_or_else(|| ApiError::internal("gateway vanished"))?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, gateway_view(gw, &applied.etags)))
}

async fn delete_gateway(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let mut existed = false;
    app.controller
        .mutate(false, |state, etags| {
            if state.gateway.as_ref().is_none_or(|g| g.name != name) {
                return Ok(());
            }
            check_if_match(
                &headers,
                &name,
                etags.get(&ResourceKey::new(collection::GATEWAYS, &name)),
            )?;
            if !state.connections.is_empty() {
                let names: Vec<&str> = state.connections.keys().map(String::as_str).collect();
                return Err(ApiError::conflict(
                    "InUseVirtualNetworkGatewayCannotBeDeleted",
                    &name,
                    format!(
                        "vnet-gateway {name} still has connections ({}); delete them first",
                        names.join(", ")
                    ),
                ));
            }
            existed = true;
            state.gateway = None;
            Ok(())
        })
        .await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn reset_gateway(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let gw = require_gateway(&state, &name)?;
    if let Some(vip) = q.get("gatewayVip")
        && !gw
            .ip_configurations
            .iter()
            .any(|c| &c.public_ip_address == vip)
    {
        return Err(ApiError::invalid(
            "gatewayVip",
            format!("{vip} is not a public address of vnet-gateway {name}"),
        ));
    }
    let names: Vec<&String> = state.connections.keys().collect();
    // Active-active: the named instance resets, the other keeps carrying the traffic (Azure's
    // `reset --gateway-vip`). A VIP of the other instance is forwarded over the interconnect.
    if let Some(vip) = q.get("gatewayVip")
        && app
            .controller
            .instance()
            .public_ip(gw)
            .map(|a| a.to_string())
            .as_deref()
            != Some(vip.as_str())
    {
        let Some(ha) = &app.ha else {
            return Err(ApiError::invalid(
                "gatewayVip",
                format!(
                    "{vip} is served by the other gateway instance, and this one has no --peer-instance to forward the reset to; run the reset against that instance's API"
                ),
            ));
        };
        let reply = ha
            .forward_post(&format!(
                "/api/{}/{name}/reset?gatewayVip={vip}",
                collection::GATEWAYS
            ))
            .await
            .map_err(|e| {
                ApiError::conflict(
                    "InstanceUnreachable",
                    "gatewayVip",
                    format!("the instance serving {vip} did not take the reset: {e}"),
                )
            })?;
        return Ok(json_response(StatusCode::OK, reply));
    }
    let message = match &app.tunnels {
        Some(t) if t.send(crate::drivers::tunnels::TunnelCommand::ResetAll) => {
            format!("re-establishing {} connection(s); configuration is unchanged", names.len())
        }
        _ => "the data plane is not running, so no tunnel needed re-establishing; configuration is unchanged".to_string(),
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "status": "Succeeded", "resetConnections": names, "message": message }),
    ))
}

/// `POST .../failoverDrill?connection=N&durationSeconds=S&probeAddress=IP[&sourceAddress=IP]
/// [&intervalMilliseconds=MS]`: cuts this instance's tunnel of one connection for a while and reports
/// the traffic lost (crate::ops::drill). The request returns when the drill is over.
async fn failover_drill(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let gw = require_gateway(&state, &name)?;
    let connection = q.get("connection").ok_or_else(|| {
        ApiError::invalid(
            "connection",
            "name the connection to drill: --connection NAME",
        )
    })?;
    let c = state
        .connections
        .get(connection)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, connection))?;
    let remote: std::net::IpAddr = state
        .local_gateways
        .get(&c.local_network_gateway2.name)
        .and_then(|lg| lg.gateway_ip_address.as_deref())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "connection",
                format!("vpn-connection {connection}: its local gateway has no IP address to cut"),
            )
        })?;
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        q.get(key).map_or(Ok(default), |s| {
            s.parse()
                .map_err(|_| ApiError::invalid(key, format!("'{s}' is not a whole number")))
        })
    };
    let duration = number("durationSeconds", 10)?;
    if !(1..=600).contains(&duration) {
        return Err(ApiError::invalid(
            "durationSeconds",
            "the cut lasts 1-600 s",
        ));
    }
    let interval = number("intervalMilliseconds", 50)?;
    if !(10..=1000).contains(&interval) {
        return Err(ApiError::invalid(
            "intervalMilliseconds",
            "probe every 10-1000 ms",
        ));
    }
    let probe: std::net::Ipv4Addr = q
        .get("probeAddress")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "probeAddress",
                "give an IPv4 address behind the site that answers ping: --probe-address IP",
            )
        })?;
    let space: Vec<ipnet::IpNet> = gw
        .address_space
        .address_prefixes
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let source = match q.get("sourceAddress") {
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::invalid("sourceAddress", format!("'{s}' is not an IPv4 address")))?,
        None => crate::ops::drill::local_address_in(&space).ok_or_else(|| {
            ApiError::invalid(
                "sourceAddress",
                "this host has no address inside the gateway's addressSpace to probe from; give --source-address IP",
            )
        })?,
    };
    let request = crate::ops::drill::DrillRequest {
        connection: connection.clone(),
        remote,
        duration: std::time::Duration::from_secs(duration),
        probe,
        source,
        interval: std::time::Duration::from_millis(interval),
    };
    app.log.log(
        crate::ops::diaglog::Category::TunnelDiagnosticLog,
        "warning",
        &crate::model::resource_id(collection::CONNECTIONS, connection),
        &format!("failover drill: cutting the tunnel to {remote} for {duration} s"),
        json!({"probeAddress": probe.to_string()}),
    );
    let report = crate::ops::drill::run(request, app.local_status.clone())
        .await
        .map_err(|e| ApiError::conflict("DrillFailed", "connection", e))?;
    app.log.log(
        crate::ops::diaglog::Category::TunnelDiagnosticLog,
        "info",
        &crate::model::resource_id(collection::CONNECTIONS, connection),
        &format!(
            "failover drill finished: {}",
            report["verdict"].as_str().unwrap_or("")
        ),
        report.clone(),
    );
    Ok(json_response(StatusCode::OK, report))
}

/// `GET /api/instance`: this instance's tunnels and the prefixes they carry, for the other
/// active-active instance (crate::ha).
async fn instance_report(State(app): State<AppState>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let reachable = app.live.as_ref().map(|l| l.reachable()).unwrap_or_default();
    let report = crate::ha::local_report(
        &state,
        app.local_status.as_ref(),
        reachable,
        app.controller.instance(),
    );
    Ok(json_response(StatusCode::OK, json!(report)))
}

async fn bgp_peer_status(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    Ok(json_response(
        StatusCode::OK,
        app.bgp.peer_status_json(q.get("peer").map(String::as_str)),
    ))
}

async fn learned_routes(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    Ok(json_response(StatusCode::OK, app.bgp.learned_json()))
}

async fn advertised_routes(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let Some(peer) = q.get("peer") else {
        return Err(ApiError::invalid(
            "peer",
            "list-advertised-routes needs --peer IP (the BGP neighbor)",
        ));
    };
    if peer.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::invalid(
            "peer",
            format!("'{peer}' is not an IP address"),
        ));
    }
    Ok(json_response(StatusCode::OK, app.bgp.advertised_json(peer)))
}

async fn client_health(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let health = app.live.as_ref().map_or_else(
        || json!({ "vpnClientConnectionsCount": 0, "allocatedIpAddresses": [], "value": [] }),
        |l| l.p2s.health_json_with(&l.wireguard_health()),
    );
    Ok(json_response(StatusCode::OK, health))
}

/// `disconnectVirtualNetworkGatewayVpnConnections`: `{"vpnConnectionIds": [...]}` from show-health.
async fn disconnect_clients(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let body: Value = parse_json(&body_bytes(body)?, false)?;
    let ids = body["vpnConnectionIds"].as_array().ok_or_else(|| {
        ApiError::invalid(
            "vpnConnectionIds",
            "send {\"vpnConnectionIds\": [...]} as listed by show-health",
        )
    })?;
    let mut engine_ids = Vec::new();
    for (i, v) in ids.iter().enumerate() {
        let id = v
            .as_str()
            .and_then(crate::plan::p2s::parse_connection_id)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("vpnConnectionIds[{i}]"),
                    format!("{v} is not a vpnConnectionId from show-health (like IKEv2_80000001)"),
                )
            })?;
        engine_ids.push(id);
    }
    let sent = app.tunnels.as_ref().is_some_and(|t| {
        t.send(crate::drivers::tunnels::TunnelCommand::DisconnectClients(
            engine_ids.clone(),
        ))
    });
    Ok(json_response(
        StatusCode::OK,
        json!({ "status": if sent { "Succeeded" } else { "Failed" }, "disconnected": ids }),
    ))
}

/// The optional `{"wireGuardPeer": NAME}` of generatevpnclientpackage / getvpnclientpackageurl (vgw):
/// the package is then that peer's own, with its key and no one else's.
fn package_peer(body: Result<Bytes, BytesRejection>) -> Result<Option<String>, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: Value = parse_json(&bytes, false)?;
    match body.get("wireGuardPeer") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(
            "wireGuardPeer",
            "wireGuardPeer is the name of one of the gateway's wireGuardPeers, as a string",
        )),
    }
}

async fn vpn_client_package(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let peer = package_peer(body)?;
    let (state, _) = app.controller.snapshot().await;
    let gw = require_gateway(&state, &name)?;
    let Some(p2s) = &gw.vpn_client_configuration else {
        return Err(ApiError::conflict(
            "VpnClientConfigurationMissing",
            "vpnClientConfiguration",
            format!(
                "vnet-gateway {name} has no point-to-site configuration; set --address-prefixes and --client-protocol first"
            ),
        ));
    };
    if let Some(p) = &peer
        && !p2s.wire_guard_peers.iter().any(|n| n == p)
    {
        return Err(ApiError::new(
            404,
            "ResourceNotFound",
            format!(
                "'{p}' is not among the WireGuard peers of vnet-gateway {name} ({}); add it with --wireguard-peers",
                if p2s.wire_guard_peers.is_empty() {
                    "it has none".to_string()
                } else {
                    p2s.wire_guard_peers.join(", ")
                }
            ),
            Some("wireGuardPeer".to_string()),
        ));
    }
    // Build the package once now, so a configuration that cannot produce one fails here, not at
    // download time.
    let input = crate::plan::p2s::profile_input(
        &state,
        &app.downloads.dir,
        app.controller.instance(),
        peer.as_deref(),
    )
    .map_err(|m| ApiError::conflict("VpnClientPackageUnavailable", "vpnClientConfiguration", m))?;
    vgw_pki::profiles::build_profile(&input).map_err(|e| {
        ApiError::conflict(
            "VpnClientPackageUnavailable",
            "vpnClientConfiguration",
            e.to_string(),
        )
    })?;
    let (url, _) = app
        .downloads
        .url(&name, peer.as_deref(), &input.server_address);
    // Azure answers with the URL as a JSON string.
    Ok(json_response(StatusCode::OK, Value::String(url)))
}

/// vgw: revokes package URLs: `{"url": URL}` (that one), `{"wireGuardPeer": NAME}` (every URL of that
/// peer's package so far) or `{"all": true}` (every URL so far). A revoked URL answers 403.
async fn revoke_package_urls(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let body: Value = parse_json(&body_bytes(body)?, false)?;
    let usage = "send one of {\"url\": URL}, {\"wireGuardPeer\": NAME} or {\"all\": true}";
    let given = ["url", "wireGuardPeer", "all"]
        .iter()
        .filter(|k| body.get(**k).is_some_and(|v| !v.is_null()))
        .count();
    if given != 1 {
        return Err(ApiError::invalid("url", usage));
    }
    let answer = if let Some(url) = body.get("url").and_then(Value::as_str) {
        let t = app
            .downloads
            .revoke_url(url)
            .map_err(|m| ApiError::invalid("url", m))?;
        if t.gateway != name {
            return Err(ApiError::invalid(
                "url",
                format!("this URL is for vnet-gateway {}, not {name}", t.gateway),
            ));
        }
        json!({ "revoked": "url", "serial": t.serial, "wireGuardPeer": t.peer })
    } else if let Some(peer) = body.get("wireGuardPeer").and_then(Value::as_str) {
        app.downloads.revoke_peer(peer);
        json!({ "revoked": "wireGuardPeer", "wireGuardPeer": peer })
    } else if body.get("all") == Some(&Value::Bool(true)) {
        app.downloads.revoke_all();
        json!({ "revoked": "all" })
    } else {
        return Err(ApiError::invalid("url", usage));
    };
    app.log.log(
        crate::ops::diaglog::Category::P2sDiagnosticLog,
        "info",
        &crate::model::resource_id(crate::model::collection::GATEWAYS, &name),
        &format!("client package URLs revoked: {answer}"),
        Value::Null,
    );
    Ok(json_response(StatusCode::OK, answer))
}

// ---- packet capture ------------------------------------------------------------------------------------

/// The data plane's tap, or the error an operator sees when the daemon runs without one.
fn capture_tap(app: &AppState) -> Result<Arc<vgw_dataplane::CaptureTap>, ApiError> {
    app.live
        .as_ref()
        .and_then(|l| l.dataplane())
        .map(|dp| dp.capture_tap().clone())
        .ok_or_else(|| {
            ApiError::conflict(
                "DataPlaneNotRunning",
                "packetCapture",
                "packet capture needs the data plane; this daemon runs with --dataplane off",
            )
        })
}

/// `filterData` from an optional JSON body `{"filterData": ...}`.
fn capture_filter(
    body: Result<Bytes, BytesRejection>,
) -> Result<crate::ops::capture::FilterData, ApiError> {
    let bytes = body_bytes(body)?;
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_content(format!("the request body is not JSON: {e}"), None)
        })?
    };
    crate::ops::capture::FilterData::parse(&value["filterData"])
        .map_err(|m| ApiError::invalid("filterData", m))
}

fn capture_locals(state: &DesiredState) -> crate::ops::capture::LocalAddrs {
    let mut local = crate::ops::capture::LocalAddrs::default();
    for c in state.gateway.iter().flat_map(|g| &g.ip_configurations) {
        match c.public_ip_address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) if local.v4.is_none() => local.v4 = Some(a),
            Ok(std::net::IpAddr::V6(a)) if local.v6.is_none() => local.v6 = Some(a),
            _ => {}
        }
    }
    local
}

/// Starts a capture of `scope` and logs it.
fn start_capture(
    app: &AppState,
    state: &DesiredState,
    scope: crate::ops::capture::Scope,
    body: Result<Bytes, BytesRejection>,
    resource: &str,
) -> ApiResult {
    let filter = capture_filter(body)?;
    let tap = capture_tap(app)?;
    let names = app
        .live
        .as_ref()
        .map(|l| l.tunnel_names())
        .unwrap_or_default();
    let summary = app
        .captures
        .start(&tap, scope, filter, capture_locals(state), names)
        .map_err(|m| ApiError::conflict("PacketCaptureRunning", "packetCapture", m))?;
    app.log.log(
        crate::ops::diaglog::Category::GatewayDiagnosticLog,
        "info",
        resource,
        "packet capture started",
        summary.clone(),
    );
    Ok(json_response(StatusCode::OK, summary))
}

fn capture_stopped(
    app: &AppState,
    resource: &str,
    result: Result<crate::ops::capture::CaptureResult, String>,
) -> ApiResult {
    let result =
        result.map_err(|m| ApiError::conflict("PacketCaptureNotRunning", "packetCapture", m))?;
    app.log.log(
        crate::ops::diaglog::Category::GatewayDiagnosticLog,
        "info",
        resource,
        &format!("packet capture written to {}", result.file.display()),
        result.summary.clone(),
    );
    Ok(json_response(StatusCode::OK, result.summary))
}

async fn start_gateway_capture(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let resource = resource_id(collection::GATEWAYS, &name);
    start_capture(
        &app,
        &state,
        crate::ops::capture::Scope::Gateway(name),
        body,
        &resource,
    )
}

async fn stop_gateway_capture(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    require_gateway(&state, &name)?;
    let tap = capture_tap(&app)?;
    let result = app
        .captures
        .stop(&tap, &crate::ops::capture::Scope::Gateway(name.clone()));
    capture_stopped(&app, &resource_id(collection::GATEWAYS, &name), result)
}

/// The capture scope of connection `name`: its tunnel id and its peer's address.
fn connection_scope(
    app: &AppState,
    state: &DesiredState,
    name: &str,
) -> Result<crate::ops::capture::Scope, ApiError> {
    let conn = state
        .connections
        .get(name)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, name))?;
    let remote = state
        .local_gateways
        .get(&conn.local_network_gateway2.name)
        .and_then(|lg| lg.gateway_ip_address.as_deref())
        .and_then(|ip| ip.parse().ok());
    let names = app
        .live
        .as_ref()
        .map(|l| l.tunnel_names())
        .unwrap_or_default();
    let tunnel = names
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .map(|(id, _)| *id)
        .unwrap_or(0);
    Ok(crate::ops::capture::Scope::Connection {
        name: name.to_string(),
        tunnel,
        remote,
    })
}

async fn start_connection_capture(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let scope = connection_scope(&app, &state, &name)?;
    let resource = resource_id(collection::CONNECTIONS, &name);
    start_capture(&app, &state, scope, body, &resource)
}

async fn stop_connection_capture(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let scope = connection_scope(&app, &state, &name)?;
    let tap = capture_tap(&app)?;
    let result = app.captures.stop(&tap, &scope);
    capture_stopped(&app, &resource_id(collection::CONNECTIONS, &name), result)
}

/// `GET /api/connections/{name}/diagnostics` (vgw): the evidence `vgw doctor --connection` reads.
async fn connection_diagnostics(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let conn = state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
    let local_gateway = state.local_gateways.get(&conn.local_network_gateway2.name);
    let peer = local_gateway
        .and_then(|lg| lg.gateway_ip_address.as_deref())
        .and_then(|ip| ip.parse().ok());
    let mut value = match &app.live {
        Some(live) => live.diagnostics(&name, peer),
        None => json!({ "dataplaneRunning": false }),
    };
    value["name"] = json!(name);
    value["peerAddress"] = json!(peer.map(|p: std::net::IpAddr| p.to_string()));
    value["localGateway"] = json!(conn.local_network_gateway2.name);
    value["enableBgp"] = json!(conn.enable_bgp);
    value["bgp"] = if conn.enable_bgp {
        let snap = app.bgp.snapshot();
        match snap.peers.iter().find(|p| p.connection == name) {
            Some(p) => json!({
                "state": p.state.as_str(),
                "neighbor": p.neighbor,
                "routesReceived": p.routes_received,
                "routesAdvertised": p.routes_advertised,
                "lastError": p.last_error,
            }),
            None => json!({ "state": "NotConfigured" }),
        }
    } else {
        json!({ "state": "Disabled" })
    };
    value["connectionMode"] = serde_json::to_value(conn.connection_mode).unwrap_or_default();
    value["ipsecPolicies"] = serde_json::to_value(&conn.ipsec_policies).unwrap_or_default();
    value["localAddressSpace"] = json!(
        state
            .gateway
            .as_ref()
            .map(|g| g.address_space.address_prefixes.clone())
            .unwrap_or_default()
    );
    value["remoteAddressSpace"] = json!(
        local_gateway
            .map(|lg| lg.local_network_address_space.address_prefixes.clone())
            .unwrap_or_default()
    );
    Ok(json_response(StatusCode::OK, value))
}

/// `GET /api/packetCaptures/{file}`: the pcapng bytes of a finished capture.
async fn download_capture(State(app): State<AppState>, Path(file): Path<String>) -> ApiResult {
    let bytes = app
        .captures
        .read(&file)
        .ok_or_else(|| ApiError::not_found("packet capture", &file))?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

// ---- nat rules, certificates ----------------------------------------------------------------------------

async fn list_nat_rules(State(app): State<AppState>, Path(gw): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let g = require_gateway(&state, &gw)?;
    let value: Vec<Value> = g
        .nat_rules
        .iter()
        .map(|r| {
            item_view(
                &serde_json::to_value(r).unwrap_or_default(),
                &gw,
                "natRules",
                &r.name,
            )
        })
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "value": value })))
}

async fn get_nat_rule(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let g = require_gateway(&state, &gw)?;
    let rule = g
        .nat_rules
        .iter()
        .find(|r| r.name == item)
        .ok_or_else(|| ApiError::not_found("nat-rule", &item))?;
    Ok(json_response(
        StatusCode::OK,
        item_view(
            &serde_json::to_value(rule).unwrap_or_default(),
            &gw,
            "natRules",
            &item,
        ),
    ))
}

async fn put_nat_rule(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut rule: NatRule =
        parse_json(&bytes, true).map_err(|e| e.for_resource("nat-rule", &item))?;
    check_path_name("nat-rule", &item, &mut rule.name)?;
    let mut created = false;
    app.controller
        .mutate(false, |state, _| {
            let g = require_gateway_mut(state, &gw)?;
            match g.nat_rules.iter_mut().find(|r| r.name == item) {
                Some(existing) => *existing = rule.clone(),
                None => {
                    created = true;
                    g.nat_rules.push(rule.clone());
                }
            }
            Ok::<(), ApiError>(())
        })
        .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        code,
        item_view(
            &serde_json::to_value(&rule).unwrap_or_default(),
            &gw,
            "natRules",
            &item,
        ),
    ))
}

async fn delete_nat_rule(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
) -> ApiResult {
    let mut existed = false;
    app.controller
        .mutate(false, |state, _| {
            let users: Vec<String> = state
                .connections
                .values()
                .filter(|c| c.ingress_nat_rules.iter().chain(&c.egress_nat_rules).any(|r| r.name == item))
                .map(|c| c.name.clone())
                .collect();
            let g = require_gateway_mut(state, &gw)?;
            let before = g.nat_rules.len();
            if g.nat_rules.iter().any(|r| r.name == item) && !users.is_empty() {
                return Err(ApiError::conflict(
                    "InUseNatRuleCannotBeDeleted",
                    &item,
                    format!("nat-rule {item} is used by vpn-connection(s) {}; remove it from them first", users.join(", ")),
                ));
            }
            g.nat_rules.retain(|r| r.name != item);
            existed = g.nat_rules.len() != before;
            Ok(())
        })
        .await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn put_root_cert(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut cert: RootCertificate =
        parse_json(&bytes, true).map_err(|e| e.for_resource("root-cert", &item))?;
    check_path_name("root-cert", &item, &mut cert.name)?;
    app.controller
        .mutate(false, |state, _| {
            let g = require_gateway_mut(state, &gw)?;
            let p2s = g
                .vpn_client_configuration
                .get_or_insert_with(Default::default);
            p2s.vpn_client_root_certificates.retain(|c| c.name != item);
            p2s.vpn_client_root_certificates.push(cert.clone());
            Ok::<(), ApiError>(())
        })
        .await?;
    let mut view = item_view(
        &serde_json::to_value(&cert).unwrap_or_default(),
        &gw,
        "vpnClientRootCertificates",
        &item,
    );
    if let Some(t) = certificate_thumbprint(&cert.public_cert_data) {
        view["thumbprint"] = json!(t);
    }
    Ok(json_response(StatusCode::OK, view))
}

async fn delete_root_cert(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
) -> ApiResult {
    delete_p2s_item(app, gw, item, |p2s, item| {
        let before = p2s.vpn_client_root_certificates.len();
        p2s.vpn_client_root_certificates.retain(|c| c.name != item);
        before != p2s.vpn_client_root_certificates.len()
    })
    .await
}

async fn put_revoked_cert(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut cert: RevokedCertificate =
        parse_json(&bytes, true).map_err(|e| e.for_resource("revoked-cert", &item))?;
    check_path_name("revoked-cert", &item, &mut cert.name)?;
    cert.thumbprint = cert.thumbprint.to_ascii_uppercase();
    app.controller
        .mutate(false, |state, _| {
            let g = require_gateway_mut(state, &gw)?;
            let p2s = g
                .vpn_client_configuration
                .get_or_insert_with(Default::default);
            p2s.vpn_client_revoked_certificates
                .retain(|c| c.name != item);
            p2s.vpn_client_revoked_certificates.push(cert.clone());
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        item_view(
            &serde_json::to_value(&cert).unwrap_or_default(),
            &gw,
            "vpnClientRevokedCertificates",
            &item,
        ),
    ))
}

async fn delete_revoked_cert(
    State(app): State<AppState>,
    Path((gw, item)): Path<(String, String)>,
) -> ApiResult {
    delete_p2s_item(app, gw, item, |p2s, item| {
        let before = p2s.vpn_client_revoked_certificates.len();
        p2s.vpn_client_revoked_certificates
            .retain(|c| c.name != item);
        before != p2s.vpn_client_revoked_certificates.len()
    })
    .await
}

async fn delete_p2s_item(
    app: AppState,
    gw: String,
    item: String,
    remove: impl FnOnce(&mut VpnClientConfiguration, &str) -> bool,
) -> ApiResult {
    let mut existed = false;
    app.controller
        .mutate(false, |state, _| {
            let g = require_gateway_mut(state, &gw)?;
            if let Some(p2s) = g.vpn_client_configuration.as_mut() {
                existed = remove(p2s, &item);
            }
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

// ---- local gateways -----------------------------------------------------------------------------------

async fn list_local_gateways(State(app): State<AppState>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    let value: Vec<Value> = state
        .local_gateways
        .values()
        .map(|g| local_gateway_view(g, &etags))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "value": value })))
}

async fn get_local_gateway(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    let lg = state
        .local_gateways
        .get(&name)
        .ok_or_else(|| ApiError::not_found(kind::LOCAL_GATEWAY, &name))?;
    Ok(json_response(
        StatusCode::OK,
        local_gateway_view(lg, &etags),
    ))
}

async fn put_local_gateway(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut spec: LocalGatewaySpec =
        parse_json(&bytes, true).map_err(|e| e.for_resource(kind::LOCAL_GATEWAY, &name))?;
    check_path_name(kind::LOCAL_GATEWAY, &name, &mut spec.name)?;
    let mut created = false;
    let applied = app
        .controller
        .mutate(false, |state, etags| {
            check_if_match(
                &headers,
                &name,
                etags.get(&ResourceKey::new(collection::LOCAL_GATEWAYS, &name)),
            )?;
            created = state.local_gateways.insert(name.clone(), spec).is_none();
            Ok::<(), ApiError>(())
        })
        .await?;
    let lg = &applied.state.local_gateways[&name];
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, local_gateway_view(lg, &applied.etags)))
}

async fn delete_local_gateway(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let mut existed = false;
    app.controller
        .mutate(false, |state, etags| {
            if !state.local_gateways.contains_key(&name) {
                return Ok(());
            }
            check_if_match(&headers, &name, etags.get(&ResourceKey::new(collection::LOCAL_GATEWAYS, &name)))?;
            let users = state.connections_using(&name);
            if !users.is_empty() {
                return Err(ApiError::conflict(
                    "InUseLocalNetworkGatewayCannotBeDeleted",
                    &name,
                    format!(
                        "local-gateway {name} is used by vpn-connection(s) {}; delete those connections first",
                        users.join(", ")
                    ),
                ));
            }
            existed = state.local_gateways.remove(&name).is_some();
            Ok(())
        })
        .await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

// ---- connections --------------------------------------------------------------------------------------

async fn list_connections(State(app): State<AppState>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    let value: Vec<Value> = state
        .connections
        .values()
        .map(|c| connection_view(c, &etags, app.status.as_ref()))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "value": value })))
}

async fn get_connection(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, etags) = app.controller.snapshot().await;
    let c = state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
    Ok(json_response(
        StatusCode::OK,
        connection_view(c, &etags, app.status.as_ref()),
    ))
}

async fn put_connection(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let mut spec: ConnectionSpec =
        parse_json(&bytes, true).map_err(|e| e.for_resource(kind::CONNECTION, &name))?;
    check_path_name(kind::CONNECTION, &name, &mut spec.name)?;
    let mut created = false;
    let applied = app
        .controller
        .mutate(false, |state, etags| {
            check_if_match(
                &headers,
                &name,
                etags.get(&ResourceKey::new(collection::CONNECTIONS, &name)),
            )?;
            // A replacement without a key keeps the current one: the key is write-only, so a client that
            // read the connection cannot send it back.
            if spec.shared_key.is_none()
                && let Some(existing) = state.connections.get(&name)
            {
                spec.shared_key = existing.shared_key.clone();
            }
            created = state.connections.insert(name.clone(), spec).is_none();
            Ok::<(), ApiError>(())
        })
        .await?;
    let c = &applied.state.connections[&name];
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        code,
        connection_view(c, &applied.etags, app.status.as_ref()),
    ))
}

async fn delete_connection(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let mut existed = false;
    app.controller
        .mutate(false, |state, etags| {
            if state.connections.contains_key(&name) {
                check_if_match(
                    &headers,
                    &name,
                    etags.get(&ResourceKey::new(collection::CONNECTIONS, &name)),
                )?;
            }
            existed = state.connections.remove(&name).is_some();
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn get_shared_key(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let c = state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "value": c.shared_key }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedKeyBody {
    value: String,
}

async fn put_shared_key(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let body: SharedKeyBody =
        parse_json(&bytes, false).map_err(|e| e.for_resource(kind::CONNECTION, &name))?;
    validate::check_shared_key("value", &body.value)
        .map_err(|e| e.for_resource(kind::CONNECTION, &name))?;
    app.controller
        .mutate(false, |state, _| {
            let c = state
                .connections
                .get_mut(&name)
                .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
            c.shared_key = Some(body.value.clone());
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "value": body.value }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResetKeyBody {
    key_length: u32,
}

/// Generates a key of `len` characters from letters and digits (a subset of the allowed charset that
/// survives every device's CLI quoting).
fn generate_key(len: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buf).map_err(|_| ApiError::internal("random source failed"))?;
        // Rejection sampling keeps the characters uniform: 248 = 4 * 62.
        out.extend(
            buf.iter()
                .filter(|b| **b < 248)
                .map(|b| ALPHABET[(*b % 62) as usize] as char)
                .take(len - out.len()),
        );
    }
    Ok(out)
}

async fn reset_shared_key(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let body: ResetKeyBody =
        parse_json(&bytes, false).map_err(|e| e.for_resource(kind::CONNECTION, &name))?;
    if !(1..=128).contains(&body.key_length) {
        return Err(ApiError::invalid(
            "keyLength",
            format!("keyLength {} is outside 1-128", body.key_length),
        )
        .for_resource(kind::CONNECTION, &name));
    }
    let key = generate_key(body.key_length as usize)?;
    app.controller
        .mutate(false, |state, _| {
            let c = state
                .connections
                .get_mut(&name)
                .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
            c.shared_key = Some(key);
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "keyLength": body.key_length }),
    ))
}

async fn reset_connection(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(kind::CONNECTION, &name))?;
    let message = match &app.tunnels {
        Some(t) if t.send(crate::drivers::tunnels::TunnelCommand::Reset(name.clone())) => {
            format!("vpn-connection {name}: re-establishing; other connections are untouched")
        }
        _ => format!(
            "vpn-connection {name}: the data plane is not running; nothing needed re-establishing"
        ),
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "status": "Succeeded", "message": message }),
    ))
}

// ---- logs ---------------------------------------------------------------------------------------------

async fn read_logs(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    use crate::ops::diaglog::{Category, Filter};
    let category = match q.get("category") {
        None => None,
        Some(c) => Some(Category::parse(c).ok_or_else(|| {
            let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
            ApiError::invalid(
                "category",
                format!(
                    "'{c}' is not a log category; use one of {}",
                    names.join(", ")
                ),
            )
        })?),
    };
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        q.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::invalid(
                        key,
                        format!("{key} must be a non-negative integer, got '{v}'"),
                    )
                })
            })
            .transpose()
    };
    let filter = Filter {
        category,
        connection: q.get("connection").cloned(),
        since_ms: number("sinceMs")?,
        after_seq: number("afterSeq")?,
        limit: number("limit")?.unwrap_or(1000).min(10_000) as usize,
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "value": app.log.query(&filter) }),
    ))
}

// ---- desired state ------------------------------------------------------------------------------------

async fn export_state(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (state, _) = app.controller.snapshot().await;
    let include = q.get("includeSecrets").is_some_and(|v| v == "true");
    Ok(json_response(StatusCode::OK, state.to_document(include)))
}

async fn apply_state(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let doc: StateDocument = parse_json(&bytes, false)?;
    if let Some(v) = &doc.api_version
        && v != crate::state::API_VERSION
    {
        return Err(ApiError::invalid(
            "apiVersion",
            format!(
                "apiVersion '{v}' is not understood; this vgw reads {}",
                crate::state::API_VERSION
            ),
        ));
    }
    let what_if = q.get("whatIf").is_some_and(|v| v == "true");
    let mut wanted = DesiredState::from_document(doc).map_err(|m| ApiError::invalid("body", m))?;
    let applied = app
        .controller
        .mutate(what_if, |state, _| {
            // Connections listed without a key keep the key they have.
            for (name, c) in wanted.connections.iter_mut() {
                if c.shared_key.is_none()
                    && let Some(existing) = state.connections.get(name)
                {
                    c.shared_key = existing.shared_key.clone();
                }
            }
            *state = wanted;
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "whatIf": what_if, "changes": applied.changes }),
    ))
}
