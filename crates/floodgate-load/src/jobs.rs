//! The jobs scenario: floodgate's durable jobs (API v2). A job is submitted
//! with `POST /api/v2/jobs` and polled with `GET /api/v2/jobs/{id}` until it
//! finishes; a succeeded job's `digest` and `result` are checked against the
//! client's own computation of the workload.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::stats::{Latencies, OTHER_ERROR_CODE};

/// The workload's modulus.
const MODULUS: u64 = 1_000_000;

/// At most this many wrong answers are kept as examples for the report.
pub const MAX_MISMATCH_EXAMPLES: usize = 10;

/// At most this many distinct `error`s of failed jobs are kept; further ones
/// are counted under [`OTHER_ERROR_CODE`].
const MAX_JOB_ERRORS: usize = 16;

/// A failed job's `error` is kept up to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// floodgate's intensive workload (`floodgate::pool::intensive_digest`):
/// `rounds` iterations of `c = (c * 31) mod 1_000_000`, starting from `number`.
///
/// After at least one round that is `number · 31^rounds mod 1_000_000`,
/// computed here by square-and-multiply in O(log rounds) steps, so checking a
/// job costs the client next to nothing however many rounds the server ran.
pub fn digest(number: u64, rounds: u64) -> u64 {
    if rounds == 0 {
        return number;
    }
    let (mut factor, mut base, mut e) = (1u64, 31 % MODULUS, rounds);
    while e > 0 {
        if e & 1 == 1 {
            factor = factor * base % MODULUS;
        }
        base = base * base % MODULUS;
        e >>= 1;
    }
    (number % MODULUS) * factor % MODULUS
}

/// `{"number": n}` or `{"number": n, "rounds": r}`.
pub fn job_body(number: u64, rounds: Option<u64>) -> Bytes {
    let mut body = BytesMut::with_capacity(48);
    body.extend_from_slice(b"{\"number\": ");
    body.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
    if let Some(rounds) = rounds {
        body.extend_from_slice(b", \"rounds\": ");
        body.extend_from_slice(itoa::Buffer::new().format(rounds).as_bytes());
    }
    body.extend_from_slice(b"}");
    body.freeze()
}

/// A job as the API shows it (the fields the client uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: String,
    pub status: String,
    pub number: u64,
    pub rounds: u64,
    #[serde(default)]
    pub result: Option<u64>,
    #[serde(default)]
    pub digest: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `queued` or `running`.
    Pending,
    Succeeded,
    Failed,
    Cancelled,
    /// A status this client does not know.
    Unknown,
}

impl Job {
    /// The job in a response body; `None` unless it is one.
    pub fn parse(body: &[u8]) -> Option<Job> {
        serde_json::from_slice::<Job>(body)
            .ok()
            .filter(|j| !j.id.is_empty())
    }

    pub fn state(&self) -> JobState {
        match self.status.as_str() {
            "queued" | "running" => JobState::Pending,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Unknown,
        }
    }
}

/// A succeeded job whose answer is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    pub id: String,
    /// The number submitted.
    pub number: u64,
    /// The rounds the digest is expected for: those submitted, or the job's
    /// when the server's default was asked for.
    pub rounds: u64,
    /// `number` and `rounds` as the server reported them.
    pub reported_number: u64,
    pub reported_rounds: u64,
    pub digest: Option<u64>,
    pub expected_digest: u64,
    pub result: Option<u64>,
    pub expected_result: u64,
}

/// Checks a succeeded job against what was submitted: `number` and, when
/// given, `rounds` echoed, `digest` the workload's output, `result` the
/// number squared. `None` when everything is right.
pub fn check(job: &Job, number: u64, rounds: Option<u64>) -> Option<Mismatch> {
    let expected_rounds = rounds.unwrap_or(job.rounds);
    let expected_digest = digest(number, expected_rounds);
    let expected_result = number * number;
    let right = job.number == number
        && job.rounds == expected_rounds
        && job.digest == Some(expected_digest)
        && job.result == Some(expected_result);
    (!right).then(|| Mismatch {
        id: job.id.clone(),
        number,
        rounds: expected_rounds,
        reported_number: job.number,
        reported_rounds: job.rounds,
        digest: job.digest,
        expected_digest,
        result: job.result,
        expected_result,
    })
}

/// What became of the jobs of one phase (or one shard of it).
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    /// From the scheduled (open loop) or actual (closed loop) submission to
    /// the 2xx answer, for submitted jobs.
    pub submit_latency: Latencies,
    /// From the same start to the answer of the poll that saw the job
    /// finished (any final status).
    pub completion: Latencies,
    /// Submissions answered with 2xx and a job.
    pub submitted: u64,
    /// Submissions that got no job: another status, or no answer.
    pub submit_failed: u64,
    /// Finished `succeeded`, right or wrong.
    pub succeeded: u64,
    /// Succeeded with a wrong digest or result (a subset of `succeeded`).
    pub mismatched: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// The server stopped knowing the job (404 or another 4xx on a poll).
    pub lost: u64,
    /// Finished jobs the server had taken up more than once (`attempts` > 1).
    pub retried: u64,
    /// Poll requests sent.
    pub polls: u64,
    /// Polls that did not show the job: another status, no answer, or a body
    /// that is not a job.
    pub poll_errors: u64,
    errors: HashMap<String, u64>,
    /// The first wrong answers.
    pub mismatches: Vec<Mismatch>,
}

