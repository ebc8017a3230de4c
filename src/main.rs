//! The `courier` command: servers (`serve`, `executor`, `web`, `migrate`)
//! and HTTP client commands (`submit`, `tasks`, `show`, `event`, `cancel`,
//! `queues`, `queue`, `schedules`, `schedule`, `unschedule`) and
//! `completions`.
//! Argument parsing only; the work is in `cli::server` and `cli::client`.

mod cli;

use clap::Parser;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The config file's options become `COURIER_*` defaults before clap
    // reads the command line and the environment (see `cli::config`).
    if let Err(e) = cli::config::apply(&argv) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let args = cli::Cli::parse_from(argv);
    if let Err(e) = cli::init_logging(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let sys = actix::System::new();
    let code = match sys.block_on(cli::run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    cli::logging::flush();
    // Everything that needed a clean stop has had it inside `run`; leave
    // without tearing the actor system down around actors still parked.
    std::process::exit(code);
}
