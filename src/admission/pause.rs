//! [`ReadPause`]: how a refusal slows the connection it came on, so that refusing cannot
//! take the whole CPU.
//!
//! A refusal is cheap but not free: reading the request, answering it and counting it cost
//! about what a small request does. Past some offered load an open-loop client (one that does
//! not slow down when refused) would have the service do nothing but refuse, and serve less
//! the more it is offered — a receive livelock. So once a class refuses faster than it
//! serves ([`Overload`](super::Overload) decides), each refusal also tells the connection it
//! came on to read nothing more for a while: the client's next requests wait in the kernel's
//! socket buffers, where waiting costs nothing, and TCP's flow control slows the client down.
//! Connections that carry admitted calls are not paused.
//!
//! The transport gives each connection one `ReadPause` and puts it, in the connection's
//! [`Peer`], in the extensions of every request read from it; its reads wait while
//! [`ReadPause::until`] is in the future.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::overload::nanos;

/// The instant pauses are counted from: one per process.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The connection a request came on, in the request's extensions: one entry for both, since
/// every request carries them.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's socket address (before any proxy header is trusted).
    pub addr: SocketAddr,
    pub pause: ReadPause,
}

/// A connection's pause: shared by the connection's reader and its requests.
#[derive(Debug, Clone, Default)]
pub struct ReadPause(Arc<AtomicU64>);

impl ReadPause {
    /// Read nothing more until `for_` from now (a later pause already set stands).
    pub fn pause(&self, for_: Duration) {
        if for_.is_zero() {
            return;
        }
        let until = Instant::now().saturating_duration_since(*EPOCH) + for_;
        self.0.fetch_max(nanos(until), Ordering::Relaxed);
    }

    /// Until when reads wait, if that is still to come. One atomic load when no pause was
    /// ever set: the connection's every read asks.
    pub fn until(&self) -> Option<Instant> {
        let raw = self.0.load(Ordering::Relaxed);
        if raw == 0 {
            return None;
        }
        let until = *EPOCH + Duration::from_nanos(raw);
        if until > Instant::now() {
            Some(until)
        } else {
            // Over: the next read asks no clock (unless a new pause came meanwhile).
            let _ = self
                .0
                .compare_exchange(raw, 0, Ordering::Relaxed, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_holds_until_its_end_and_a_shorter_one_does_not_cut_it() {
        let p = ReadPause::default();
        assert_eq!(p.until(), None);
        p.pause(Duration::ZERO);
        assert_eq!(p.until(), None, "a zero pause sets nothing");
        let before = Instant::now();
        p.pause(Duration::from_secs(60));
        let until = p.until().expect("paused");
        assert!(until >= before + Duration::from_secs(60));
        p.pause(Duration::from_millis(1));
        assert_eq!(p.until(), Some(until), "the later end stands");
        let shared = p.clone();
        assert_eq!(shared.until(), Some(until), "clones share the pause");
    }

    #[test]
    fn a_pause_that_ended_reads_as_none() {
        let p = ReadPause::default();
        p.pause(Duration::from_nanos(1));
        let end = Instant::now() + Duration::from_millis(1);
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        assert_eq!(p.until(), None);
        assert_eq!(p.0.load(Ordering::Relaxed), 0, "cleared once over");
    }
}
