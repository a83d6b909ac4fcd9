use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let opts = floodgate_load::Opts::parse();
    floodgate_load::execute(opts).into()
}
