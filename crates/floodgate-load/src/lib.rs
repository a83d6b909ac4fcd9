//! floodgate-load: a load-testing client for floodgate.
//!
//! [`run()`] executes the scenarios a [`RunOptions`] describes and returns a
//! [`RunReport`]; [`execute`] wraps it for the command line (the options from
//! the flags, [`Opts`], then runtime, Ctrl-C, progress, report output and
//! exit status).

pub mod chart;
pub mod cli;
pub mod client;
pub mod h1;
pub mod html;
pub mod jobs;
pub mod net;
pub mod options;
pub mod output;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod schedule;
pub mod server;
pub mod stages;
pub mod stats;
pub mod steal;
pub mod sweep;
pub mod thresholds;
pub mod timeline;
pub mod tls;

pub use cli::{execute, Opts};
pub use options::RunOptions;
pub use report::RunReport;
pub use scenarios::{run, Error};
