//! What a run tells whoever watches it while it goes (the CLI's progress, `serve`'s live
//! page): planned, each item's outcome, each batch done, finished. Events go to a bounded
//! broadcast channel: nobody listening costs nothing, and a listener that falls behind loses
//! old events (it is told how many) instead of holding the run back.

use crate::plan::{Kind, Outcome};
use serde::Serialize;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast;

/// One thing that happened in a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run holds its command's lock (a dry run takes none) and is gathering facts.
    Started { run_id: String, command: String, dry_run: bool },
    /// The policy decided: `units` to carry out (`items` in all), `kept` things kept.
    Planned { run_id: String, command: String, dry_run: bool, units: u64, items: u64, kept: u64, scanned: u64 },
    /// One item was carried out (or would be, in a dry run).
    Item { run_id: String, kind: Kind, target: String, outcome: Outcome, error: Option<String> },
    /// A batch is done and audited: `done_units` of `total_units`.
    Batch { run_id: String, done_units: u64, total_units: u64 },
    /// The run ended (`status`: success, partial, aborted, skipped).
    Finished { run_id: String, status: String, deleted: u64, failed: u64, bytes_reclaimed: u64 },
}

/// Where a run sends its events. Cloning shares the channel.
#[derive(Clone)]
pub struct Events(Option<Arc<broadcast::Sender<Event>>>);

impl Events {
    /// A channel keeping up to `capacity` events for each listener.
    pub fn channel(capacity: usize) -> (Events, broadcast::Receiver<Event>) {
        let (tx, rx) = broadcast::channel(capacity);
        (Events(Some(Arc::new(tx))), rx)
    }

    /// Events that go nowhere.
    pub fn none() -> Events {
        Events(None)
    }

    /// Another listener, from now on.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        self.0.as_ref().map(|tx| tx.subscribe())
    }

    /// A handle that lets others listen while the run goes, without keeping its channel
    /// open once the run has ended.
    pub fn downgrade(&self) -> WeakEvents {
        WeakEvents(self.0.as_ref().map(Arc::downgrade))
    }

    /// True when someone listens (build an event only then).
    pub fn wanted(&self) -> bool {
        self.0.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
    }

    pub fn send(&self, e: Event) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}

/// A run's events for listeners who come later: `None` once the run has ended.
#[derive(Clone, Default)]
pub struct WeakEvents(Option<Weak<broadcast::Sender<Event>>>);

impl WeakEvents {
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        self.0.as_ref().and_then(Weak::upgrade).map(|tx| tx.subscribe())
    }
}
