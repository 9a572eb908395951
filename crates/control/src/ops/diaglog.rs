//! Diagnostic logs: Azure's five categories as JSON lines in the state directory, rotated by size.
//!
//! One file (`logs/vgw.jsonl`, then `.1` … `.N` after rotation) holds every category, so a reader sees
//! the order in which things happened across categories; `vgw logs --category` filters. Each record has
//! `seq` (monotonic across restarts), `time` (RFC 3339 UTC), `category`, `level`, `resource`, `message`
//! and optional structured `properties`.
//!
//! Secrets never reach a line: every record is passed through [`Redactor`], which replaces any registered
//! secret (the connections' shared keys) with `<redacted>` — a guard behind the rule that callers never
//! log secrets in the first place.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Azure's diagnostic log categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Category {
    /// Configuration changes and gateway events.
    GatewayDiagnosticLog,
    /// Tunnel up/down with reasons.
    TunnelDiagnosticLog,
    /// Route and BGP changes.
    RouteDiagnosticLog,
    /// Every IKE exchange.
    #[serde(rename = "IKEDiagnosticLog")]
    IkeDiagnosticLog,
    /// Point-to-site connects and failures.
    #[serde(rename = "P2SDiagnosticLog")]
    P2sDiagnosticLog,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 5] = [
        Category::GatewayDiagnosticLog,
        Category::TunnelDiagnosticLog,
        Category::RouteDiagnosticLog,
        Category::IkeDiagnosticLog,
        Category::P2sDiagnosticLog,
    ];

    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::GatewayDiagnosticLog => "GatewayDiagnosticLog",
            Category::TunnelDiagnosticLog => "TunnelDiagnosticLog",
            Category::RouteDiagnosticLog => "RouteDiagnosticLog",
            Category::IkeDiagnosticLog => "IKEDiagnosticLog",
            Category::P2sDiagnosticLog => "P2SDiagnosticLog",
        }
    }

    /// Parses a category name, case-insensitively.
    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(text))
    }
}

/// One log record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Record {
    /// Position in the log, increasing across restarts.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Milliseconds since the Unix epoch (for `--since`).
    #[serde(rename = "timeMs")]
    pub time_ms: u64,
    /// Azure category.
    pub category: Category,
    /// info, warning or error.
    pub level: String,
    /// The resource id the record is about.
    pub resource: String,
    /// What happened, for a person.
    pub message: String,
    /// Structured details (exchange, notify, proposals, counters …).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub properties: Value,
}

/// Replaces registered secrets in text.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Replaces the set of secrets to hide.
    pub fn set(&mut self, secrets: impl IntoIterator<Item = String>) {
        self.secrets = secrets.into_iter().filter(|s| s.len() >= 3).collect();
        // Longest first, so a secret that contains another is hidden whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }
}

struct Writer {
    file: File,
    size: u64,
    next_seq: u64,
    redactor: Redactor,
    recent: VecDeque<Record>,
}

/// The diagnostic log of one daemon.
pub struct DiagLog {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    inner: Mutex<Writer>,
}

