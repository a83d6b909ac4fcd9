//! A real PostgreSQL server for tests (Debian's `postgresql` package, installed by
//! scripts/install-test-tools.sh): a cluster of its own in a temporary directory, on a free
//! loopback port, with trust authentication on 127.0.0.1 only. PostgreSQL refuses to run as
//! root, so when the tests run as root the cluster belongs to the `postgres` system user the
//! package creates, and every server command runs as that user.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL cluster, started; stopped at once and removed when dropped.
pub struct PostgresServer {
    pub port: u16,
    /// The server binaries (`/usr/lib/postgresql/<version>/bin`).
    bin: PathBuf,
    /// Holds the data directory, the socket and the log; owned by the server's user.
    root: PathBuf,
    /// The postmaster's process id while it runs.
    pid: Option<u32>,
    /// Whether the server's programs must run as the `postgres` user.
    as_postgres: bool,
}

/// The newest installed version's server binaries.
fn server_bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, p)| p.join("bin/initdb").is_file());
    versions
        .max_by_key(|(v, _)| *v)
        .map(|(_, p)| p.join("bin"))
        .expect("PostgreSQL's server binaries in /usr/lib/postgresql/<version>/bin (install them with scripts/install-test-tools.sh)")
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("`id` runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `id -u postgres` or `id -g postgres`.
fn postgres_id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("`id` runs");
    assert!(
        out.status.success(),
        "no `postgres` user: install PostgreSQL with scripts/install-test-tools.sh"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl PostgresServer {
    /// Create a cluster in a new temporary directory and start it.
    pub fn start() -> PostgresServer {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("floodgate-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let as_postgres = running_as_root();
        if as_postgres {
            std::os::unix::fs::chown(&root, Some(postgres_id("-u")), Some(postgres_id("-g")))
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = PostgresServer {
            port,
            bin: server_bin_dir(),
            root,
            pid: None,
            as_postgres,
        };
        let data = server.data_dir();
        let out = server.run(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("--no-sync"),
                OsStr::new("--locale=C"),
                OsStr::new("--encoding=UTF8"),
            ],
        );
        assert!(out.status.success(), "{}", describe("initdb", &out));
        // Loopback TCP only (no Unix socket), trusted; durability traded for speed: the data
        // is thrown away anyway. pg_stat_statements counts what clients ask.
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n\
             shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n"
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        server.start_again();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Run one of the server's programs as the cluster's owner.
    fn run<A: AsRef<OsStr>>(&self, program: &str, args: impl IntoIterator<Item = A>) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"))
    }

    /// Start the server on its data directory and port (after [`stop`](Self::stop)), and wait
    /// until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.pid.is_none(), "already running");
        let data = self.data_dir();
        let log = self.root.join("postgres.log");
        let out = self.run(
            "pg_ctl",
            [
                OsStr::new("start"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
            ],
        );
        assert!(
            out.status.success(),
            "{}\nlog:\n{}",
            describe("pg_ctl start", &out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // The postmaster's id: the first line of postmaster.pid.
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        self.pid = Some(pid);
        self.wait_until_ready();
    }

    /// Wait (30 s at most) until the server answers `pg_isready` on its TCP port.
    fn wait_until_ready(&self) {
        let started = Instant::now();
        let port = self.port.to_string();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-t", "5"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not accept connections"
            );
            std::thread::yield_now();
        }
    }

    /// `pg_ctl stop -m fast`: disconnect every client, stop cleanly, and wait for it.
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, like a crash.
    pub fn stop_immediately(&mut self) {
        self.stop_with("immediate");
    }

    fn stop_with(&mut self, mode: &str) {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
            ],
        );
        assert!(out.status.success(), "{}", describe("pg_ctl stop", &out));
        self.pid = None;
    }

    /// Signal every server process: the postmaster first, then its children (each backend
    /// is a session of its own, so the postmaster's group is not enough). `-STOP` hangs the
    /// server with its connections open (a stopped postmaster forks no new backend meanwhile);
    /// `-CONT` lets it go on.
    pub fn signal_all(&self, signal: &str) {
        assert!(self.try_signal_all(signal), "kill {signal} failed");
    }

    fn try_signal_all(&self, signal: &str) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        let send = |pids: &[u32]| {
            Command::new("kill")
                .arg(signal)
                .arg("--")
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !send(&[pid]) {
            return false;
        }
        let children = children(pid);
        if !children.is_empty() {
            // A child may have exited since the listing: that is no failure.
            let _ = send(&children);
        }
        true
    }
}

/// The processes whose parent is `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.pid.is_some() {
            // A stopped process ignores everything but SIGKILL until it is continued.
            self.try_signal_all("-CONT");
            let data = self.data_dir();
            let args = [OsStr::new("stop"), OsStr::new("-D"), data.as_os_str()];
            let args = args
                .into_iter()
                .chain(["-m", "immediate", "-w"].map(OsStr::new));
            if !self.run("pg_ctl", args).status.success() {
                self.try_signal_all("-KILL");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
