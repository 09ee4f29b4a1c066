//! The `drover` command line: argument parsing and dispatch.

mod check;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "A workload manager for HPC clusters: Slurm's model, one binary.",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster (controller, agents, healer) — not yet available.
    Up,
    /// Resolve a batch script and options the way submission will, and print
    /// the job it describes, without submitting anything.
    Check(check::CheckArgs),
    /// Expand or compress hostlist expressions (node[01-04,7] <-> names).
    Hostlist {
        #[command(subcommand)]
        action: HostlistAction,
    },
}

#[derive(Subcommand)]
enum HostlistAction {
    /// Print each host of an expression on its own line.
    Expand { expr: String },
    /// Print the shortest expression for the given host names.
    Compress { hosts: Vec<String> },
}

/// Runs the command line and returns the process exit code.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let result = match cli.command {
        Command::Up => Err("'drover up' is not available yet: the controller and agent daemons land with \
                            issue #3. Today you can check batch scripts with 'drover check SCRIPT'."
            .to_string()),
        Command::Check(args) => check::run(args),
        Command::Hostlist { action: HostlistAction::Expand { expr } } => drover_core::hostlist::expand(&expr)
            .map(|hosts| {
                for h in hosts {
                    println!("{h}");
                }
            })
            .map_err(|e| format!("invalid hostlist '{expr}': {e}")),
        Command::Hostlist { action: HostlistAction::Compress { hosts } } => {
            println!("{}", drover_core::hostlist::compress(&hosts));
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("drover: error: {msg}");
            1
        }
    }
}
