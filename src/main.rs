//! The one `drover` binary: the command line of `drover-cli`, composed here
//! with the daemons it starts (the controller, the agent and its watchdog,
//! and the local cluster of `drover up`), which the client crate does not
//! contain.

mod daemons;
mod local_cluster;
mod up_settings;

use drover_cli::cluster::{AgentArgs, ControllerArgs, DownArgs, UpArgs, WatchdogArgs};
use drover_cli::{client::Client, logging::Log, Running};

struct Daemons;

impl drover_cli::Daemons for Daemons {
    fn controller<'a>(&'a self, args: ControllerArgs, client: &'a Client, log: Log) -> Running<'a> {
        Box::pin(daemons::controller(args, client, log))
    }

    fn agent(&self, args: AgentArgs, log: Log) -> Running<'_> {
        Box::pin(daemons::agent(args, log))
    }

    fn watchdog(&self, args: WatchdogArgs) -> Result<(), String> {
        daemons::watchdog(args)
    }

    fn up(&self, args: UpArgs) -> Running<'_> {
        Box::pin(local_cluster::up(args))
    }

    fn down(&self, args: DownArgs) -> Running<'_> {
        Box::pin(local_cluster::down(args))
    }
}

fn main() {
    std::process::exit(drover_cli::main(std::env::args_os(), &Daemons));
}
