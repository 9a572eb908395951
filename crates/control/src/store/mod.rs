//! The desired state's durable store: the [`StateStore`] trait and its SQLite implementation.

mod sqlite;

pub use sqlite::*;
