//! The desired-state owner: a validated in-memory copy, written through to the store on every change.
//!
//! Every change goes through [`Controller::mutate`]: copy the state, let the caller edit the copy, validate
//! the whole result, diff it, commit the diff to the store, and only then make it current and wake the
//! reconciler. A refused change (validation, store failure) leaves the state untouched.

use std::collections::HashMap;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Mutex, watch};

use crate::ops::diaglog::{Category, DiagLog};
use crate::plan::Instance;

use crate::model::{ConnectionSpec, LocalGatewaySpec, VnetGatewaySpec, collection};
use crate::state::{Change, ChangeAction, DesiredState, diff};
use crate::store::{ChangeFeed, ResourceKey, StateStore, StoreError, StoredResource, Write};
use crate::validate::{ValidationError, validate_state};

struct Inner {
    store: Box<dyn StateStore>,
    state: DesiredState,
    etags: HashMap<ResourceKey, String>,
}

/// Owns the desired state. Cheap reads (a clone under a short lock), serialised writes.
pub struct Controller {
    inner: Mutex<Inner>,
    /// Set on an active-active replica: where the configuration is written instead (crate::ha).
    replica_of: std::sync::OnceLock<String>,
    changes: ChangeFeed,
    log: Arc<DiagLog>,
    instance: Instance,
    /// Most local network gateways, and most connections, the state may hold (`--max-resources`).
    max_resources: std::sync::atomic::AtomicUsize,
}

/// Why the controller refused a change. Not an HTTP type: the API maps it (400, 409, 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerError {
    /// The new state breaks a validation rule.
    Invalid(ValidationError),
    /// This instance replicates its configuration from `primary` (active-active) and takes no writes.
    ReadOnlyReplica {
        /// Where the change has to be made instead.
        primary: String,
    },
    /// The store did not commit the change; nothing changed.
    Store(StoreError),
    /// A broken invariant of the controller itself.
    Internal(&'static str),
    /// The change would grow a collection past `vgw serve --max-resources`.
    ResourceCountLimitExceeded {
        /// The collection (`local-gateway`, `vpn-connection`).
        kind: &'static str,
        /// The words for the operator.
        message: String,
    },
}

impl std::fmt::Display for ControllerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(e) => e.fmt(f),
            Self::ReadOnlyReplica { primary } => write!(
                f,
                "this gateway instance replicates its configuration from the other instance at {primary}; make the change there (vgw --api-url http://{primary} ...)"
            ),
            Self::Store(e) => write!(f, "state store: {e}"),
            Self::Internal(what) => f.write_str(what),
            Self::ResourceCountLimitExceeded { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ControllerError {}

/// Default of [`Controller::set_max_resources`]: local gateways, and connections, each.
pub const DEFAULT_MAX_RESOURCES: usize = 10_000;

/// The outcome of a change.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The resources that changed (empty when the change was a no-op).
    pub changes: Vec<Change>,
    /// The state after the change.
    pub state: DesiredState,
    /// Current etags.
    pub etags: HashMap<ResourceKey, String>,
}

fn new_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

