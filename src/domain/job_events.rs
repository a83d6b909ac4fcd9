//! A job's changes, looked up once per replica however many streams follow the job.
//!
//! Every stream of a job (WebSocket, server-sent events, gRPC `WatchJob`) subscribes here.
//! The first subscriber starts the job's watcher, one task that reads the job every [`POLL`]
//! and publishes each new status on a `watch` channel; later subscribers share it. The
//! watcher ends after the job's final status (or its removal), or as soon as its last
//! subscriber is dropped, so the database load follows the jobs watched, not the streams,
//! and nothing outlives the streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Job, JobStatus, JobStore};

/// How often a watched job is read.
pub const POLL: Duration = Duration::from_millis(200);

/// What a watcher last read.
#[derive(Debug, Clone)]
enum Seen {
    /// Not read yet (the database may be away).
    Nothing,
    Job(Job),
    Gone,
}

/// One change of a watched job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The job when first seen, and at each new status.
    Changed(Job),
    /// The job no longer exists.
    Gone,
}

type Channel = Arc<watch::Sender<Seen>>;

/// The watchers of this replica, by job id.
#[derive(Clone, Default)]
pub struct JobWatchers {
    by_id: Arc<Mutex<HashMap<String, Channel>>>,
}

impl JobWatchers {
    /// Follow the job `id` (in canonical form), starting its watcher if none runs.
    pub fn subscribe(&self, store: &JobStore, id: &str) -> JobWatch {
        let mut by_id = self.lock();
        let rx = match by_id.get(id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(Seen::Nothing);
                let tx = Arc::new(tx);
                by_id.insert(id.to_owned(), Arc::clone(&tx));
                let entry = Entry {
                    watchers: self.clone(),
                    id: id.to_owned(),
                    tx,
                };
                tokio::spawn(entry.watch(store.clone()));
                rx
            }
        };
        JobWatch {
            rx,
            last: None,
            done: false,
        }
    }

    /// Jobs watched now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no job is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A watcher's place in the registry. Dropped however its task ends (the job ended, no
/// subscriber is left, or the task was aborted), it takes the place with it, and its
/// subscribers see the channel close.
struct Entry {
    watchers: JobWatchers,
    id: String,
    tx: Channel,
}

impl Entry {
    async fn watch(self, store: JobStore) {
        let mut last = None;
        loop {
            let ended = match store.get(&self.id, None).await {
                Ok(Some(job)) => {
                    let status = job.status;
                    if last != Some(status) {
                        last = Some(status);
                        self.tx.send_replace(Seen::Job(job));
                    }
                    status.is_final()
                }
                Ok(None) => {
                    self.tx.send_replace(Seen::Gone);
                    true
                }
                Err(_) => false, // the database is away: keep looking
            };
            if ended {
                return;
            }
            tokio::select! {
                () = self.tx.closed() => {
                    if self.retire_if_unwatched() {
                        return;
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Leave the registry if no subscriber is left. Subscribing takes the registry's lock,
    /// so checking and leaving under it means no subscriber can join a leaving watcher.
    fn retire_if_unwatched(&self) -> bool {
        let mut by_id = self.watchers.lock();
        if self.tx.receiver_count() > 0 {
            return false;
        }
        self.leave(&mut by_id);
        true
    }

    fn leave(&self, by_id: &mut HashMap<String, Channel>) {
        if by_id
            .get(&self.id)
            .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
        {
            by_id.remove(&self.id);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut by_id = self.watchers.lock();
        self.leave(&mut by_id);
    }
}

/// One stream's subscription to a job's watcher.
pub struct JobWatch {
    rx: watch::Receiver<Seen>,
    last: Option<JobStatus>,
    done: bool,
}

impl JobWatch {
    /// The next change: the job as first seen and at each new status, or `Gone`; `None`
    /// after the final status or once the watcher has stopped. Cancel-safe: a change not
    /// returned stays to be returned by the next call.
    pub async fn next(&mut self) -> Option<JobEvent> {
        while !self.done {
            let event = match &*self.rx.borrow_and_update() {
                Seen::Job(job) if self.last != Some(job.status) => {
                    self.last = Some(job.status);
                    self.done = job.status.is_final();
                    Some(JobEvent::Changed(job.clone()))
                }
                Seen::Gone => {
                    self.done = true;
                    Some(JobEvent::Gone)
                }
                _ => None,
            };
            if event.is_some() {
                return event;
            }
            if self.rx.changed().await.is_err() {
                self.done = true;
            }
        }
        None
    }
}
