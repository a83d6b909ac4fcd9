//! What every call carries, whichever transport it came by: its request ID, the client's
//! address, its start, the guard that catches its handler's panic, and how its end is
//! recorded on its span and in the access log. Both transports build their per-call layer
//! on this, so neither takes anything from the other; it names `http` types only (no axum,
//! no tonic).

mod client;
mod id;
mod outcome;
mod panic;

pub use client::client_ip;
pub use id::{request_id, X_REQUEST_ID};
pub use outcome::{refused, Ended};
pub use panic::{answer, guard, Guarded};

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{Extensions, HeaderMap, HeaderValue};

use crate::admission::Identity;
use crate::domain::jobs::Scope;

/// What handlers and inner layers may know about their call (one extension, so one
/// insertion per call).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Always 1–128 visible ASCII characters.
    id: HeaderValue,
    pub start: Instant,
    /// The client address (see [`client_ip`]).
    pub client: Option<IpAddr>,
}

impl RequestInfo {
    /// A call starting now, from its headers and the address of the peer that sent it.
    pub fn begin(headers: &HeaderMap, peer: Option<IpAddr>, trusted_proxies: &[IpAddr]) -> Self {
        Self {
            start: Instant::now(),
            id: request_id(headers),
            client: client_ip(peer, headers, trusted_proxies),
        }
    }

    /// The request ID.
    pub fn id(&self) -> &str {
        self.id.to_str().unwrap_or_default()
    }

    /// The request ID as the response echoes it.
    pub fn id_header(&self) -> &HeaderValue {
        &self.id
    }

    /// The client address of the call whose extensions these are: what admission keys on.
    pub fn client_in(extensions: &Extensions) -> Option<IpAddr> {
        extensions.get::<RequestInfo>().and_then(|i| i.client)
    }
}

/// Seconds since the Unix epoch, for `timestamp` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The jobs a caller sees, from the identity admission left with the call: its own jobs, or
/// every job for a jobs admin or while authentication is off (no identity).
pub fn jobs_scope(identity: Option<&Identity>) -> Scope {
    Scope::of(
        identity.map(|i| &*i.principal.0),
        identity.is_some_and(|i| i.jobs_admin),
    )
}
