//! Steal time: CPU time a virtual machine wanted while its host ran something
//! else (Linux's `/proc/stat`, read through `procfs`). The host's other
//! tenants pause the server and the client alike, for milliseconds at a time,
//! and a sweep step over its limits during such a spell measured the host, not
//! the server: a sweep runs such a step again.

use std::time::Duration;

use tokio::sync::watch;

/// The machine's CPU time since boot, all its CPUs together, in the kernel's
/// ticks: stolen, and in all (stolen included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub stolen: u64,
    pub total: u64,
}

impl CpuTimes {
    /// The times now; `None` where the kernel reports no steal time (not
    /// Linux, no `/proc`, a kernel before 2.6.11).
    pub fn now() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            use procfs::CurrentSI;
            let t = procfs::KernelStats::current().ok()?.total;
            let stolen = t.steal?;
            let total = [t.user, t.nice, t.system, t.idle, stolen]
                .into_iter()
                .chain([t.iowait, t.irq, t.softirq].into_iter().flatten())
                .fold(0u64, u64::saturating_add);
            Some(CpuTimes { stolen, total })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// The percentage of the CPU time from `earlier` to `self` that was
    /// stolen; `None` when no tick passed between them (the kernel's iowait
    /// may go backwards, so the total is not trusted to grow).
    pub fn stolen_pct_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|t| *t > 0)?;
        let stolen = self.stolen.saturating_sub(earlier.stolen).min(total);
        Some(stolen as f64 * 100.0 / total as f64)
    }
}

/// Waits for a second in which at most `max_pct` of the CPU time was stolen,
/// as `read` gives the times, `longest` at most (then it goes on regardless:
/// a host busy for good must not stall a sweep for good); false when
/// `interrupt` turned true first. Where `read` gives nothing, a second is calm.
pub async fn wait_for_calm(
    mut read: impl FnMut() -> Option<CpuTimes>,
    max_pct: f64,
    longest: Duration,
    interrupt: &mut watch::Receiver<bool>,
) -> bool {
    const WINDOW: Duration = Duration::from_secs(1);
    let waited = tokio::time::Instant::now();
    let mut last = read();
    loop {
        tokio::select! {
            changed = interrupt.wait_for(|stop| *stop) => {
                if changed.is_ok() {
                    return false;
                }
                // No one can interrupt any more: wait on the clock alone.
                tokio::time::sleep(WINDOW).await;
            }
            () = tokio::time::sleep(WINDOW) => {}
        }
        let now = read();
        let stolen = last.zip(now).and_then(|(a, b)| b.stolen_pct_since(&a));
        if stolen.is_none_or(|s| s <= max_pct) || waited.elapsed() >= longest {
            return true;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings `share` percent stolen per 100 ticks, for `busy` readings, then none.
    fn host(busy: usize, share: u64) -> impl FnMut() -> Option<CpuTimes> {
        let mut n = 0u64;
        let mut times = CpuTimes {
            stolen: 0,
            total: 0,
        };
        move || {
            if n as usize <= busy {
                times.stolen += share;
            }
            times.total += 100;
            n += 1;
            Some(times)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_with_the_first_calm_second() {
        let (_tx, mut rx) = watch::channel(false);
        let started = tokio::time::Instant::now();
        // Readings 1 to 3 come at the ends of seconds 1 to 3, busy; reading 4 is calm.
        assert!(wait_for_calm(host(3, 10), 2.0, Duration::from_secs(30), &mut rx).await);
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        // Exactly at the limit is calm.
        let started = tokio::time::Instant::now();
        assert!(wait_for_calm(host(usize::MAX, 2), 2.0, Duration::from_secs(30), &mut rx).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // Where there is nothing to read, the first second ends it.
        let started = tokio::time::Instant::now();
        assert!(wait_for_calm(|| None, 2.0, Duration::from_secs(30), &mut rx).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_busy_for_good_holds_the_wait_for_its_longest_only() {
        let (tx, mut rx) = watch::channel(false);
        let started = tokio::time::Instant::now();
        assert!(wait_for_calm(host(usize::MAX, 10), 2.0, Duration::from_secs(30), &mut rx).await);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Nor does a sender gone (no Ctrl-C any more) make it spin.
        drop(tx);
        let started = tokio::time::Instant::now();
        assert!(wait_for_calm(host(usize::MAX, 10), 2.0, Duration::from_secs(5), &mut rx).await);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_ends_the_wait_at_once() {
        let (tx, mut rx) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let wait = wait_for_calm(host(usize::MAX, 10), 2.0, Duration::from_secs(30), &mut rx);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            tx.send(true).unwrap();
        };
        let (calm, ()) = tokio::join!(wait, stop);
        assert!(!calm);
        assert_eq!(started.elapsed(), Duration::from_millis(2_500));
    }

    #[test]
    fn the_share_stolen_is_of_the_time_between_two_readings() {
        let a = CpuTimes {
            stolen: 100,
            total: 10_000,
        };
        let b = CpuTimes {
            stolen: 130,
            total: 10_600,
        };
        assert_eq!(b.stolen_pct_since(&a), Some(5.0));
        assert_eq!(a.stolen_pct_since(&a), None, "no tick passed");
        assert_eq!(a.stolen_pct_since(&b), None, "the total went backwards");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_its_steal_time() {
        let a = CpuTimes::now().expect("/proc/stat has a steal column");
        assert!(a.stolen <= a.total && a.total > 0, "{a:?}");
    }
}
