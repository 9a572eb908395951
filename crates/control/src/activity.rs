//! The activity log: every write and every action on the API (Azure's Activity Log), with its time,
//! caller, Azure operation name, target resource, result and correlation id.
//!
//! Recorded by a middleware on each listener ([`record`]): any request that is not a GET, and the GET
//! of a shared key (reading a secret is an action). The caller is the Unix-socket peer's uid and user
//! name (`SO_PEERCRED`), or `api-token` for the TCP listener, whose one bearer token is the identity.
//! Only the method, the path (never the query string or a body) and the status are kept, so no secret
//! is ever stored. Entries live in `STATE_DIR/activity.db` (table `activity_log`, WAL, written with
//! `synchronous=FULL`, so they survive a crash of the daemon; a database of its own, so its writes
//! never make the desired-state store's writers wait), at most [`MAX_ENTRIES`] of them, for
//! the retention period (`vgw serve --activity-log-retention-days`, 90 by default).
//! `GET /api/activityLog?startTime=&endTime=&offset=&caller=&status=` reads them, newest first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::ops::diaglog::{now_ms, rfc3339};

/// Most entries kept; the oldest go first.
pub const MAX_ENTRIES: i64 = 100_000;
/// Retention when `vgw serve` is not told otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// The response (and request) header carrying the correlation id, as in Azure.
pub const CORRELATION_HEADER: &str = "x-ms-correlation-request-id";

/// The activity log store.
pub struct ActivityLog {
    conn: Mutex<Connection>,
    retention_ms: u64,
    writes: AtomicU64,
}

/// One entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// User name (or `uid:N`) or `api-token`.
    pub caller: String,
    /// The Unix-socket peer's uid.
    pub caller_uid: Option<u32>,
    /// `Microsoft.Network/virtualNetworkGateways/reset/action`, ...
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// The target resource id.
    pub resource_id: String,
    /// HTTP status code of the answer.
    pub status_code: u16,
    /// The correlation id (the request's, or a new one).
    pub correlation_id: String,
    /// How long the request took.
    pub duration_ms: u64,
}

impl ActivityLog {
    /// Opens (and creates, 0600) `state_dir/activity.db`, and prunes what is past retention.
    pub fn open(state_dir: &Path, retention_days: u32) -> Result<Self, String> {
        if retention_days == 0 {
            return Err("--activity-log-retention-days must be at least 1".into());
        }
        let path = state_dir.join("activity.db");
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
        let err = |e: rusqlite::Error| format!("activity log in {}: {e}", path.display());
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS activity_log (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 time_ms INTEGER NOT NULL,
                 caller TEXT NOT NULL,
                 caller_uid INTEGER,
                 operation TEXT NOT NULL,
                 method TEXT NOT NULL,
                 resource_id TEXT NOT NULL,
                 status_code INTEGER NOT NULL,
                 correlation_id TEXT NOT NULL,
                 duration_ms INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS activity_log_time ON activity_log(time_ms);",
        )
        .map_err(err)?;
        let log = Self {
            conn: Mutex::new(conn),
            retention_ms: u64::from(retention_days) * 86_400_000,
            writes: AtomicU64::new(0),
        };
        log.prune().map_err(err)?;
        Ok(log)
    }

    fn prune(&self) -> rusqlite::Result<()> {
        let cutoff = now_ms().saturating_sub(self.retention_ms) as i64;
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute("DELETE FROM activity_log WHERE time_ms < ?1", [cutoff])?;
        conn.execute(
            "DELETE FROM activity_log WHERE id <= (SELECT MAX(id) FROM activity_log) - ?1",
            [MAX_ENTRIES],
        )?;
        Ok(())
    }

