//! The one `drover` binary.

fn main() {
    std::process::exit(drover_cli::main(std::env::args_os()));
}