/// Records kept in memory for fast queries and `--follow`.
const RECENT: usize = 10_000;

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds (civil-from-days, H. Hinnant's algorithm).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl DiagLog {
    /// Opens (creating) `dir/vgw.jsonl`; rotates at `max_bytes`, keeping `keep` old files.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("vgw.jsonl");
        let mut recent = VecDeque::new();
        // Just after a rotation the current file is empty: read the previous one too, so `seq`
        // continues and recent history survives a restart.
        for file in [dir.join("vgw.jsonl.1"), path.clone()] {
            let Ok(f) = File::open(&file) else { continue };
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    if recent.len() == RECENT {
                        recent.pop_front();
                    }
                    recent.push_back(r);
                }
            }
        }
        let next_seq = recent.back().map(|r| r.seq + 1).unwrap_or(1);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            keep,
            inner: Mutex::new(Writer {
                file,
                size,
                next_seq,
                redactor: Redactor::default(),
                recent,
            }),
        })
    }

    /// Sets the secrets that must never appear in a line.
    pub fn set_secrets(&self, secrets: impl IntoIterator<Item = String>) {
        self.lock().redactor.set(secrets);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record. Logging never fails the caller: an I/O error is reported through tracing.
    pub fn log(
        &self,
        category: Category,
        level: &str,
        resource: &str,
        message: &str,
        properties: Value,
    ) {
        let mut w = self.lock();
        let time_ms = now_ms();
        let record = Record {
            seq: w.next_seq,
            time: rfc3339(time_ms),
            time_ms,
            category,
            level: level.to_string(),
            resource: w.redactor.redact(resource),
            message: w.redactor.redact(message),
            properties: if properties.is_null() {
                Value::Null
            } else {
                serde_json::from_str(&w.redactor.redact(&properties.to_string()))
                    .unwrap_or(Value::Null)
            },
        };
        w.next_seq += 1;
        let mut line = serde_json::to_string(&record).unwrap_or_default();
        line.push('\n');
        if let Err(e) = w.file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the diagnostic log");
        }
        w.size += line.len() as u64;
        tracing::info!(category = category.as_str(), resource = %record.resource, "{}", record.message);
        if w.recent.len() == RECENT {
            w.recent.pop_front();
        }
        w.recent.push_back(record);
        if w.size >= self.max_bytes {
            self.rotate(&mut w);
        }
    }

    fn rotate(&self, w: &mut Writer) {
        let base = self.dir.join("vgw.jsonl");
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(
                self.dir.join(format!("vgw.jsonl.{i}")),
                self.dir.join(format!("vgw.jsonl.{}", i + 1)),
            );
        }
        let _ = std::fs::rename(&base, self.dir.join("vgw.jsonl.1"));
        match open_append(&base) {
            Ok(f) => {
                w.file = f;
                w.size = 0;
            }
            Err(e) => tracing::warn!(error = %e, "cannot rotate the diagnostic log"),
        }
    }

    /// Records matching the filter, oldest first, at most `limit` (the newest ones).
    pub fn query(&self, filter: &Filter) -> Vec<Record> {
        let w = self.lock();
        let mut out: Vec<Record> = w
            .recent
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        if out.len() > filter.limit {
            out.drain(..out.len() - filter.limit);
        }
        out
    }
}

/// What `vgw logs` asks for.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Only this category.
    pub category: Option<Category>,
    /// Only records about this connection (by resource id or name in the properties).
    pub connection: Option<String>,
    /// Only records at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Only records after this sequence number (for --follow).
    pub after_seq: Option<u64>,
    /// At most this many (the newest).
    pub limit: usize,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        self.category.is_none_or(|c| c == r.category)
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.after_seq.is_none_or(|s| r.seq > s)
            && self.connection.as_ref().is_none_or(|c| {
                // ARM ids and the older `/vgw/connections/NAME` ids of earlier log files both match.
                r.resource
                    .strip_suffix(c.as_str())
                    .is_some_and(|p| p.ends_with("/connections/"))
                    || r.properties.get("connection").and_then(Value::as_str) == Some(c.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_filters_rotates_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let log = DiagLog::open(dir.path(), 600, 2).unwrap();
        log.set_secrets(["TopSecretKey".to_string()]);
        log.log(
            Category::IkeDiagnosticLog,
            "info",
            "/vgw/connections/c1",
            "AUTH with TopSecretKey",
            json!({"psk": "TopSecretKey"}),
        );
        for i in 0..10 {
            log.log(
                Category::GatewayDiagnosticLog,
                "info",
                "/vgw/virtualNetworkGateways/gw",
                &format!("change {i}"),
                Value::Null,
            );
        }
        let ike = log.query(&Filter {
            category: Some(Category::IkeDiagnosticLog),
            connection: None,
            since_ms: None,
            after_seq: None,
            limit: 100,
        });
        assert_eq!(ike.len(), 1);
        assert!(
            !serde_json::to_string(&ike)
                .unwrap()
                .contains("TopSecretKey")
        );
        let c1 = log.query(&Filter {
            category: None,
            connection: Some("c1".into()),
            since_ms: None,
            after_seq: None,
            limit: 100,
        });
        assert_eq!(c1.len(), 1);
        assert!(dir.path().join("vgw.jsonl.1").exists(), "rotation by size");
        assert!(
            !dir.path().join("vgw.jsonl.3").exists(),
            "only `keep` old files"
        );
        let all = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<String>();
        assert!(!all.contains("TopSecretKey"));
        drop(log);
        let reopened = DiagLog::open(dir.path(), 600, 2).unwrap();
        reopened.log(
            Category::TunnelDiagnosticLog,
            "info",
            "x",
            "after restart",
            Value::Null,
        );
        let last = reopened.query(&Filter {
            category: None,
            connection: None,
            since_ms: None,
            after_seq: None,
            limit: 1,
        });
        assert!(
            last[0].seq > 11,
            "seq continues across restarts: {}",
            last[0].seq
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_900_000_123), "2026-11-28T21:06:40.123Z");
    }
}