    /// Appends an entry (durably: the insert is synced before it returns).
    pub fn append(&self, e: &Entry) -> rusqlite::Result<()> {
        {
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.execute(
                "INSERT INTO activity_log (time_ms, caller, caller_uid, operation, method, resource_id,
                     status_code, correlation_id, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    e.time_ms as i64,
                    e.caller,
                    e.caller_uid,
                    e.operation,
                    e.method,
                    e.resource_id,
                    e.status_code,
                    e.correlation_id,
                    e.duration_ms as i64
                ],
            )?;
        }
        if self.writes.fetch_add(1, Ordering::Relaxed) % 500 == 499 {
            self.prune()?;
        }
        Ok(())
    }

    /// Entries in `[start_ms, end_ms]`, newest first, filtered by caller and status.
    pub fn query(
        &self,
        start_ms: u64,
        end_ms: u64,
        caller: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<Value>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(
            "SELECT time_ms, caller, caller_uid, operation, method, resource_id, status_code,
                    correlation_id, duration_ms
             FROM activity_log WHERE time_ms >= ?1 AND time_ms <= ?2 ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([start_ms as i64, end_ms as i64], |r| {
            Ok(Entry {
                time_ms: r.get::<_, i64>(0)?.max(0) as u64,
                caller: r.get(1)?,
                caller_uid: r.get(2)?,
                operation: r.get(3)?,
                method: r.get(4)?,
                resource_id: r.get(5)?,
                status_code: r.get(6)?,
                correlation_id: r.get(7)?,
                duration_ms: r.get::<_, i64>(8)?.max(0) as u64,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let e = row?;
            let result = result_of(e.status_code);
            if caller.is_some_and(|c| {
                !c.eq_ignore_ascii_case(&e.caller)
                    && e.caller_uid.is_none_or(|u| c != format!("uid:{u}"))
            }) {
                continue;
            }
            if status.is_some_and(|s| !s.eq_ignore_ascii_case(result)) {
                continue;
            }
            out.push(json!({
                "eventTimestamp": rfc3339(e.time_ms),
                "caller": e.caller,
                "callerUid": e.caller_uid,
                "operationName": e.operation,
                "resourceId": e.resource_id,
                "status": result,
                "httpStatusCode": e.status_code,
                "httpMethod": e.method,
                "correlationId": e.correlation_id,
                "durationMs": e.duration_ms,
            }));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

fn result_of(code: u16) -> &'static str {
    if code < 400 { "Succeeded" } else { "Failed" }
}

/// The Unix-socket peer's credentials (`SO_PEERCRED`), attached to each request on that listener.
#[derive(Clone, Copy, Debug)]
pub struct PeerCred {
    /// The peer's uid, when the kernel told it.
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The Unix socket: the caller is the peer's uid.
    Unix,
    /// The TCP listener: the caller is the bearer token.
    Tcp,
}

/// The user name of `uid` from the password database, or `uid:N`.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes into `pwd` and `buf` (whose
    // length we pass) and sets `result` to null or to `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("uid:{uid}")
}

/// Azure's operation name and the target resource id of a request, None when it is a plain read.
pub fn classify(method: &Method, path: &str) -> Option<(String, String)> {
    const NS: &str = "Microsoft.Network";
    let segs: Vec<&str> = path
        .trim_start_matches("/api/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let is_shared_key_read = *method == Method::GET
        && segs.len() == 3
        && segs[0] == "connections"
        && segs[2].eq_ignore_ascii_case("sharedkey");
    if *method == Method::GET && !is_shared_key_read {
        return None;
    }
    let verb = match *method {
        Method::DELETE => "delete",
        Method::GET => "read",
        _ => "write",
    };
    let id = |n: usize| format!("/vgw/{}", segs[..n.min(segs.len())].join("/"));
    let op = match segs.as_slice() {
        [coll, _name] => format!("{NS}/{coll}/{verb}"),
        [coll, _name, sub] if sub.eq_ignore_ascii_case("sharedkey") => {
            format!("{NS}/{coll}/sharedKey/{verb}")
        }
        [coll, _name, action] => format!("{NS}/{coll}/{action}/action"),
        [coll, _name, sub, action] if sub.eq_ignore_ascii_case("sharedkey") => {
            format!("{NS}/{coll}/sharedKey/{action}/action")
        }
        [coll, _name, child, _item] => format!("{NS}/{coll}/{child}/{verb}"),
        [single] => format!("vgw/{single}/{verb}"),
        _ => format!("vgw/{}/action", segs.join("/")),
    };
    let resource = match segs.as_slice() {
        [_, _, child, _] if !child.eq_ignore_ascii_case("sharedkey") => id(4),
        _ => id(2),
    };
    Some((op, resource))
}

fn correlation_id(request: &Request) -> String {
    request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The middleware: runs the request and records it when it is a write or an action. The correlation id
/// is returned in `x-ms-correlation-request-id`.
pub async fn record(
    State((log, listener)): State<(Arc<ActivityLog>, Listener)>,
    request: Request,
    next: Next,
) -> Response {
    let Some((operation, resource_id)) = classify(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let (caller, caller_uid) = match listener {
        Listener::Tcp => ("api-token".to_string(), None),
        Listener::Unix => match request
            .extensions()
            .get::<ConnectInfo<PeerCred>>()
            .and_then(|c| c.0.uid)
        {
            Some(uid) => (user_name(uid), Some(uid)),
            None => ("unknown".to_string(), None),
        },
    };
    let method = request.method().to_string();
    let correlation = correlation_id(&request);
    let started = now_ms();
    let mut response = next.run(request).await;
    let entry = Entry {
        time_ms: started,
        caller,
        caller_uid,
        operation,
        method,
        resource_id,
        status_code: response.status().as_u16(),
        correlation_id: correlation.clone(),
        duration_ms: now_ms().saturating_sub(started),
    };
    let written = tokio::task::spawn_blocking(move || log.append(&entry)).await;
    if let Ok(Err(e)) | Err(e) =
        written.map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
    {
        tracing::warn!(error = %e, "cannot write the activity log");
    }
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

/// `GET /api/activityLog`, with its own state (merged into the served app by [`crate::server`]).
pub fn routes(log: Arc<ActivityLog>) -> Router {
    Router::new()
        .route("/api/activityLog", get(list))
        .with_state(log)
}

/// Parses an RFC 3339 UTC time (`2026-12-02T20:00:00Z`, optional fraction, `Z` or `+00:00`) into Unix ms.
pub fn parse_time(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .unwrap_or(t);
    let (date, time) = t.split_once(['T', ' ']).unwrap_or((t, "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (
        h.next()??,
        h.next().unwrap_or(Some(0))?,
        h.next().unwrap_or(Some(0))?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from civil (H. Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Parses az's `--offset`: `1h`, `30m`, `2d`, `90s`, or `1d2h` (a bare number is hours, as in az).
pub fn parse_offset(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total += n * match c.to_ascii_lowercase() {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1000,
            _ => return None,
        };
    }
    if !digits.is_empty() {
        total += digits.parse::<u64>().ok()? * 3_600_000;
    }
    Some(total)
}

async fn list(
    State(log): State<Arc<ActivityLog>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match list_inner(&log, &q).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_inner(
    log: &Arc<ActivityLog>,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let now = now_ms();
    let time = |key: &str| -> Result<Option<u64>, ApiError> {
        q.get(key)
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::invalid(
                        key,
                        format!("{key} '{v}' is not a UTC time like 2026-12-02T20:00:00Z"),
                    )
                })
            })
            .transpose()
    };
    let end = time("endTime")?.unwrap_or(now);
    let start = match (time("startTime")?, q.get("offset")) {
        (Some(s), _) => s,
        (None, Some(o)) => end.saturating_sub(parse_offset(o).ok_or_else(|| {
            ApiError::invalid(
                "offset",
                format!("offset '{o}' is not a duration like 1h, 30m or 2d"),
            )
        })?),
        // az's default: the last 6 hours.
        (None, None) => end.saturating_sub(6 * 3_600_000),
    };
    if start > end {
        return Err(ApiError::invalid("startTime", "startTime is after endTime"));
    }
    if let Some(s) = q.get("status")
        && !s.eq_ignore_ascii_case("Succeeded")
        && !s.eq_ignore_ascii_case("Failed")
    {
        return Err(ApiError::invalid(
            "status",
            format!("status '{s}' is neither Succeeded nor Failed"),
        ));
    }
    let limit = match q.get("maxEvents") {
        None => 1000,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                ApiError::invalid(
                    "maxEvents",
                    format!("maxEvents must be a positive integer, got '{v}'"),
                )
            })?
            .clamp(1, 100_000),
    };
    let (log, caller, status) = (
        log.clone(),
        q.get("caller").cloned(),
        q.get("status").cloned(),
    );
    let rows = tokio::task::spawn_blocking(move || {
        log.query(start, end, caller.as_deref(), status.as_deref(), limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("activity log: {e}")))?;
    Ok(json!({ "value": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_follow_azure() {
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(
            c(Method::POST, "/api/virtualNetworkGateways/gw/reset"),
            Some((
                "Microsoft.Network/virtualNetworkGateways/reset/action".into(),
                "/vgw/virtualNetworkGateways/gw".into()
            ))
        );
        assert_eq!(
            c(Method::PUT, "/api/connections/c1").unwrap().0,
            "Microsoft.Network/connections/write"
        );
        assert_eq!(
            c(Method::GET, "/api/connections/c1/sharedkey").unwrap().0,
            "Microsoft.Network/connections/sharedKey/read"
        );
        assert_eq!(
            c(Method::DELETE, "/api/virtualNetworkGateways/gw/natRules/n1").unwrap(),
            (
                "Microsoft.Network/virtualNetworkGateways/natRules/delete".into(),
                "/vgw/virtualNetworkGateways/gw/natRules/n1".into()
            )
        );
        assert_eq!(c(Method::GET, "/api/connections/c1"), None);
    }

    #[test]
    fn times_and_offsets_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_time("2026-12-02T20:00:00.5Z").map(rfc3339),
            Some("2026-12-02T20:00:00.500Z".into())
        );
        assert_eq!(parse_time("2026-13-02T20:00:00Z"), None);
        assert_eq!(parse_offset("1h"), Some(3_600_000));
        assert_eq!(parse_offset("1d2h"), Some(93_600_000));
        assert_eq!(parse_offset("x"), None);
    }

    #[test]
    fn entries_survive_reopen_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let log = ActivityLog::open(dir.path(), 90).unwrap();
        for (caller, code) in [("root", 200), ("api-token", 409)] {
            log.append(&Entry {
                time_ms: now_ms(),
                caller: caller.into(),
                caller_uid: None,
                operation: "Microsoft.Network/connections/write".into(),
                method: "PUT".into(),
                resource_id: "/vgw/connections/c".into(),
                status_code: code,
                correlation_id: "x".into(),
                duration_ms: 1,
            })
            .unwrap();
        }
        drop(log);
        let log = ActivityLog::open(dir.path(), 90).unwrap();
        assert_eq!(
            log.query(0, u64::MAX >> 2, None, None, 10).unwrap().len(),
            2
        );
        let failed = log
            .query(0, u64::MAX >> 2, None, Some("Failed"), 10)
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["caller"], "api-token");
        assert_eq!(
            log.query(0, u64::MAX >> 2, Some("root"), None, 10)
                .unwrap()
                .len(),
            1
        );
    }
}