impl Controller {
    /// Loads the stored state. A stored resource that no longer parses is a hard error naming it, since
    /// serving a partial configuration would silently drop tunnels.
    ///
    /// `instance` is this process's active-active index (`vgw serve --instance N`); the engines'
    /// plans ask [`Controller::instance`] for it.
    pub fn load(
        mut store: Box<dyn StateStore>,
        log: Arc<DiagLog>,
        instance: Instance,
    ) -> Result<Self, String> {
        let rows = store
            .load()
            .map_err(|e| format!("reading the state store: {e}"))?;
        let mut state = DesiredState::default();
        let mut etags = HashMap::new();
        for row in rows {
            let bad = |e: serde_json::Error| {
                format!(
                    "stored {}/{} is unreadable: {e}",
                    row.key.collection, row.key.name
                )
            };
            match row.key.collection.as_str() {
                collection::GATEWAYS => {
                    state.gateway =
                        Some(serde_json::from_str::<VnetGatewaySpec>(&row.spec).map_err(bad)?)
                }
                collection::LOCAL_GATEWAYS => {
                    let lg: LocalGatewaySpec = serde_json::from_str(&row.spec).map_err(bad)?;
                    state.local_gateways.insert(lg.name.clone(), lg);
                }
                collection::CONNECTIONS => {
                    let mut c: ConnectionSpec = serde_json::from_str(&row.spec).map_err(bad)?;
                    c.shared_key = row.secret.clone();
                    state.connections.insert(c.name.clone(), c);
                }
                other => return Err(format!("unknown collection '{other}' in the state store")),
            }
            etags.insert(row.key, row.etag);
        }
        state.normalise();
        log.set_secrets(secrets(&state));
        Ok(Self {
            inner: Mutex::new(Inner {
                store,
                state,
                etags,
            }),
            changes: ChangeFeed::default(),
            log,
            instance,
            replica_of: std::sync::OnceLock::new(),
            max_resources: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_RESOURCES),
        })
    }

    /// Which active-active instance this process is.
    pub fn instance(&self) -> Instance {
        self.instance
    }

    /// Caps the number of local network gateways, and of connections (each), the state may hold. A
    /// change that would grow a collection past it is refused with 409 `ResourceCountLimitExceeded`;
    /// a state loaded above it keeps working and may only shrink.
    pub fn set_max_resources(&self, max: usize) {
        self.max_resources
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes this controller a replica: API writes are refused with a pointer to `primary`.
    pub fn set_replica_of(&self, primary: String) {
        let _ = self.replica_of.set(primary);
    }

    /// Replaces the whole desired state with the primary's (active-active replication); validated,
    /// stored and reconciled like any change.
    pub async fn replace(&self, state: DesiredState) -> Result<Applied, ControllerError> {
        self.apply(false, |s, _| {
            *s = state;
            Ok(())
        })
        .await
    }

    /// A snapshot of the desired state and the etags.
    pub async fn snapshot(&self) -> (DesiredState, HashMap<ResourceKey, String>) {
        let inner = self.inner.lock().await;
        (inner.state.clone(), inner.etags.clone())
    }

    /// Wakes whenever the desired state changes; the reconciler waits on this.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies `edit` to a copy of the state; validates, stores and publishes it. With `dry_run` nothing is
    /// stored and the diff is returned as it would be.
    ///
    /// The edit's own error type `E` is the caller's (the API's is `ApiError`); the controller's
    /// refusals reach it as [`ControllerError`].
    pub async fn mutate<F, E>(&self, dry_run: bool, edit: F) -> Result<Applied, E>
    where
        F: FnOnce(&mut DesiredState, &HashMap<ResourceKey, String>) -> Result<(), E>,
        E: From<ControllerError>,
    {
        if let Some(primary) = self.replica_of.get() {
            return Err(ControllerError::ReadOnlyReplica {
                primary: primary.clone(),
            }
            .into());
        }
        self.apply(dry_run, edit).await
    }

    async fn apply<F, E>(&self, dry_run: bool, edit: F) -> Result<Applied, E>
    where
        F: FnOnce(&mut DesiredState, &HashMap<ResourceKey, String>) -> Result<(), E>,
        E: From<ControllerError>,
    {
        let mut inner = self.inner.lock().await;
        let mut next = inner.state.clone();
        edit(&mut next, &inner.etags)?;
        let max = self
            .max_resources
            .load(std::sync::atomic::Ordering::Relaxed);
        for (kind, before, after) in [
            (
                "local-gateway",
                inner.state.local_gateways.len(),
                next.local_gateways.len(),
            ),
            (
                "vpn-connection",
                inner.state.connections.len(),
                next.connections.len(),
            ),
        ] {
            if after > max && after > before {
                return Err(ControllerError::ResourceCountLimitExceeded {
                    kind,
                    message: format!(
                        "this gateway holds at most {max} {kind} resources (vgw serve \
                         --max-resources); the change would make {after}. Delete unused ones or \
                         restart vgw serve with a larger --max-resources."
                    ),
                }
                .into());
            }
        }
        next.normalise();
        validate_state(&next).map_err(ControllerError::Invalid)?;
        let changes = diff(&inner.state, &next);
        if dry_run || changes.is_empty() {
            return Ok(Applied {
                changes,
                state: next,
                etags: inner.etags.clone(),
            });
        }
        let mut writes = Vec::new();
        let mut etags = inner.etags.clone();
        for change in &changes {
            let key = ResourceKey::new(&change.resource_type, &change.name);
            match change.action {
                ChangeAction::Delete => {
                    etags.remove(&key);
                    writes.push(Write::Delete(key));
                }
                ChangeAction::Create | ChangeAction::Update => {
                    let (spec, secret) = serialise(&next, &key)
                        .ok_or(ControllerError::Internal("diff names a missing resource"))?;
                    let etag = new_etag();
                    etags.insert(key.clone(), etag.clone());
                    writes.push(Write::Put(StoredResource {
                        key,
                        spec,
                        etag,
                        secret,
                    }));
                }
            }
        }
        // SQLite blocks; keep the runtime's other tasks moving while it syncs.
        let store = &mut inner.store;
        tokio::task::block_in_place(|| store.commit(&writes)).map_err(ControllerError::Store)?;
        self.log
            .set_secrets(secrets(&next).chain(secrets(&inner.state)));
        inner.state = next.clone();
        inner.etags = etags.clone();
        self.changes.publish();
        for change in &changes {
            let resource = crate::model::resource_id(&change.resource_type, &change.name);
            let fields: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
            let verb = match change.action {
                ChangeAction::Create => "created",
                ChangeAction::Update => "updated",
                ChangeAction::Delete => "deleted",
            };
            let message = if fields.is_empty() {
                format!("{} {verb}", change.name)
            } else {
                format!("{} {verb}: {}", change.name, fields.join(", "))
            };
            self.log.log(
                Category::GatewayDiagnosticLog,
                "info",
                &resource,
                &message,
                json!({"action": change.action, "fields": fields}),
            );
        }
        Ok(Applied {
            changes,
            state: next,
            etags,
        })
    }
}

