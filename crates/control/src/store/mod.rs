//! The desired state's durable store: the [`StateStore`] trait, its [`StoreError`], the change
//! notification the reconcilers wait on ([`ChangeFeed`]), and the SQLite implementation
//! ([`SqliteStore`]). Another store (etcd, for a fleet) goes beside `sqlite.rs` and implements
//! [`StateStore`]; nothing above this module knows which one runs.

mod notify;
mod sqlite;

pub use notify::ChangeFeed;
pub use sqlite::*;

/// A stored resource, keyed by collection and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// Collection, e.g. `connections`.
    pub collection: String,
    /// Resource name.
    pub name: String,
}

impl ResourceKey {
    /// A key for `name` in `collection`.
    pub fn new(collection: &str, name: &str) -> Self {
        Self {
            collection: collection.to_string(),
            name: name.to_string(),
        }
    }
}

/// One row as stored: the spec as JSON, its etag, and the secret if the resource has one.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResource {
    /// Which resource.
    pub key: ResourceKey,
    /// The spec as JSON, without secrets.
    pub spec: String,
    /// Changes whenever the resource changes.
    pub etag: String,
    /// The shared key, for connections.
    pub secret: Option<String>,
}

/// One write of a transaction.
#[derive(Clone, Debug)]
pub enum Write {
    /// Create or replace a resource.
    Put(StoredResource),
    /// Remove a resource and its secret.
    Delete(ResourceKey),
}

/// The desired-state store. A commit is atomic and durable when it returns.
pub trait StateStore: Send {
    /// Every stored resource.
    fn load(&mut self) -> Result<Vec<StoredResource>, StoreError>;
    /// Applies all writes or none.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;
}

/// A store failure: what the store said, in words. It carries no backend type, so any store can
/// produce it; the API answers it with 500 and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    message: String,
}

impl StoreError {
    /// A failure described by `message` (the backend's own words; never a secret).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}
