//! Where desired state is kept: an embedded SQLite database (WAL, synchronous=FULL, versioned schema).
//!
//! The store sits behind the narrow [`StateStore`] trait so a deployment that outgrows one box can put the
//! desired state into an existing distributed engine (etcd, Kubernetes resources) instead; nothing else in
//! the control plane knows it is SQLite.
//!
//! Secrets (shared keys) live in their own table so that no query for specs can return them, and the
//! database file, its WAL and its shared-memory file are created 0600.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{ResourceKey, StateStore, StoreError, StoredResource, Write};

/// Schema migrations, applied in order; `PRAGMA user_version` holds how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: resources and their secrets.
    "CREATE TABLE resources (
        collection TEXT NOT NULL,
        name TEXT NOT NULL,
        etag TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        PRIMARY KEY (collection, name)
     ) WITHOUT ROWID;
     CREATE TABLE secrets (
        collection TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (collection, name)
     ) WITHOUT ROWID;",
    // 2: a log of applied changes, so an operator can see when desired state last changed.
    "CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        collection TEXT NOT NULL,
        name TEXT NOT NULL,
        action TEXT NOT NULL
     );",
];

/// Entries the `changes` table keeps (the newest); older ones are deleted as new ones are written.
pub const MAX_CHANGES: i64 = 10_000;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// SQLite-backed [`StateStore`].
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `state.db` in `dir`, 0600, and migrates it to [`SCHEMA_VERSION`].
    /// A database written by a newer vgw is refused rather than misread.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join("state.db");
        if !path.exists() {
            // Create the file ourselves so it is 0600 from its first byte; SQLite gives the WAL and
            // shared-memory files the same mode as the database.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        let conn =
            Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut store = Self { conn, path };
        store
            .configure()
            .map_err(|e| format!("{}: {e}", store.path.display()))?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&mut self) -> rusqlite::Result<()> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "SQLite refused WAL mode");
        }
        // FULL: an acknowledged change survives power loss, not only a process crash.
        self.conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), String> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "{} has schema version {version}, newer than this vgw understands ({SCHEMA_VERSION}); run the \
                 newer vgw or restore a backup",
                self.path.display()
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| e.to_string())?;
            tx.execute_batch(sql)
                .map_err(|e| format!("migration {}: {e}", i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            tracing::info!(version = i + 1, "state store migrated");
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// `PRAGMA integrity_check`, "ok" when healthy.
    pub fn integrity_check(&self) -> rusqlite::Result<String> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::new(e.to_string())
    }
}

impl StateStore for SqliteStore {
    fn load(&mut self) -> Result<Vec<StoredResource>, StoreError> {
        self.load_rows().map_err(StoreError::from)
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        self.commit_rows(writes).map_err(StoreError::from)
    }
}

impl SqliteStore {
    fn load_rows(&mut self) -> Result<Vec<StoredResource>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(
            "SELECT r.collection, r.name, r.spec, r.etag, s.value FROM resources r
             LEFT JOIN secrets s ON s.collection = r.collection AND s.name = r.name
             ORDER BY r.collection, r.name",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(StoredResource {
                key: ResourceKey {
                    collection: row.get(0)?,
                    name: row.get(1)?,
                },
                spec: row.get(2)?,
                etag: row.get(3)?,
                secret: row.get(4)?,
            })
        })?;
        rows.collect()
    }

    fn commit_rows(&mut self, writes: &[Write]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        for w in writes {
            match w {
                Write::Put(r) => {
                    let existed: Option<i64> = tx
                        .query_row(
                            "SELECT 1 FROM resources WHERE collection=?1 AND name=?2",
                            params![r.key.collection, r.key.name],
                            |row| row.get(0),
                        )
                        .optional()?;
                    tx.execute(
                        "INSERT INTO resources (collection, name, etag, spec) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (collection, name) DO UPDATE SET etag=excluded.etag, spec=excluded.spec,
                         updated_at=strftime('%Y-%m-%dT%H:%M:%fZ','now')",
                        params![r.key.collection, r.key.name, r.etag, r.spec],
                    )?;
                    match &r.secret {
                        Some(v) => tx.execute(
                            "INSERT INTO secrets (collection, name, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (collection, name) DO UPDATE SET value=excluded.value",
                            params![r.key.collection, r.key.name, v],
                        )?,
                        None => tx.execute(
                            "DELETE FROM secrets WHERE collection=?1 AND name=?2",
                            params![r.key.collection, r.key.name],
                        )?,
                    };
                    tx.execute(
                        "INSERT INTO changes (collection, name, action) VALUES (?1, ?2, ?3)",
                        params![
                            r.key.collection,
                            r.key.name,
                            if existed.is_some() {
                                "update"
                            } else {
                                "create"
                            }
                        ],
                    )?;
                }
                Write::Delete(key) => {
                    tx.execute(
                        "DELETE FROM resources WHERE collection=?1 AND name=?2",
                        params![key.collection, key.name],
                    )?;
                    tx.execute(
                        "DELETE FROM secrets WHERE collection=?1 AND name=?2",
                        params![key.collection, key.name],
                    )?;
                    tx.execute(
                        "INSERT INTO changes (collection, name, action) VALUES (?1, ?2, 'delete')",
                        params![key.collection, key.name],
                    )?;
                }
            }
        }
        // The change log keeps the newest MAX_CHANGES entries: a range delete on the primary key,
        // so its cost is what it removes, not the table's size.
        tx.execute(
            "DELETE FROM changes WHERE id <= (SELECT MAX(id) FROM changes) - ?1",
            params![MAX_CHANGES],
        )?;
        tx.commit()
    }
}

/// Counts resources per collection; used by tests and `doctor`.
pub fn count_by_collection(rows: &[StoredResource]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in rows {
        *out.entry(r.key.collection.clone()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_commits_and_refuses_future_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let key = ResourceKey::new("connections", "c1");
        store
            .commit(&[Write::Put(StoredResource {
                key: key.clone(),
                spec: "{}".into(),
                etag: "e1".into(),
                secret: Some("k".into()),
            })])
            .unwrap();
        let rows = store.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].secret.as_deref(), Some("k"));
        store.commit(&[Write::Delete(key)]).unwrap();
        assert!(store.load().unwrap().is_empty());
        assert_eq!(store.integrity_check().unwrap(), "ok");
        let mode = std::fs::metadata(dir.path().join("state.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        assert!(
            SqliteStore::open(dir.path())
                .err()
                .unwrap()
                .contains("newer")
        );
    }

    #[test]
    fn the_change_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let put = |i: i64| {
            Write::Put(StoredResource {
                key: ResourceKey::new("localNetworkGateways", &format!("lg{}", i % 7)),
                spec: "{}".into(),
                etag: format!("e{i}"),
                secret: None,
            })
        };
        for chunk in 0..(MAX_CHANGES / 500 + 3) {
            let writes: Vec<Write> = (0..500).map(|i| put(chunk * 500 + i)).collect();
            store.commit(&writes).unwrap();
        }
        let (n, max): (i64, i64) = store
            .conn
            .query_row("SELECT COUNT(*), MAX(id) FROM changes", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(n, MAX_CHANGES);
        assert_eq!(max, (MAX_CHANGES / 500 + 3) * 500);
    }

    #[test]
    fn upgrades_a_version_one_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
