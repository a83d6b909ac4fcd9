use clap::Parser;

fn main() {
    let opts = floodgate_load::Opts::parse();
    std::process::exit(floodgate_load::execute(opts));
}
