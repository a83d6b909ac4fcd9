//! Steal time: CPU time a virtual machine wanted while its host ran something
//! else (Linux's `/proc/stat`, read through `procfs`). The host's other
//! tenants pause the server and the client alike, for milliseconds at a time,
//! and a sweep step over its limits during such a spell measured the host, not
//! the server: a sweep runs such a step again.

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

#[cfg(test)]
mod tests {
    use super::*;

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
