//! The server's side: health check and the `/metrics` cross-check.
//!
//! floodgate's `total_requests` counts every completed request except those
//! to its operational routes, `success_count` the 2xx ones and `error_count`
//! the 4xx and 5xx ones. Read before and after a measured phase, their deltas
//! must equal what the client received. Requests the client gave up on
//! (timeouts, connections that broke after the request was written, requests
//! cut short by Ctrl-C) may or may not have been counted by the server, so
//! they widen the accepted range; connection failures never reach the server.
//!
//! With several targets each server counts only the requests sent to it, so
//! the counters of all targets are summed before the comparison.

use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::client;
use crate::net::Endpoint;
use crate::stats::Stats;

/// Counters compared against the client's view.
pub const CHECKED_COUNTERS: [&str; 3] = ["total_requests", "success_count", "error_count"];

/// Outcome of the health check.
pub async fn check_health(
    endpoint: &Endpoint,
    host: &HeaderValue,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let answer = client::get(endpoint, host, path, timeout).await?;
    if !(200..300).contains(&answer.status) {
        let body = String::from_utf8_lossy(&answer.body);
        let body = body.trim();
        let shown: String = body.chars().take(300).collect();
        return Err(format!(
            "GET {path} returned {}{}{}",
            answer.status,
            if shown.is_empty() { "" } else { ": " },
            shown
        ));
    }
    Ok(())
}

/// A `/metrics` snapshot (the JSON object as served).
pub async fn snapshot(
    endpoint: &Endpoint,
    host: &HeaderValue,
    path: &str,
    timeout: Duration,
) -> Result<Map<String, Value>, String> {
    let answer = client::get(endpoint, host, path, timeout).await?;
    if !(200..300).contains(&answer.status) {
        return Err(format!("GET {path} returned {}", answer.status));
    }
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(Value::Object(map)) if map.get("total_requests").and_then(Value::as_u64).is_some() => {
            Ok(map)
        }
        _ => Err(format!(
            "GET {path} did not return floodgate's JSON metrics"
        )),
    }
}

/// Where one target's `/metrics` is read.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    /// The target's base URL, for messages.
    pub base: String,
    pub endpoint: Endpoint,
    pub host: HeaderValue,
    pub path: String,
}

/// A `/metrics` snapshot of every source, in order; the first failure names
/// its target when there are several.
pub async fn snapshot_all(
    sources: &[MetricsSource],
    timeout: Duration,
) -> Result<Vec<Map<String, Value>>, String> {
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        let snap = snapshot(&source.endpoint, &source.host, &source.path, timeout)
            .await
            .map_err(|e| {
                if sources.len() > 1 {
                    format!("{}: {e}", source.base)
                } else {
                    e
                }
            })?;
        out.push(snap);
    }
    Ok(out)
}

/// The [`CHECKED_COUNTERS`] summed over `snapshots`; a counter missing from
/// any snapshot is left out (and so not checked).
pub fn sum_counters(snapshots: &[Map<String, Value>]) -> Map<String, Value> {
    CHECKED_COUNTERS
        .iter()
        .filter_map(|name| {
            let sum = snapshots.iter().try_fold(0u64, |acc, snap| {
                acc.checked_add(snap.get(*name)?.as_u64()?)
            })?;
            Some(((*name).to_owned(), Value::from(sum)))
        })
        .collect()
}

/// What the client saw, for the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClientCounts {
    /// HTTP responses received.
    pub responses: u64,
    /// 2xx responses.
    pub successes: u64,
    /// 4xx and 5xx responses.
    pub errors: u64,
    /// Requests the client gave up on after (possibly) sending them.
    pub abandoned: u64,
}

impl ClientCounts {
    pub fn from_stats(stats: &Stats, cancelled: u64) -> Self {
        Self {
            responses: stats.responses(),
            successes: stats.successful(),
            errors: stats.error_responses(),
            abandoned: stats.timeouts() + stats.io_errors() + cancelled,
        }
    }
}

/// One compared counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterCheck {
    pub counter: String,
    pub before: u64,
    pub after: u64,
    pub delta: i64,
    /// What the client received.
    pub client: u64,
    /// Largest delta still consistent (client + abandoned requests).
    pub accepted_max: u64,
    pub ok: bool,
}

/// Result of the cross-check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountCheck {
    /// `true` when every counter's delta lies in `client..=accepted_max`.
    pub ok: bool,
    /// `true` when every delta equals the client's count exactly.
    pub exact: bool,
    pub counters: Vec<CounterCheck>,
}

