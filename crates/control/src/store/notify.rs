//! Change notification: a generation counter that moves on every committed change, which the
//! reconcilers (tunnels, BGP speaker, HA replication) wait on.

use tokio::sync::watch;

/// Publishes "the desired state changed" as a generation number.
#[derive(Debug)]
pub struct ChangeFeed {
    generation: watch::Sender<u64>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        let (generation, _) = watch::channel(0);
        Self { generation }
    }
}

impl ChangeFeed {
    /// Counts one more committed change and wakes every subscriber.
    pub fn publish(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that wakes on each [`publish`](Self::publish).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
