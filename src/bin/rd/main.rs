//! `rd`: command-line front end of recurrent-depth.

mod args;
mod commands;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let level = match cli.log_level.as_str() {
        "error" => recurrent_depth::LogLevel::Error,
        "warn" => recurrent_depth::LogLevel::Warn,
        "info" => recurrent_depth::LogLevel::Info,
        "debug" => recurrent_depth::LogLevel::Debug,
        other => {
            eprintln!("rd: error: bad --log-level {other:?} (error, warn, info, debug)");
            std::process::exit(1);
        }
    };
    recurrent_depth::set_log_handler(level, None);
    if let Err(e) = commands::dispatch(cli) {
        eprintln!("rd: error: {e}");
        std::process::exit(1);
    }
}
