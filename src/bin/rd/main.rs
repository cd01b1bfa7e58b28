//! `rd`: command-line front end of recurrent-depth.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    if let Err(e) = commands::dispatch(cli) {
        eprintln!("rd: error: {e}");
        std::process::exit(1);
    }
}