/// Every shared key in `state`, for the log's redactor.
fn secrets(state: &DesiredState) -> impl Iterator<Item = String> + '_ {
    state
        .connections
        .values()
        .filter_map(|c| c.shared_key.clone())
}

fn serialise(state: &DesiredState, key: &ResourceKey) -> Option<(String, Option<String>)> {
    match key.collection.as_str() {
        collection::GATEWAYS => state
            .gateway
            .as_ref()
            .map(|g| (serde_json::to_string(g).unwrap_or_default(), None)),
        collection::LOCAL_GATEWAYS => state
            .local_gateways
            .get(&key.name)
            .map(|g| (serde_json::to_string(g).unwrap_or_default(), None)),
        collection::CONNECTIONS => state.connections.get(&key.name).map(|c| {
            (
                serde_json::to_string(c).unwrap_or_default(),
                c.shared_key.clone(),
            )
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddressSpace, LocalGatewaySpec};

    fn lg(i: usize) -> LocalGatewaySpec {
        LocalGatewaySpec {
            name: format!("site{i}"),
            gateway_ip_address: Some(format!("198.18.1.{}", i + 1)),
            local_network_address_space: AddressSpace {
                address_prefixes: vec![format!("10.{}.0.0/16", i + 1)],
            },
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_write_past_the_resource_cap_is_refused_with_the_limit_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path()).unwrap();
        let log = Arc::new(DiagLog::open(&dir.path().join("logs"), 1 << 20, 2).unwrap());
        let c = Controller::load(Box::new(store), log, crate::plan::Instance(0)).unwrap();
        c.set_max_resources(2);
        for i in 0..2 {
            c.mutate(false, |s, _| {
                s.local_gateways.insert(format!("site{i}"), lg(i));
                Ok::<(), ControllerError>(())
            })
            .await
            .unwrap();
        }
        let err = c
            .mutate(false, |s, _| {
                s.local_gateways.insert("site2".into(), lg(2));
                Ok::<(), ControllerError>(())
            })
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("ResourceCountLimitExceeded") && text.contains("--max-resources"),
            "{text}"
        );
        // Shrinking stays possible.
        c.mutate(false, |s, _| {
            s.local_gateways.remove("site1");
            Ok::<(), ControllerError>(())
        })
        .await
        .unwrap();
    }
}
