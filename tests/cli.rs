//! The `drover` binary as a user runs it.

use std::process::{Command, Output};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover")).args(args).env_remove("SBATCH_TIMELIMIT").output().expect("runs drover")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example(name: &str) -> String {
    format!("{}/examples/jobs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Issue #20 item 12: the help named four links where eight are made.
#[test]
fn install_links_help_names_every_link_it_makes() {
    let o = drover(&["install-links", "--help"]);
    let help = stdout(&o);
    for name in ["sbatch", "squeue", "sinfo", "scancel", "scontrol", "sacct", "srun", "salloc"] {
        assert!(help.contains(name), "{name} missing from: {help}");
    }
}

#[test]
fn help_lists_the_commands() {
    let o = drover(&["--help"]);
    assert!(o.status.success());
    for cmd in [
        "up",
        "down",
        "controller",
        "agent",
        "submit",
        "queue",
        "nodes",
        "show",
        "cancel",
        "wait",
        "logs",
        "health",
        "check",
        "hostlist",
    ] {
        assert!(stdout(&o).contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn check_resolves_directives_and_command_line() {
    let o = drover(&["check", &example("hello.sh")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("JobName=hello\n"));
    assert!(out.contains("TimeLimit=1:00\n"));
    assert!(out.contains("StdOut=hello-%j.out\n"));
    // The command line wins over directives.
    let o = drover(&["check", "-J", "renamed", "-t", "2:00:00", &example("hello.sh")]);
    assert!(stdout(&o).contains("JobName=renamed\n"));
    assert!(stdout(&o).contains("TimeLimit=2:00:00\n"));
    let o = drover(&["check", &example("array.sh")]);
    assert!(stdout(&o).contains("ArrayTasks=0-99%10 (100 tasks)\n"));
}

#[test]
fn input_variables_sit_between_directives_and_command_line() {
    let run = |extra: &[&str]| {
        let mut args = vec!["check"];
        args.extend_from_slice(extra);
        args.push("--wrap=true");
        let o = Command::new(env!("CARGO_BIN_EXE_drover")).args(&args).env("SBATCH_TIMELIMIT", "7").output().unwrap();
        stdout(&o)
    };
    assert!(run(&[]).contains("TimeLimit=7:00\n"));
    assert!(run(&["-t", "3"]).contains("TimeLimit=3:00\n"));
}

#[test]
fn bad_scripts_name_the_line_and_the_value() {
    let dir = std::env::temp_dir().join(format!("drover-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("bad.sh");
    std::fs::write(&script, "#!/bin/sh\n#SBATCH -N 2\n#SBATCH --mem=lots\necho hi\n").unwrap();
    let o = drover(&["check", script.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("script line 3: invalid --mem 'lots'"), "{}", stderr(&o));
    std::fs::write(&script, "echo no shebang\n").unwrap();
    let o = drover(&["check", script.to_str().unwrap()]);
    assert!(stderr(&o).contains("first line must start with #!"));
    std::fs::remove_dir_all(&dir).unwrap();
    let o = drover(&["check", "/nonexistent/job.sh"]);
    assert!(stderr(&o).contains("cannot read batch script /nonexistent/job.sh"));
    let o = drover(&["check"]);
    assert!(stderr(&o).contains("no batch script given"));
}

#[test]
fn hostlists_both_ways() {
    let o = drover(&["hostlist", "expand", "node[01-03],gpu1"]);
    assert_eq!(stdout(&o), "node01\nnode02\nnode03\ngpu1\n");
    let o = drover(&["hostlist", "compress", "node1", "node2", "node3", "gpu1"]);
    assert_eq!(stdout(&o), "gpu1,node[1-3]\n");
    let o = drover(&["hostlist", "expand", "node[1-"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("never closed"));
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    // `drover … | head -1`: the reader goes after one line, as head does.
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["hostlist", "expand", "n[1-500000]"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs drover");
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"n1\n");
    drop(out);
    let o = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    // The status a shell shows for a command SIGPIPE ended, and no panic.
    assert_eq!(o.status.code(), Some(141), "{:?}", o.status.signal());
    assert_eq!(stderr(&o), "");
}