impl JobStats {
    pub fn record_submitted(&mut self, latency: Duration) {
        self.submitted += 1;
        self.submit_latency.record(latency);
    }

    pub fn record_submit_failed(&mut self) {
        self.submit_failed += 1;
    }

    pub fn record_poll(&mut self, showed_the_job: bool) {
        self.polls += 1;
        if !showed_the_job {
            self.poll_errors += 1;
        }
    }

    pub fn record_lost(&mut self) {
        self.lost += 1;
    }

    /// A job seen in a final status `completion` after it was submitted;
    /// `number` and `rounds` are what was submitted.
    pub fn record_finished(
        &mut self,
        job: &Job,
        number: u64,
        rounds: Option<u64>,
        completion: Duration,
    ) {
        self.completion.record(completion);
        if job.attempts > 1 {
            self.retried += 1;
        }
        match job.state() {
            JobState::Succeeded => {
                self.succeeded += 1;
                if let Some(m) = check(job, number, rounds) {
                    self.mismatched += 1;
                    if self.mismatches.len() < MAX_MISMATCH_EXAMPLES {
                        self.mismatches.push(m);
                    }
                }
            }
            JobState::Cancelled => self.cancelled += 1,
            JobState::Failed | JobState::Pending | JobState::Unknown => {
                self.failed += 1;
                let error = job.error.as_deref().unwrap_or("(none)");
                let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
                self.count_error(&error, 1);
            }
        }
    }

    fn count_error(&mut self, error: &str, n: u64) {
        if let Some(count) = self.errors.get_mut(error) {
            *count += n;
        } else if self.errors.len() < MAX_JOB_ERRORS {
            self.errors.insert(error.to_owned(), n);
        } else {
            *self.errors.entry(OTHER_ERROR_CODE.to_owned()).or_insert(0) += n;
        }
    }

    pub fn merge(&mut self, other: &JobStats) {
        self.submit_latency.merge(&other.submit_latency);
        self.completion.merge(&other.completion);
        self.submitted += other.submitted;
        self.submit_failed += other.submit_failed;
        self.succeeded += other.succeeded;
        self.mismatched += other.mismatched;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.lost += other.lost;
        self.retried += other.retried;
        self.polls += other.polls;
        self.poll_errors += other.poll_errors;
        for (error, n) in &other.errors {
            self.count_error(error, *n);
        }
        let room = MAX_MISMATCH_EXAMPLES.saturating_sub(self.mismatches.len());
        self.mismatches
            .extend(other.mismatches.iter().take(room).cloned());
    }

    /// Jobs seen in a final status.
    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Succeeded with the right answer.
    pub fn verified(&self) -> u64 {
        self.succeeded - self.mismatched
    }

    /// Submitted jobs not seen finished nor lost: still queued or running
    /// when the phase ended.
    pub fn unfinished(&self) -> u64 {
        self.submitted.saturating_sub(self.completed() + self.lost)
    }

    /// Jobs the client is done with: refused, finished or lost.
    pub fn done(&self) -> u64 {
        self.submit_failed + self.completed() + self.lost
    }

