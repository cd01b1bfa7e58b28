//! `rd`: command-line front end of recurrent-depth.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let level = cli.log_level.into();
    recurrent_depth::set_log_handler(level, None);
    if let Err(e) = commands::dispatch(cli) {
        eprintln!("rd: error: {e}");
        std::process::exit(1);
    }
}
