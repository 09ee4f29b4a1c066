//! `sbatch`: `drover submit` under Slurm's name, messages and exit codes.

use crate::client::Client;

pub async fn run(client: &Client, args: Vec<String>) -> Result<i32, String> {
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("{}", super::VERSION);
            return Ok(0);
        }
        Some("--help" | "--usage") => {
            println!("Usage: sbatch [OPTIONS(0)...] [ : [OPTIONS(N)...]] script(0) [args(0)...]");
            println!("Options are sbatch's; see 'drover check --help' for what Drover resolves offline.");
            return Ok(0);
        }
        _ => {}
    }
    crate::jobs::submit(client, crate::jobs::SubmitArgs::sbatch(args)).await
}