    /// `error` of failed jobs → count.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.iter().map(|(e, n)| (e.clone(), *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(number: u64, rounds: u64) -> u64 {
        let mut c = number;
        for _ in 0..rounds {
            c = (c * 31) % MODULUS;
        }
        c
    }

    #[test]
    fn documented_digest() {
        assert_eq!(digest(42, 10_000), 600_042);
    }

    #[test]
    fn digest_is_the_iterated_kernel() {
        for number in [0, 1, 7, 42, 31, 999_999, 1_000_000] {
            for rounds in [0, 1, 2, 3, 10, 1000, 1234, 10_000, 65_537] {
                assert_eq!(
                    digest(number, rounds),
                    naive(number, rounds),
                    "{number}, {rounds}"
                );
                assert_eq!(
                    digest(number, rounds),
                    floodgate::pool::intensive_digest(number, rounds as u32),
                    "{number}, {rounds}"
                );
            }
        }
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let (number, rounds) = (rng.u64(0..=MODULUS), rng.u64(0..5_000));
            assert_eq!(digest(number, rounds), naive(number, rounds));
        }
        // The server's largest default: no overflow.
        assert_eq!(
            digest(1_000_000 - 1, 100_000_000),
            floodgate::pool::intensive_digest(1_000_000 - 1, 100_000_000)
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(&job_body(42, None)[..], b"{\"number\": 42}");
        assert_eq!(
            &job_body(0, Some(1000))[..],
            b"{\"number\": 0, \"rounds\": 1000}"
        );
    }

    fn job(status: &str, number: u64, rounds: u64) -> Job {
        Job {
            id: "0193".into(),
            status: status.into(),
            number,
            rounds,
            result: Some(number * number),
            digest: Some(digest(number, rounds)),
            error: None,
            attempts: 1,
        }
    }

    #[test]
    fn parses_the_api_job() {
        let body = br#"{"id":"01936f2e-0000-7000-8000-000000000000","status":"succeeded","number":42,"rounds":10000,"result":1764,"digest":600042,"attempts":1,"created_at":"2026-01-01T00:00:00.000000Z","started_at":"2026-01-01T00:00:00.000000Z","finished_at":"2026-01-01T00:00:00.000000Z"}"#;
        let j = Job::parse(body).unwrap();
        assert_eq!(j.state(), JobState::Succeeded);
        assert_eq!(check(&j, 42, None), None);
        assert_eq!(check(&j, 42, Some(10_000)), None);
        let queued =
            br#"{"id":"x","status":"queued","number":1,"rounds":5,"attempts":0,"created_at":"t"}"#;
        let q = Job::parse(queued).unwrap();
        assert_eq!(q.state(), JobState::Pending);
        assert_eq!(q.digest, None);
        assert!(Job::parse(b"{\"error\": \"no\"}").is_none());
        assert!(Job::parse(b"<html>").is_none());
        assert_eq!(job("paused", 1, 1).state(), JobState::Unknown);
    }

    #[test]
    fn wrong_answers_are_mismatches() {
        assert_eq!(check(&job("succeeded", 5, 100), 5, Some(100)), None);
        let mut j = job("succeeded", 5, 100);
        j.digest = Some(j.digest.unwrap() + 1);
        let m = check(&j, 5, None).unwrap();
        assert_eq!(
            (m.expected_digest, m.digest),
            (digest(5, 100), Some(digest(5, 100) + 1))
        );
        let mut j = job("succeeded", 5, 100);
        j.result = Some(26);
        assert_eq!(check(&j, 5, None).unwrap().expected_result, 25);
        let mut j = job("succeeded", 5, 100);
        j.digest = None;
        assert!(check(&j, 5, None).is_some());
        // Another number or other rounds than submitted.
        assert!(check(&job("succeeded", 6, 100), 5, None).is_some());
        let m = check(&job("succeeded", 5, 99), 5, Some(100)).unwrap();
        assert_eq!((m.rounds, m.reported_rounds), (100, 99));
    }

    #[test]
    fn counts_fates_and_merges() {
        let mut a = JobStats::default();
        let ms = Duration::from_millis;
        for _ in 0..3 {
            a.record_submitted(ms(1));
        }
        a.record_submit_failed();
        a.record_finished(&job("succeeded", 5, 100), 5, None, ms(10));
        let mut wrong = job("succeeded", 5, 100);
        wrong.digest = Some(0);
        wrong.attempts = 2;
        a.record_finished(&wrong, 5, None, ms(20));
        a.record_poll(true);
        a.record_poll(false);
        let mut b = JobStats::default();
        b.record_submitted(ms(2));
        b.record_submitted(ms(2));
        let mut failed = job("failed", 1, 1);
        failed.error = Some("worker died".into());
        b.record_finished(&failed, 1, None, ms(5));
        b.record_lost();
        a.merge(&b);
        assert_eq!(a.submitted, 5);
        assert_eq!(a.submit_failed, 1);
        assert_eq!((a.succeeded, a.mismatched, a.verified()), (2, 1, 1));
        assert_eq!((a.failed, a.cancelled, a.lost, a.retried), (1, 0, 1, 1));
        assert_eq!(a.completed(), 3);
        assert_eq!(a.unfinished(), 1);
        assert_eq!(a.done(), 5);
        assert_eq!((a.polls, a.poll_errors), (2, 1));
        assert_eq!(a.errors()["worker died"], 1);
        assert_eq!(a.mismatches.len(), 1);
        assert_eq!(a.submit_latency.count(), 5);
        assert_eq!(a.completion.count(), 3);
    }

    #[test]
    fn examples_and_errors_are_bounded() {
        let mut s = JobStats::default();
        let mut wrong = job("succeeded", 5, 100);
        wrong.digest = Some(0);
        for i in 0..(MAX_JOB_ERRORS + 5) {
            s.record_finished(&wrong, 5, None, Duration::from_millis(1));
            let mut failed = job("failed", 1, 1);
            failed.error = Some(format!("error {i}"));
            s.record_finished(&failed, 1, None, Duration::from_millis(1));
        }
        let mut other = s.clone();
        other.merge(&s);
        assert_eq!(other.mismatches.len(), MAX_MISMATCH_EXAMPLES);
        assert_eq!(other.mismatched, 2 * (MAX_JOB_ERRORS as u64 + 5));
        let errors = other.errors();
        assert_eq!(errors.len(), MAX_JOB_ERRORS + 1);
        assert_eq!(
            errors.values().sum::<u64>(),
            2 * (MAX_JOB_ERRORS as u64 + 5)
        );
    }
}
