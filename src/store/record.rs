//! The job record, as the store keeps it.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for a runner.
    Queued,
    /// Not to run before its `run_at`: submitted for later, or waiting out the backoff
    /// before its next attempt.
    Scheduled,
    Running,
    Succeeded,
    /// Ended by an error that another attempt would not mend.
    Failed,
    Cancelled,
    /// Gave up after `jobs.max_attempts` attempts; each attempt's error is kept.
    Discarded,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Discarded,
    ];

    /// The states of a job not yet ended: what the runners and the gauges look at.
    pub const ACTIVE: [JobStatus; 3] =
        [JobStatus::Queued, JobStatus::Scheduled, JobStatus::Running];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Discarded => "discarded",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        !JobStatus::ACTIVE.contains(&self)
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a job status; use queued, scheduled, running, succeeded, failed, cancelled or discarded")
            })
    }
}

/// A job as stored; times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub status: JobStatus,
    pub number: u64,
    pub rounds: u64,
    pub result: Option<u64>,
    pub digest: Option<u64>,
    pub error: Option<String>,
    pub attempts: u32,
    pub created_at: i64,
    /// Not run before this: its creation, a time asked for, or the end of a retry's backoff.
    pub run_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One attempt at a job: who ran it when, and why it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_back() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