impl CountCheck {
    /// `counter delta/client` for each counter, two spaces apart: one target's line in the
    /// text and HTML reports.
    pub fn summary(&self) -> String {
        self.counters
            .iter()
            .map(|c| format!("{} {}/{}", c.counter, c.delta, c.client))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// Compares the server's counter deltas with the client's counts.
pub fn compare(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    client: ClientCounts,
) -> CountCheck {
    let expected = [client.responses, client.successes, client.errors];
    let counters: Vec<CounterCheck> = CHECKED_COUNTERS
        .iter()
        .zip(expected)
        .filter_map(|(name, expected)| {
            let b = before.get(*name)?.as_u64()?;
            let a = after.get(*name)?.as_u64()?;
            let delta = a as i64 - b as i64;
            let accepted_max = expected + client.abandoned;
            Some(CounterCheck {
                counter: (*name).to_owned(),
                before: b,
                after: a,
                delta,
                client: expected,
                accepted_max,
                ok: delta >= expected as i64 && delta <= accepted_max as i64,
            })
        })
        .collect();
    let ok = !counters.is_empty() && counters.iter().all(|c| c.ok);
    let exact = ok && counters.iter().all(|c| c.delta == c.client as i64);
    CountCheck {
        ok,
        exact,
        counters,
    }
}

/// Re-reads every source's `/metrics` until the summed counters are
/// consistent with the client or stop changing, for at most `settle` — a
/// server may update its counters a moment after the client has its response.
/// Returns each source's last snapshot and the check of their sum.
pub async fn settled_snapshot(
    sources: &[MetricsSource],
    timeout: Duration,
    before: &[Map<String, Value>],
    client: ClientCounts,
    settle: Duration,
) -> Result<(Vec<Map<String, Value>>, CountCheck), String> {
    let give_up = tokio::time::Instant::now() + settle;
    let before = sum_counters(before);
    let mut after = snapshot_all(sources, timeout).await?;
    let mut check = compare(&before, &sum_counters(&after), client);
    while !check.exact && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = snapshot_all(sources, timeout).await?;
        let next_check = compare(&before, &sum_counters(&next), client);
        let stable = next_check.counters == check.counters;
        after = next;
        check = next_check;
        if stable && check.ok {
            break;
        }
    }
    Ok((after, check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metrics(total: u64, success: u64, error: u64) -> Map<String, Value> {
        match json!({"total_requests": total, "success_count": success, "error_count": error, "active_requests": 0})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn client(responses: u64, successes: u64, errors: u64, abandoned: u64) -> ClientCounts {
        ClientCounts {
            responses,
            successes,
            errors,
            abandoned,
        }
    }

    #[test]
    fn exact_match() {
        let c = compare(
            &metrics(100, 90, 10),
            &metrics(1100, 1080, 20),
            client(1000, 990, 10, 0),
        );
        assert!(c.ok && c.exact);
        assert_eq!(c.counters.len(), 3);
        assert_eq!(c.counters[0].delta, 1000);
    }

    #[test]
    fn server_missing_requests_is_a_mismatch() {
        let c = compare(
            &metrics(0, 0, 0),
            &metrics(999, 999, 0),
            client(1000, 1000, 0, 0),
        );
        assert!(!c.ok);
        assert!(!c.counters[0].ok && !c.counters[1].ok && c.counters[2].ok);
    }

    #[test]
    fn server_counting_extra_requests_is_a_mismatch() {
        let c = compare(
            &metrics(0, 0, 0),
            &metrics(1001, 1001, 0),
            client(1000, 1000, 0, 0),
        );
        assert!(!c.ok);
    }

    #[test]
    fn abandoned_requests_may_be_counted_by_the_server() {
        // 3 client timeouts: the server finished 2 of them later (one 200, one 408).
        let c = compare(
            &metrics(0, 0, 0),
            &metrics(1002, 998, 4),
            client(1000, 997, 3, 3),
        );
        assert!(c.ok);
        assert!(!c.exact);
        // ...but not more than were abandoned.
        let c = compare(
            &metrics(0, 0, 0),
            &metrics(1004, 1001, 3),
            client(1000, 997, 3, 3),
        );
        assert!(!c.ok);
    }

    #[test]
    fn counters_of_several_servers_are_summed() {
        let sum = sum_counters(&[metrics(100, 90, 10), metrics(5, 5, 0), metrics(0, 0, 0)]);
        assert_eq!(
            Value::Object(sum.clone()),
            json!({"total_requests": 105, "success_count": 95, "error_count": 10})
        );
        let c = compare(
            &sum,
            &sum_counters(&[
                metrics(200, 180, 20),
                metrics(15, 15, 0),
                metrics(10, 10, 0),
            ]),
            client(120, 110, 10, 0),
        );
        assert!(c.ok && c.exact, "{c:?}");
        // A counter one server lacks is not summed.
        let mut partial = metrics(1, 1, 0);
        partial.remove("error_count");
        let sum = sum_counters(&[metrics(1, 1, 0), partial]);
        assert_eq!(
            Value::Object(sum),
            json!({"total_requests": 2, "success_count": 2})
        );
        assert!(sum_counters(&[]).values().all(|v| v == 0));
    }

    #[test]
    fn missing_counters_are_not_a_pass() {
        let empty = Map::new();
        let c = compare(&empty, &empty, client(1, 1, 0, 0));
        assert!(!c.ok);
        assert!(c.counters.is_empty());
    }
}
